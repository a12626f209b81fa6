"""float32 `nn.Linear` on a CPU through oneDNN's matmul, forward and backward: `onednn_linears(model)`.

On a CPU, torch's float32 `F.linear` / `mm` call MKL's sgemm. MKL dispatches by CPU vendor: on AMD EPYC
(Zen) it takes its AVX2 code path, so on a Zen 4 with AVX-512 it runs ~100 GFLOP/s per core while oneDNN (also
shipped inside torch, `torch.ops.mkldnn._linear_pointwise`, the op torch.compile's CPU freezing emits) runs the
same float32 products with AVX-512 at ~190-230 GFLOP/s (bench/README.md, "GRPO: oneDNN matmuls"). On Intel, MKL
runs AVX-512 too and was as fast or faster (bench/README.md, "oneDNN linears: bounded shapes"); on an AMD CPU
without AVX-512 (Zen 3) both libraries run AVX2 at the same rate, and MKL reads transposed operands in place
where oneDNN copies them, so MKL's steps were 20-30% shorter (bench/README.md, "AMD without AVX-512").
`onednn_pays` picks by vendor and AVX-512 (`POSTTRAIN_ONEDNN_LINEAR=1` / `0` forces it). Each product of a
linear layer goes through oneDNN:

    y  = x W^T + b          _linear_pointwise(x, W, b)
    dx = g W                _linear_pointwise(g, W^T)        (W^T a view: oneDNN reads the strides)
    dW = g^T x              _linear_pointwise(g^T, x^T)      (views as well)
    db = sum_rows(g)

Bounded memory: oneDNN builds (JIT-compiles) one primitive per shape and keeps memory for every shape it
has seen, whatever its primitive cache's capacity (measured: ~0.7 MiB more live heap per new row count
with the cache at 0, and glibc's heap fragmenting around it). Packed and padding-free batches change their
row count M every step, so the process grew step after step. Here oneDNN only ever sees M rounded up to
`bucket(M)` (zero rows appended, their outputs dropped: a zero row changes no value of y or dx and adds
nothing to dW), a small fixed set of sizes, so its memory plateaus; the padded copies use reused buffers.

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

import functools
import os
import platform
import threading
import types

import torch
from torch import Tensor, nn


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


ENV = "POSTTRAIN_ONEDNN_LINEAR"


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` of /proc/cpuinfo on an x86 CPU; "" elsewhere or when unknown."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    try:
        with open("/proc/cpuinfo") as f:
            fields = (ln.partition(":") for ln in f)
            return next((value.strip() for key, _, value in fields if key.strip() == name), "")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The x86 CPU vendor string (`GenuineIntel`, `AuthenticAMD`, ...); "" elsewhere or when unknown."""
    return _cpuinfo_field("vendor_id")


@functools.lru_cache(maxsize=1)
def cpu_has_avx512() -> bool:
    """Whether the x86 CPU has AVX-512 (the `avx512f` flag); False elsewhere or when unknown."""
    return "avx512f" in _cpuinfo_field("flags").split()


@functools.lru_cache(maxsize=1)
def cpu_has_avx2_fma() -> bool:
    """Whether the x86 CPU has AVX2 and FMA (the `avx2` and `fma` flags); False elsewhere or when unknown."""
    return {"avx2", "fma"} <= set(_cpuinfo_field("flags").split())


def onednn_pays(decode: bool = False) -> bool:
    """Whether float32 linears run on oneDNN here (`Algorithm.onednn_linear` asks; this decides).
    `POSTTRAIN_ONEDNN_LINEAR=1` / `=0` forces it; unset, yes on a non-Intel x86 CPU with AVX-512 (AMD Zen 4),
    where MKL, torch's default, takes its AVX2 path (~100 vs ~190-230 GFLOP/s per core), no on Intel, where MKL
    runs AVX-512 and was as fast as oneDNN or faster at the bench's shapes (bench/README.md, "oneDNN linears:
    bounded shapes"), no on an x86 CPU without AVX-512 (AMD Zen 3: both run AVX2 alike, and oneDNN's transposed
    copies made every training step 20-30% longer), and no elsewhere. `decode`: for the lean decode's weights,
    prepacked once and multiplied by a few rows (`rollout/lean.py`), where no operand is transposed, oneDNN is
    the one on any non-Intel x86 CPU (the 17 linears of a tiny-llama decode step on a Zen 3 EPYC, 2 threads:
    2.3 ms on oneDNN, 3.1 ms on MKL's packed sgemm; `bench/decode_cpu.py --linears --threads 2`), unless the
    compiled AVX2 kernel takes them (`rollout.lean_linear.linear_kind`: such a CPU without AVX-512, the env unset)."""
    v = os.environ.get(ENV, "").strip().lower()
    if v in ("1", "true", "yes", "on"):
        return onednn_available()
    if v in ("0", "false", "no", "off"):
        return False
    if v:
        raise ValueError(f"{ENV}: expected 1 (oneDNN) or 0 (MKL), or unset (by CPU vendor and AVX-512), found {v!r}")
    return onednn_available() and cpu_vendor() not in ("", "GenuineIntel") and (decode or cpu_has_avx512())


def _pointwise(a: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """a [M, K] @ w^T (+ b), w [N, K]: oneDNN's float32 matmul (inputs may be strided views). Every oneDNN
    product of this module goes through here, with M already a `bucket` (tests count the shapes it sees)."""
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


def bucket(m: int) -> int:
    """The row count oneDNN computes for `m` rows: `m` rounded up to a multiple of 8, and above 128 to one of
    16 sizes per power-of-two octave (at most 1/16 = 6.25% extra rows). So `m` up to 4096 maps to at most
    96 sizes whatever the data, and each linear builds a bounded set of oneDNN primitives (module comment)."""
    q = max(8, 1 << max(0, m.bit_length() - 5))
    return -(-m // q) * q


# Padded copies are transient (each feeds one oneDNN call), so each thread keeps one flat buffer per role
# ("x": an input, "g": a gradient; a weight gradient needs both at once) and reuses it: no allocation and no
# page faults per call, and the copy lands in cache. Linears that read the same input (q/k/v, gate/up) reuse
# the "x" buffer's copy while it holds that input: `_Workspace.memo` keeps the input (so its memory cannot be
# another tensor's) with its version counter (an in-place change is seen; inference tensors have none: no
# reuse). A copy of more than WORKSPACE_MAX elements gets its own tensor.
WORKSPACE_MAX = 1 << 22   # 16 MiB of float32 per role and thread at most


class _Workspace(threading.local):
    def __init__(self):
        self.bufs: dict = {}
        self.memo: dict = {}


_work = _Workspace()


def _padded(t: Tensor, rows: int, role: str) -> Tensor:
    """`t` [m, K] as a contiguous [rows, K] (rows >= m), the extra rows zero: `t` itself when nothing to do."""
    m, k = t.shape
    if m == rows and t.is_contiguous():
        return t
    n = rows * k
    if n > WORKSPACE_MAX:
        return _fill(t.new_empty((rows, k)), t)
    key = (role, t.dtype, torch.is_inference_mode_enabled())  # an inference tensor is not written outside
    sig = None if t.is_inference() else (t.data_ptr(), tuple(t.shape), t.stride(), t._version, rows)
    held = _work.memo.get(key)
    if held is not None and sig is not None and held[1] == sig:
        return held[2]
    buf = _work.bufs.get(key)
    if buf is None or buf.numel() < n:
        buf = _work.bufs[key] = t.new_empty(n)   # sizes are buckets: it grows a few times at most
    out = _fill(buf[:n].view(rows, k), t)
    _work.memo[key] = (t, sig, out) if role == "x" and sig is not None else None
    return out


def _fill(out: Tensor, t: Tensor) -> Tensor:
    out[:t.shape[0]].copy_(t)
    out[t.shape[0]:].zero_()
    return out


def bucketed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`x [..., K] @ weight^T + bias` on oneDNN with `bucket(M)` rows (M = rows of x); `weight` [N, K] as it is or
    prepacked by `torch.ops.mkldnn._reorder_linear_weight` (rollout/lean_linear.py). No autograd (`_Linear` has it)."""
    k = x.shape[-1]
    m = x.numel() // max(k, 1)
    rows = bucket(m)
    if rows == m and x.is_contiguous():   # already a bucket (a decode step's 16 rows): no reshape, no copy
        return _pointwise(x, weight, bias)
    y = _pointwise(_padded(x.reshape(-1, k), rows, "x"), weight, bias)[:m]
    return y.view(*x.shape[:-1], y.shape[-1])


class _Linear(torch.autograd.Function):
    """The three products on `bucket(M)` rows (zero rows appended, their outputs sliced off: a zero row adds
    nothing to dW = g^T x, and rows of y and dx are independent); saved for backward: `x` and `W` unpadded."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias, ctx.lead = bias is not None, x.shape[:-1]
        return bucketed_linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        x2, weight = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        m = g2.shape[0]
        gp = _padded(g2, bucket(m), "g")
        dx = _pointwise(gp, weight.t(), None)[:m].view(*ctx.lead, weight.shape[1]) if ctx.needs_input_grad[0] else None
        dw = _pointwise(gp.t(), _padded(x2, gp.shape[0], "x").t(), None) if ctx.needs_input_grad[1] else None
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


# oneDNN keeps compiled primitives in a process-wide cache (1024 by default) and, apart from it, memory for every
# shape it has seen. The bound on that is `bucket` (module docstring); this cap only limits how many primitives
# stay compiled: 32 holds the ~12 shapes of one step (a few linear widths x forward / input grad / weight grad,
# shared by all layers) and a step or two of others. Measured with buckets, GRPO 80 steps, oneDNN forced, 1 thread
# (bench/README.md, "oneDNN linears: bounded shapes"): peak RSS 905 MiB at 32, 949 at 1024, both flat after ~30
# steps. oneDNN reads the variable when it first builds a primitive, so it is set before the first; a value the
# user set wins.
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
