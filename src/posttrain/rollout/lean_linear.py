"""The lean decode's linear layers (`_Linear`): one or several `nn.Linear` side by side, their float32 weights
prepacked once per `generate` for the kind of matmul this CPU runs fastest at a decode step's few rows
(`linear_kind`): MKL's packed sgemm ("mkl", Intel), the compiled AVX2 panel kernel ("avx2", other x86 without
AVX-512: `csrc/lean_step.cpp`'s `posttrain_lean::linear`, weights in `pack_panels` layout), oneDNN's blocked
layout ("onednn", elsewhere), or the modules' own weights (None: GPU, other dtypes). `rollout/lean.py` builds them;
`rollout/native.py` hands their packed weights to the compiled step.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from posttrain.core.fast_linear import bucketed_linear

class _Linear:
    """y = x W^T + b of one or several `nn.Linear` side by side (q/k/v; gate/up: their outputs concatenated),
    by `kind` (`linear_kind`), for float32 weights on a CPU:

    - "mkl" (Intel): MKL's packed sgemm, the op torch.compile's CPU freezing emits for float32 on Intel
      (`torch.ops.mkl._mkl_linear`): the weights are concatenated once, then packed for the decode step's row
      count M; at [16, 256] x [256, 768] it ran ~35% faster than oneDNN's prepacked matmul, which itself beat
      `F.linear` (bench/README.md, "Lean decode on Intel"). A pack holds for one M (`_mkl_linear` falls back to
      `F.linear` for any other): when rows finish and fewer come, they are padded up to the packed M (a row's
      output does not depend on the others) until they are half of it, then the weights are packed again at the
      new M (~13 ms for the tiny-llama's 17 weights; at most log2(M) times per chunk). A prefill (`prefill`)
      runs `F.linear` on the concatenated weight (MKL).
    - "onednn" (other x86, e.g. AMD, where MKL takes its AVX2 path): concatenated and reordered ONCE into
      oneDNN's blocked layout; a decode step's [16, hidden] matmuls ran ~2x faster than `F.linear`, which
      repacks the weight on every call; a prefill's rows are bucketed (`fast_linear.bucketed_linear`).
    - "avx2" (non-Intel x86 without AVX-512, `avx2_pays`): the compiled kernel `posttrain_lean::linear`
      (`csrc/lean_step.cpp`, built by `native`), the weights concatenated and packed ONCE in panels of 16 output
      columns (`pack_panels`); any row count, a prefill's in passes of 64 rows. The compiled step calls the same
      kernel, so the Python and the compiled step still agree bit for bit.
    - None (GPU, other dtypes): the modules' own weights as they are, no copy.

    The same float32 arithmetic in every kind (ulp-level differences in summation order); the packed copy
    (and for "mkl" the concatenated weight of q/k/v and gate/up) is the extra memory. `norm`: the weight of the
    RMSNorm in front of q/k/v or gate/up, folded into the concatenated copy's columns (x_hat w W^T = x_hat
    (W diag(w))^T: one product per norm fewer each step, values equal to ~1 ulp; `folded` says it was; never
    for kind None, whose weights are the modules' own)."""

    def __init__(self, mods: list, kind: str | None, norm: Tensor | None = None):
        self.parts, self.kind = [(m.weight, m.bias) for m in mods], kind
        self.packed, self.bias, self.rows = None, None, 0
        # only into a copy made here (several parts concatenated), in the weight's own dtype
        self.folded = kind is not None and norm is not None and len(mods) > 1 and norm.dtype == mods[0].weight.dtype
        if kind is not None:
            self.bias = _cat_bias(*mods)
            self.weight = mods[0].weight if len(mods) == 1 else torch.cat([m.weight for m in mods])
        if self.folded:   # the RMSNorm weight before it, in its (already copied) columns: W diag(w)
            self.weight.mul_(norm)
        if kind == "onednn":
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
            self.weight = None
        elif kind == "avx2":
            self.packed, self.width = pack_panels(self.weight), self.weight.shape[0]
            self.weight, self.rows = None, self.width   # `rows`: what the compiled step reads per linear
            if self.bias is not None:   # the kernel reads whole panels: zero-padded like the weight
                self.bias = torch.cat((self.bias, self.bias.new_zeros(self.packed.shape[0] * PANEL - self.width)))
        # the op's one overload's C++ callable, bound once: the packet and the overload are Python wrappers that
        # resolve and forward on every call (~1-2 us each, 17 calls a step)
        op = torch.ops.mkl._mkl_linear.default if kind == "mkl" else _avx2_op() if kind == "avx2" else None
        self.op = getattr(op, "_op", op)

    def fit(self, m: int) -> None:
        """"mkl": packed for `m` rows unless the pack at hand serves them (the same count, or more but fewer than
        twice as many: padded); the other kinds serve every count as they are."""
        if self.kind == "mkl" and m != self.rows and not self.rows // 2 < m < self.rows:
            self.packed, self.rows = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, m), m
            self.pad = self.weight.new_zeros((m, self.weight.shape[1]))

    def __call__(self, x: Tensor) -> Tensor:
        if self.kind == "avx2":
            return self.op(x, self.packed, self.bias, self.width)
        if self.kind == "mkl":
            m = x.shape[0]
            if m != self.rows:
                self.fit(m)
            if m == self.rows:
                return self.op(x, self.packed, self.weight, self.bias, m)
            self.pad[:m].copy_(x)   # rows finished: padded up to the packed row count, the extra outputs dropped
            return self.op(self.pad, self.packed, self.weight, self.bias, self.rows)[:m]
        if self.packed is not None:
            if x.shape[0] <= ONEDNN_AS_IS:   # a decode step's rows (or a short prefill): few shapes, called as is
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
            return bucketed_linear(x, self.packed, self.bias)   # a prefill's B x T rows vary: bucketed
        if len(self.parts) == 1:
            return F.linear(x, *self.parts[0])
        return torch.cat([F.linear(x, w, b) for w, b in self.parts], dim=-1)

    def prefill(self, x: Tensor) -> Tensor:
        """The same product for a prefill's B x T rows (a count seen once): "mkl" runs `F.linear` (MKL) on the
        concatenated weight rather than packing it for that count."""
        return F.linear(x, self.weight, self.bias) if self.kind == "mkl" else self(x)


KINDS = ("mkl", "onednn", "avx2")
ONEDNN_AS_IS = 64   # "onednn": row counts up to this are multiplied as they come; more are bucketed (a prefill)
PANEL = 16          # "avx2": output columns per packed panel (`pack_panels`; the kernel's register block)


def linear_kind(weight: Tensor) -> str | None:
    """Which `_Linear` kind decodes with `weight`: None unless float32 on a CPU; then "avx2" where `avx2_pays`;
    else "onednn" where `fast_linear.onednn_pays(decode=True)` (non-Intel x86, or `POSTTRAIN_ONEDNN_LINEAR=1`),
    else "mkl" where torch has MKL's packed sgemm (Intel), else "onednn" where oneDNN is there, else None."""
    from posttrain.core.fast_linear import onednn_pays

    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    if avx2_pays():
        return "avx2"
    if not torch.backends.mkldnn.is_available():
        return None
    if not onednn_pays(decode=True) and mkl_packed_available():
        return "mkl"
    return "onednn" if hasattr(torch.ops.mkldnn, "_reorder_linear_weight") else None


def avx2_pays() -> bool:
    """The compiled AVX2 kernel ("avx2") decodes on a non-Intel x86 CPU with AVX2 and FMA but no AVX-512 (AMD
    Zen 2/3), where it ran the 17 linears of a tiny-llama decode step (16 rows, 2 threads, Zen 3 EPYC) in 1.4 ms
    against oneDNN's 2.2 (`bench/decode_cpu.py --linears --threads 2`; bench/README.md, "The decode's linears on an
    AVX2 kernel"); when `POSTTRAIN_ONEDNN_LINEAR` is unset
    (set, it names the library) and the compiled step loads (`rollout.native`; not with `POSTTRAIN_NATIVE=0`).
    Not measured on Intel (MKL's packed sgemm) nor with AVX-512 (oneDNN), which keep their kinds."""
    from posttrain.core import fast_linear as fl

    if os.environ.get(fl.ENV, "").strip() or fl.cpu_vendor() in ("", "GenuineIntel") or fl.cpu_has_avx512():
        return False
    from posttrain.rollout import native

    return fl.cpu_has_avx2_fma() and native.available()


def _avx2_op():
    """`torch.ops.posttrain_lean.linear`'s one overload, the compiled library loaded first."""
    from posttrain.rollout import native

    if native.load() is None:
        raise RuntimeError('LeanLlama: kind "avx2" needs the compiled step (rollout.native), which did not load')
    return torch.ops.posttrain_lean.linear.default


def pack_panels(weight: Tensor) -> Tensor:
    """`weight` [N, K] as the "avx2" kernel reads it: [ceil(N / 16), K, 16], panel p holding output columns
    16 p .. 16 p + 15 (rows of `weight`) side by side for each k, zero past N."""
    n, k = weight.shape
    count = -(-n // PANEL)
    if count * PANEL != n:
        weight = torch.cat((weight, weight.new_zeros(count * PANEL - n, k)))
    return weight.view(count, PANEL, k).transpose(1, 2).contiguous()


def mkl_packed_available() -> bool:
    return (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight") and hasattr(torch.ops.mkl, "_mkl_linear"))


def _cat_bias(*mods) -> Tensor | None:
    if all(m.bias is None for m in mods):
        return None
    return torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in mods])
