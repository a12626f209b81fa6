"""float32 `nn.Linear` on a CPU through oneDNN's matmul, forward and backward: `onednn_linears(model)`.

On a CPU, torch's float32 `F.linear` / `mm` call MKL's sgemm. On the AMD EPYC (Zen) machines this project is
benchmarked on, MKL takes its AVX2 code path (it dispatches by CPU vendor) and runs ~100 GFLOP/s per core,
while oneDNN (also shipped inside torch, `torch.ops.mkldnn._linear_pointwise`, the op torch.compile's CPU
freezing emits) runs the same float32 products with AVX-512 at ~190-230 GFLOP/s (bench/README.md, "GRPO:
oneDNN matmuls"). Here each of the three products of a linear layer goes through oneDNN:

    y  = x W^T + b          _linear_pointwise(x, W, b)
    dx = g W                _linear_pointwise(g, W^T)        (W^T a view: oneDNN reads the strides)
    dW = g^T x              _linear_pointwise(g^T, x^T)      (views as well)
    db = sum_rows(g)

Same float32 arithmetic (IEEE products and sums, no reduced precision: torch's
`torch.backends.mkldnn` fp32 math mode is left as it is); only the summation order differs from MKL's,
so values agree to float rounding (~1e-6 relative; tests/core/test_fast_linear.py compares values and
gradients with autograd's `F.linear`). Saved for backward: `x` and `W`, as `F.linear` keeps.

Applied (`_usable` at each call, else the module's own forward): float32 input and weight on a CPU,
plain tensors (no DTensor / ZeRO-3 partitions), autocast off, not under torch.compile tracing, oneDNN
available. Only modules whose class is exactly `nn.Linear` are switched (PEFT's LoRA wrappers keep their
forward; their inner `nn.Linear`s are switched).
"""
from __future__ import annotations

import os
import types

import torch
from torch import Tensor, nn


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _mm(a: Tensor, b_t: Tensor) -> Tensor:
    """a [M, K] @ b_t^T, b_t [N, K]: oneDNN's float32 matmul (inputs may be strided views)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], "")


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        y = torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")
        ctx.save_for_backward(x2, weight)
        ctx.has_bias, ctx.lead = bias is not None, x.shape[:-1]
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        x2, weight = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        if not g2.is_contiguous():
            g2 = g2.contiguous()
        dx = _mm(g2, weight.t()).view(*ctx.lead, weight.shape[1]) if ctx.needs_input_grad[0] else None
        dw = _mm(g2.t(), x2.t()) if ctx.needs_input_grad[1] else None
        db = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def _usable(x: Tensor, weight: Tensor) -> bool:
    return (x.dtype == torch.float32 and weight.dtype == torch.float32 and x.device.type == "cpu"
            and type(weight.data) is Tensor and not hasattr(weight, "ds_id") and x.shape[-1] > 0
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def _forward(self: nn.Linear, x: Tensor) -> Tensor:
    if not _usable(x, self.weight):
        return type(self).forward(self, x)
    return _Linear.apply(x, self.weight, self.bias)


# oneDNN keeps one compiled primitive per (op, shapes) in a process-wide cache of 1024 by default. Packed and
# padding-free batches change their token count every step, so the cache (and the memory of each primitive)
# grows step after step: GRPO's peak RSS on the bench went from ~0.76x to 1.07x TRL's. 32 holds the shapes one
# step uses (each layer's few linears x forward / input grad / weight grad, shared by all layers): peak RSS
# over 20 GRPO steps 1107 -> 965 MiB at an unchanged step time; over 50 steps it still grows, to 1070-1180 MiB
# against TRL's ~1050 (bench/README.md): a bound, not the whole fix. oneDNN reads the variable when it first builds a
# primitive, so it is set before the first; a value the user set wins.
PRIMITIVE_CACHE_CAPACITY = "32"


def onednn_linears(model: nn.Module) -> int:
    """Route every plain `nn.Linear` of `model` through `_Linear` when oneDNN is there; returns how many."""
    if not onednn_available():
        return 0
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", PRIMITIVE_CACHE_CAPACITY)
    n = 0
    for m in model.modules():
        if type(m) is nn.Linear and "forward" not in vars(m):
            m.forward = types.MethodType(_forward, m)
            n += 1
    return n
