"""What a checkpoint stores of the model: everything, or (when part of the model is frozen, as with LoRA)
only the trainable parameters.

A LoRA run's frozen base is rebuilt from the config on resume (the resume check guarantees the same
`model`), so its checkpoints hold the adapter (plus any trainable head: a reward model's score, PPO's
value head) — megabytes instead of the whole model. Parameters and optimizer state are restored exactly.
"""
from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file, save_model

FULL, TRAINABLE = "full", "trainable"


def state_kind(model) -> str:
    """`trainable` when some parameters are frozen (LoRA, frozen layers), else `full`."""
    return TRAINABLE if any(not p.requires_grad for p in model.parameters()) else FULL


def trainable_tensors(model) -> dict[str, torch.Tensor]:
    """name -> tensor of every trainable parameter (a tied parameter once, under its first name)."""
    out, seen = {}, set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[name] = p.detach().contiguous()
    return out


def save_model_state(model, path: str) -> str:
    """Write the model's checkpoint state to `path` (safetensors); returns the kind written."""
    kind = state_kind(model)
    if kind == FULL:
        save_model(model, path)
    else:
        save_file(trainable_tensors(model), path, metadata={"posttrain_state": TRAINABLE})
    return kind


def load_trainable_state(model, path: str) -> tuple[list[str], list[str]]:
    """Copy a `trainable` file's tensors into the model's parameters; (missing, unexpected) names, where
    missing counts only trainable parameters the file lacks."""
    tensors = load_file(path)
    params = dict(model.named_parameters(remove_duplicate=False))
    unexpected = [k for k in tensors if k not in params]
    missing = [k for k in trainable_tensors(model) if k not in tensors]
    for k, t in tensors.items():
        if k in params and tuple(t.shape) != tuple(params[k].shape):
            raise RuntimeError(f"size mismatch for {k}: checkpoint {tuple(t.shape)}, model {tuple(params[k].shape)}")
    with torch.no_grad():
        for k, t in tensors.items():
            if k in params:
                params[k].copy_(t.to(params[k].dtype))
    return missing, unexpected


def file_kind(path: str) -> str:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return (f.metadata() or {}).get("posttrain_state", FULL)
