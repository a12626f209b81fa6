"""Rollout backends: sample n completions per prompt with the log-probs of the sampled tokens.

    backend = make_backend("hf", model, tokenizer, RolloutOptions(batch_size=64, max_model_len=512))
    rollouts = backend.generate(prompts, n=8, params=SamplingParams(max_new_tokens=256, seed=step))
    ...optimiser step...
    backend.sync_weights(model)

Every backend is built from the same `RolloutOptions`; each reads the options it has a use for.
"""
from __future__ import annotations

from .base import RolloutBackend, RolloutBackendUnavailable, RolloutOptions, Rollouts, SamplingParams


def _make_hf(model, tokenizer, options: RolloutOptions) -> RolloutBackend:
    from .hf import HFBackend

    return HFBackend(model, tokenizer, batch_size=options.batch_size)


def _make_vllm(model, tokenizer, options: RolloutOptions) -> RolloutBackend:
    from .vllm import VLLMBackend

    return VLLMBackend(model, tokenizer, max_model_len=options.max_model_len,
                       gpu_memory_utilization=options.gpu_memory_utilization)


BACKENDS = {"hf": _make_hf, "vllm": _make_vllm}


def make_backend(name: str, model, tokenizer, options: RolloutOptions | None = None) -> RolloutBackend:
    """The backend called `name` ("hf" or "vllm") built from `options` (defaults when None).

    Raises `RolloutBackendUnavailable` when the backend cannot run here (e.g. vllm without the extra or a GPU).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown rollout backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](model, tokenizer, options or RolloutOptions())


__all__ = ["BACKENDS", "RolloutBackend", "RolloutBackendUnavailable", "RolloutOptions", "Rollouts", "SamplingParams",
           "make_backend"]
