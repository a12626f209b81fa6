"""Speed switches the engine turns on for every algorithm; none changes a result (forward values bit for bit):
Llama-style RMSNorm and rotary embeddings get hand-written backwards with fewer passes over the activations
(`core/fast_norm.py`, `core/fast_rotary.py`; their tests compare values and gradients with autograd's).

One more where the algorithm asks for it (`Algorithm.onednn_linear`, on for the online algorithms): float32
`nn.Linear` layers on a CPU run their matmuls on oneDNN instead of MKL (`core/fast_linear.py`: ~2x the
GFLOP/s on AMD CPUs, where MKL takes its AVX2 path); values then agree with MKL's to float rounding, not bit
for bit, which is why the offline algorithms, whose benchmarks check losses to 6 digits against TRL's, keep
MKL for now. (SFT was tried with it: its loss checks held to 6 digits and CPU per step fell ~1.5x, but the
process's RSS grew step after step as the token count changed (a new oneDNN primitive per shape; fixed shapes
plateau): peak RSS 1.24x TRL's on tiny-llama-l, 1.59x on tiny-llama; bench/README.md, SFT padding_free.)"""
from __future__ import annotations

from torch import nn


def speed_up(model: nn.Module, onednn_linear: bool = False) -> None:
    from posttrain.core.fast_norm import lean_rms_norms
    from posttrain.core.fast_rotary import lean_rotary

    lean_rms_norms(model)
    lean_rotary(model)
    if onednn_linear:
        from posttrain.core.fast_linear import onednn_linears

        onednn_linears(model)
