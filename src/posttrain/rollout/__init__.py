"""Rollout backends: sample n completions per prompt with the log-probs of the sampled tokens.

    backend = make_backend("hf", model, tokenizer, batch_size=64)
    rollouts = backend.generate(prompts, n=8, params=SamplingParams(max_new_tokens=256, seed=step))
    ...optimiser step...
    backend.sync_weights(model)
"""
from __future__ import annotations

from .base import RolloutBackend, RolloutBackendUnavailable, Rollouts, SamplingParams


def _make_hf(model, tokenizer, **kw) -> RolloutBackend:
    from .hf import HFBackend

    return HFBackend(model, tokenizer, **kw)


def _make_vllm(model, tokenizer, **kw) -> RolloutBackend:
    from .vllm import VLLMBackend

    return VLLMBackend(model, tokenizer, **kw)


BACKENDS = {"hf": _make_hf, "vllm": _make_vllm}


def make_backend(name: str, model, tokenizer, **kw) -> RolloutBackend:
    """The backend called `name` ("hf" or "vllm"); `kw` go to its constructor.

    Raises `RolloutBackendUnavailable` when the backend cannot run here (e.g. vllm without the extra or a GPU).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown rollout backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](model, tokenizer, **kw)


__all__ = ["BACKENDS", "RolloutBackend", "RolloutBackendUnavailable", "Rollouts", "SamplingParams", "make_backend"]
