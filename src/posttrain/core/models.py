"""Load and save Hugging Face causal LMs: dtype, attention, checkpointing, GGUF, PEFT LoRA, references.

`model` is a hub name or a local folder. A lab name `builtin:NAME` is resolved to a folder where the
config is loaded (`posttrain.lab.builtin.resolve_config`), never here.
Output is `save_pretrained` form (safetensors, tokenizer, chat template) that transformers and vLLM load.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "auto": "auto"}


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded; the message says which and why."""


def resolve_path(name: str, what: str = "model") -> str:
    """`name` unchanged, or `ModelLoadError` for an unresolved lab name `builtin:NAME` (the entry points
    resolve those once when they load the config; the library does not build lab models), or for a path
    that does not exist and is no hub name (saying which recipe makes it, when one does)."""
    if isinstance(name, str) and name.startswith("builtin:"):
        raise ModelLoadError(f"'{name}' is a lab name: the posttrain CLI resolves it when it loads the config; "
                             "from Python call posttrain.lab.builtin.resolve_config(cfg) (or resolve(name)) first")
    from posttrain.core.model_source import missing_source_message

    problem = missing_source_message(name, what)
    if problem:
        raise ModelLoadError(problem)
    return name


def _dtype(name: str):
    if name not in DTYPES:
        raise ModelLoadError(f"torch_dtype: expected one of {sorted(DTYPES)}, found '{name}'")
    return DTYPES[name]


def load_tokenizer(cfg):
    from transformers import AutoTokenizer

    src = resolve_path(cfg.tokenizer or cfg.model, "tokenizer" if cfg.tokenizer else "model")
    kw = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.gguf_file and not cfg.tokenizer:
        kw["gguf_file"] = cfg.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(src, **kw)
    except Exception as e:
        raise ModelLoadError(f"cannot load tokenizer '{src}': {type(e).__name__}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg, *, with_tokenizer: bool = True, auto_class=None):
    """`(model, tokenizer)` from a config carrying the `ModelArgs` fields and `lora`.

    LoRA (`lora.r > 0`) wraps the model with PEFT; only adapter weights are trainable then.
    """
    from transformers import AutoModelForCausalLM

    src = resolve_path(cfg.model)
    kw = {"dtype": _dtype(cfg.torch_dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    if cfg.gguf_file:
        kw["gguf_file"] = cfg.gguf_file
    try:
        model = (auto_class or AutoModelForCausalLM).from_pretrained(src, **kw)
    except Exception as e:
        raise ModelLoadError(f"cannot load model '{src}': {type(e).__name__}: {e}") from e
    if cfg.gguf_file:
        _drop_gguf_quantizer(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    tok = load_tokenizer(cfg) if with_tokenizer else None
    if tok is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if getattr(cfg, "lora", None) is not None and cfg.lora.r > 0:
        model = apply_lora(model, cfg.lora)
    return model, tok


def _drop_gguf_quantizer(model) -> None:
    """transformers de-quantizes GGUF tensors into ordinary float weights on load but keeps a GGUF
    'quantizer' on the model that forbids `save_pretrained`. The weights are plain tensors, so the
    marker is removed: the trained model saves as ordinary safetensors."""
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def apply_lora(model, lora_cfg, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig, get_peft_model

    targets = lora_cfg.target_modules
    targets = list(targets) if not isinstance(targets, str) else targets
    pcfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=targets, task_type=task_type)
    if getattr(model, "is_gradient_checkpointing", False):
        model.enable_input_require_grads()
    return get_peft_model(model, pcfg)


def disable_dropout(model) -> int:
    """Zero every dropout of `model`: `nn.Dropout` modules (LoRA's too) and attention dropout rates
    (`attention_dropout` / `attn_dropout` floats read at forward time). Returns how many were non-zero."""
    changed = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            changed += m.p > 0
            m.p = 0.0
        for name in ("attention_dropout", "attn_dropout"):
            if isinstance(getattr(m, name, None), float):
                changed += getattr(m, name) > 0
                setattr(m, name, 0.0)
    return changed


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class Reference:
    """The frozen reference policy: the base model with the adapter disabled (LoRA, no second copy),
    or a frozen deep copy of the initial model."""

    def __init__(self, model):
        self._shared = is_peft(model)
        self._model = model if self._shared else copy.deepcopy(model).eval().requires_grad_(False)

    @property
    def shared(self) -> bool:
        """True when the reference is the policy itself with its LoRA adapter disabled (no copy)."""
        return self._shared

    @contextlib.contextmanager
    def model(self):
        """Yields a module whose forward is the reference; gradients off."""
        with torch.no_grad():
            if self._shared:
                was = self._model.training
                self._model.eval()
                try:
                    with self._model.disable_adapter():
                        yield self._model
                finally:  # the policy trains on in its own mode even when the reference pass raised
                    self._model.train(was)
            else:
                yield self._model

    def to(self, device):
        if not self._shared:
            self._model.to(device)
        return self


def final_form(cfg, model) -> tuple[bool, str]:
    """(merge the LoRA adapter into final/?, what to tell the user). A GGUF base cannot be an adapter's base
    (transformers loads it only with `gguf_file`), so a LoRA run on GGUF is merged into the de-quantised
    base: final/ then loads with AutoModelForCausalLM alone."""
    if not is_peft(model):
        return False, ""
    if cfg.lora.merge_on_save:
        return True, "final/: the LoRA adapter merged into the base weights (lora.merge_on_save)"
    if cfg.gguf_file:
        return True, ("final/: the LoRA adapter merged into the de-quantised GGUF base (a GGUF file cannot be an "
                      "adapter's base), so AutoModelForCausalLM loads it alone")
    return False, "final/: a PEFT LoRA adapter on its base (AutoModelForCausalLM loads it with peft installed)"


def _absolute_adapter_base(folder: str) -> None:
    """An adapter's base given as a relative local folder is made absolute, so final/ loads from anywhere."""
    import json

    path = os.path.join(folder, "adapter_config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        conf = json.load(f)
    base = conf.get("base_model_name_or_path")
    if isinstance(base, str) and base and not os.path.isabs(base) and os.path.isdir(base):
        conf["base_model_name_or_path"] = os.path.abspath(base)
        with open(path, "w") as f:
            json.dump(conf, f, indent=2)


def save_final(model, tokenizer, out_dir: str, *, merge_lora: bool = False, state_dict: dict | None = None) -> str:
    """Write `out_dir` atomically in `save_pretrained` form (safetensors + tokenizer + chat template).

    A LoRA model is merged into its base when `merge_lora`, else saved as a PEFT adapter folder (which
    `peft.AutoPeftModelForCausalLM.from_pretrained` loads; transformers loads it too when peft is installed).
    `state_dict`: the full weights gathered from a sharded model (fsdp2), saved instead of the module's own.
    """
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".final-", dir=parent)
    to_save = model
    if is_peft(model) and merge_lora:
        if state_dict is not None:
            raise ValueError("lora.merge_on_save is not supported with distributed.strategy=fsdp2; save the adapter "
                             "(merge_on_save=false) and merge it afterwards with peft's merge_and_unload")
        to_save = copy.deepcopy(model).merge_and_unload()
    kw = {"state_dict": state_dict} if state_dict is not None else {}
    to_save.save_pretrained(tmp, safe_serialization=True, **kw)
    _absolute_adapter_base(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    old = out_dir + ".old"
    if os.path.isdir(out_dir):
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir
