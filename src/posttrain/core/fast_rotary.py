"""A leaner backward for rotary position embeddings: `lean_rotary(model)` points the `apply_rotary_pos_emb`
of the model's transformers module (Llama, Qwen2, Qwen3, Mistral, ... when its code is Llama's verbatim) at
`_Rotary`: the same forward ops, so the same values bit for bit, and a hand-written backward.

Forward: `o = x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]` (halves of the last dim).
Backward, with y = g * sin: `dx = g * cos + [y2, -y1]`: 3 passes over q and k instead of autograd's ~8
(two slices' zero-filled gradients, a cat's split, a negation, three products and the sums). cos and sin
carry no gradient (they come from the rotary buffers); when they do, the original function runs.
The switch is per transformers module (every model of that architecture in the process), and only the
backward differs from the original, so it is made once and never undone.
"""
from __future__ import annotations

import sys

import torch
from torch import Tensor, nn


def _rotate_half(x: Tensor) -> Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(cos, sin)
        return (q * cos) + (_rotate_half(q) * sin), (k * cos) + (_rotate_half(k) * sin)

    @staticmethod
    def backward(ctx, gq: Tensor, gk: Tensor):
        cos, sin = ctx.saved_tensors
        return _back(gq, cos, sin), _back(gk, cos, sin), None, None


def _back(g: Tensor | None, cos: Tensor, sin: Tensor) -> Tensor | None:
    if g is None:
        return None
    h = g.shape[-1] // 2
    y = g * sin
    dx = g * cos
    dx[..., :h] += y[..., h:]
    dx[..., h:] -= y[..., :h]
    return dx


def _make(original):
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        if cos.requires_grad or sin.requires_grad:
            return original(q, k, cos, sin, unsqueeze_dim)
        return _Rotary.apply(q, k, cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim))

    apply_rotary_pos_emb.posttrain_original = original
    return apply_rotary_pos_emb


def _plain(fn):
    """The Python function itself: transformers >= 5.25 (with the `kernels` package) wraps `apply_rotary_pos_emb`
    in an `nn.Module` whose forward calls the function it closed over (`func`), so that a hub kernel can stand in
    for it once a model is kernelized; else `fn` as it is."""
    forward = getattr(type(fn), "forward", None) if isinstance(fn, nn.Module) else None
    code = getattr(forward, "__code__", None)
    if code is not None and "func" in code.co_freevars:
        return forward.__closure__[code.co_freevars.index("func")].cell_contents
    return fn


def _same_code(f, g) -> bool:
    f, g = _plain(f), _plain(g)
    a, b = getattr(f, "__code__", None), getattr(g, "__code__", None)
    return a is not None and b is not None and (a.co_code, a.co_names, a.co_consts) == (b.co_code, b.co_names,
                                                                                         b.co_consts)


def lean_rotary(model: nn.Module) -> bool:
    """Switch the transformers module of `model`'s attention layers to the lean rotary function when its
    `apply_rotary_pos_emb` and `rotate_half` are Llama's; returns whether that module uses it now."""
    from transformers.models.llama import modeling_llama as llama

    names = {type(m).__module__ for m in model.modules() if type(m).__name__.endswith("Attention")}
    switched = False
    for name in names:
        mod = sys.modules.get(name)
        fn = getattr(mod, "apply_rotary_pos_emb", None)
        if fn is None:
            continue
        if hasattr(fn, "posttrain_original"):
            switched = True
            continue
        ref = getattr(llama.apply_rotary_pos_emb, "posttrain_original", llama.apply_rotary_pos_emb)
        if _same_code(fn, ref) and _same_code(getattr(mod, "rotate_half", None), llama.rotate_half):
            mod.apply_rotary_pos_emb = _make(fn)
            switched = True
    return switched
