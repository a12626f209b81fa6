"""Rollouts with vLLM, colocated with the trainer in this process (optional extra, CUDA GPU only).

    pip install 'posttrain[vllm]'          # vLLM >= 0.10.2 (for logprobs_mode)

Without the package, or without a CUDA GPU, building this backend raises `RolloutBackendUnavailable`
with the reason; use the `hf` backend instead.

Weights: vLLM loads its own copy of the model from `model_path` (default: the path the policy was
loaded from), and `sync_weights(policy)` streams the policy's current tensors into the engine's model
through `model.load_weights(...)` (the model vLLM builds for the architecture renames and fuses HF
tensors itself, e.g. q/k/v into qkv_proj), then resets vLLM's prefix cache, whose keys/values were
computed with the old weights. A PEFT policy is sent merged (base + adapter). For that the
engine must run in this process: `VLLM_ENABLE_V1_MULTIPROCESSING=0` is set (unless already set)
before vLLM is imported. Tensor parallelism > 1 is not supported by this path.

Log-probs: vLLM is asked for the sampled token's log-prob (`logprobs=0`) with
`logprobs_mode="processed_logprobs"`, i.e. after temperature. With top-k / top-p active, vLLM's
processed log-probs are those of the *filtered, renormalised* distribution, unlike the HF backend's
unfiltered ones (see `base.py`); recompute `old_logps` with a forward pass if you need the two to agree.
vLLM's kernels (and bf16 weights) also make its log-probs differ from the trainer's by ~1e-2.
"""
from __future__ import annotations

import os
from .base import Rollouts, RolloutBackendUnavailable, SamplingParams, check_prompts, check_seeds, cut_at_stop
from .hf import eos_token_ids, unwrap

INSTALL_HINT = "pip install 'posttrain[vllm]'"
MIN_VERSION = "0.10.2"


def import_vllm():
    """The `vllm` module, or `RolloutBackendUnavailable` saying why it cannot be used here."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as e:
        raise RolloutBackendUnavailable(
            f"rollout backend 'vllm' needs the vllm package, which is not installed ({INSTALL_HINT}), "
            f"or use backend 'hf'. Import error: {e}") from e
    import torch

    if not torch.cuda.is_available():
        raise RolloutBackendUnavailable("rollout backend 'vllm' needs a CUDA GPU and torch sees none "
                                        "(torch.cuda.is_available() is False); use backend 'hf'")
    version = getattr(vllm, "__version__", "0")
    from packaging.version import Version

    if Version(version) < Version(MIN_VERSION):
        raise RolloutBackendUnavailable(f"rollout backend 'vllm' needs vllm >= {MIN_VERSION}, found {version}")
    return vllm


def _model_path(model) -> str:
    base = unwrap(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    path = getattr(base.config, "_name_or_path", "") or getattr(base, "name_or_path", "")
    if not path:
        raise ValueError("VLLMBackend: cannot tell which folder the policy was loaded from; pass model_path=")
    return path


def _with_adapters(layer, leaf: str, tensor):
    """`tensor` (a LoRA layer's base `weight` or `bias`) with the active adapters added, out of place.

    PEFT's own `merge_adapter()` / `unmerge_adapter()` add and then subtract the update in place, which in
    bf16 does not give the base weights back exactly: they would drift a little at every sync.
    """
    if layer.disable_adapters or layer.merged:  # nothing to add, or the base already holds it
        return tensor
    out = tensor.detach().clone()
    for name in layer.active_adapters:
        if name not in layer.lora_A and name not in getattr(layer, "lora_embedding_A", {}):
            continue
        variant = getattr(layer, "lora_variant", {}).get(name)
        if leaf == "weight":
            out = variant.merge_safe(layer, name, out) if variant is not None else \
                out + layer.get_delta_weight(name).to(out.dtype)
        elif leaf == "bias" and getattr(layer, "lora_bias", {}).get(name):
            out = out + (layer.lora_B[name].bias * layer.scaling[name]).to(out.dtype)
    return out


def vllm_named_weights(model):
    """(name, tensor) of `model`'s weights under the plain HF names vLLM's `load_weights` expects.

    A PEFT model is sent merged (its adapters added to the base weights, computed per tensor without
    touching the model) under the base model's names; the adapter tensors themselves and the originals
    of `modules_to_save` are skipped. Wrapper prefixes (activation checkpointing) are stripped.
    """
    model = unwrap(model)
    peft_prefix = getattr(model, "prefix", None) if hasattr(model, "peft_config") else None
    layers = {} if peft_prefix is None else {n: m for n, m in model.named_modules()
                                             if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    for name, tensor in model.state_dict().items():
        if peft_prefix is not None:
            if peft_prefix in name or "original_module" in name:
                continue
            owner, _, leaf = name.rpartition(".base_layer.")
            if owner in layers:
                tensor = _with_adapters(layers[owner], leaf, tensor)
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            name = name.replace("modules_to_save.default.", "")
        yield name.replace("_checkpoint_wrapped_module.", ""), tensor.detach()


def _engine_model(llm):
    """The torch module inside vLLM's in-process worker."""
    executor = llm.llm_engine.model_executor
    worker = executor.driver_worker
    for candidate in (worker, getattr(worker, "worker", None)):
        runner = getattr(candidate, "model_runner", None)
        if runner is not None and hasattr(runner, "model"):
            return runner.model
    raise RolloutBackendUnavailable(
        "VLLMBackend.sync_weights cannot reach vLLM's model in this process: create the backend with "
        "VLLM_ENABLE_V1_MULTIPROCESSING=0 and tensor_parallel_size=1")


class VLLMBackend:
    """`RolloutBackend` on a colocated `vllm.LLM`. Extra keyword arguments go to `vllm.LLM`.

    gpu_memory_utilization: share of the GPU vLLM may take (weights + KV cache); the trainer needs the rest.
    """

    def __init__(self, model, tokenizer, *, model_path: str | None = None, gpu_memory_utilization: float = 0.3,
                 max_model_len: int | None = None, dtype: str = "auto", enable_prefix_caching: bool = True,
                 seed: int = 0, **llm_kwargs):
        self._vllm = import_vllm()
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(unwrap(model), tokenizer)
        path = model_path or _model_path(model)
        self.llm = self._vllm.LLM(
            model=path, tokenizer=getattr(tokenizer, "name_or_path", None) or path,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, dtype=dtype,
            enable_prefix_caching=enable_prefix_caching, seed=seed, logprobs_mode="processed_logprobs",
            **llm_kwargs)
        self.sync_weights(model)

    def sync_weights(self, model) -> None:
        """Copy `model`'s current weights into the engine and drop its stale prefix cache."""
        _engine_model(self.llm).load_weights(vllm_named_weights(model))
        self.llm.reset_prefix_cache()

    def _sampling_params(self, n: int, params: SamplingParams, seed: int | None = None):
        import torch

        # as in HFBackend: no seed -> one draw from the global torch RNG, so resumes replay the same rollouts
        if seed is None:
            seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        return self._vllm.SamplingParams(
            n=n, temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1, max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None, stop_token_ids=sorted(self.eos_ids), seed=seed,
            logprobs=0, skip_special_tokens=True, include_stop_str_in_output=False)

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> Rollouts:
        prompts = check_prompts(prompts, n)
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
        check_seeds(prompts, params)
        # per-prompt seeds (online algorithms): one request's own seed each, so a prompt's samples do not
        # depend on the other prompts of the call or on how a round was shared out over processes
        sampling = (self._sampling_params(n, params) if params.seeds is None
                    else [self._sampling_params(n, params, s) for s in params.seeds])
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        rows: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "completion_logps": [], "texts": [],
                                 "truncated": []}
        for ids, request in zip(prompt_ids, outputs):
            for out in request.outputs:
                tokens = list(out.token_ids)
                rows["prompt_ids"].append(list(ids))
                rows["completion_ids"].append(tokens)
                rows["completion_logps"].append([float(out.logprobs[t][tok].logprob) for t, tok in enumerate(tokens)])
                rows["texts"].append(cut_at_stop(out.text, params.stop)[0])
                rows["truncated"].append(out.finish_reason == "length")
        return Rollouts(**rows, n=n)
