"""PPO's critic: a scalar value head on the policy's own trunk.

Design: one `Linear(hidden, 1)` (float32, zero-initialised so every value starts at 0) attached to the
policy module as the submodule `v_head`. Being a submodule of `engine.model` it is
- trained by the engine's one optimizer (it requires grad; the value loss also reaches the trunk, or
  the LoRA adapter, as in TRL's `AutoModelForCausalLMWithValueHead`),
- saved in every checkpoint's `model.safetensors` and restored on resume, with no engine change,
- left out of `OUT/final`: its keys join the transformers model's `_keys_to_ignore_on_save`, and a
  PEFT model saves only its adapter, so `final/` stays a plain policy folder.
Sharing the trunk costs one extra `hidden -> 1` matmul instead of a second model (InstructGPT used a
separate critic initialised from the reward model; that doubles memory and forward passes).

Alignment (token-aligned, as `core.logprobs`): the action at position t is token `input_ids[:, t]`,
taken in the state `input_ids[:, :t]`, whose representation is `hidden[:, t - 1]`; so
`values[:, t] = v_head(hidden[:, t - 1])` and `values[:, 0] = 0`.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

NAME = "v_head"


def _hf_model(model):
    """The transformers `PreTrainedModel` inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attach_value_head(model) -> nn.Linear:
    """Add (or return the existing) zero-initialised float32 `v_head` on `model`, on its device."""
    if isinstance(getattr(model, NAME, None), nn.Linear):
        return getattr(model, NAME)
    hidden = _hf_model(model).config.get_text_config().hidden_size
    device = next(model.parameters()).device
    head = nn.Linear(hidden, 1, dtype=torch.float32, device=device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model.add_module(NAME, head)
    ignore = getattr(model, "_keys_to_ignore_on_save", None)
    if hasattr(model, "save_pretrained") and not hasattr(model, "peft_config"):
        model._keys_to_ignore_on_save = set(ignore or ()) | {f"{NAME}.weight", f"{NAME}.bias"}
    return head


def value_head(model) -> nn.Linear:
    head = getattr(model, NAME, None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no value head; call attach_value_head(model) first")
    return head


def token_values(model, hidden: Tensor) -> Tensor:
    """float32 values `[B, T]` from the trunk's final hidden states `[B, T, H]`, token-aligned (module
    docstring): position t holds V(input_ids[:, :t]); position 0 is 0."""
    v = value_head(model)(hidden[:, :-1].float()).squeeze(-1)
    return torch.cat([v.new_zeros((v.shape[0], 1)), v], dim=1)


@contextlib.contextmanager
def without_value_head(model):
    """`model` with `v_head` unregistered inside the block (e.g. while a rollout backend such as vLLM
    copies the policy's weights by name, which knows no value head); restored after."""
    head = model._modules.pop(NAME, None)
    try:
        yield model
    finally:
        if head is not None:
            model._modules[NAME] = head
