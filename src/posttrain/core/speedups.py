"""Speed switches the engine turns on for every algorithm; none changes a result (forward values bit for bit):
Llama-style RMSNorm and rotary embeddings get hand-written backwards with fewer passes over the activations
(`core/fast_norm.py`, `core/fast_rotary.py`; their tests compare values and gradients with autograd's).

One more where the algorithm asks for it (`Algorithm.onednn_linear`, True for every built-in algorithm) and
the CPU gains from it (`fast_linear.onednn_pays`: a non-Intel x86 CPU with AVX-512, or
`POSTTRAIN_ONEDNN_LINEAR=1`): float32 `nn.Linear` layers on a CPU run their matmuls on oneDNN instead of MKL
(`core/fast_linear.py`: ~2x the GFLOP/s on AMD Zen 4, where MKL takes its AVX2 path; on Intel MKL was as fast or
faster, and on AMD without AVX-512 both run AVX2 and MKL was faster, so MKL stays there). Values
then agree with MKL's to float rounding, not bit for bit: the bench's loss checks against TRL (SFT first/final
to 6 digits, DPO, RM) read the same with it forced on (bench/README.md, "oneDNN linears: bounded shapes").
oneDNN sees each matmul's row count rounded up to a bucket, so its per-shape memory stays bounded while packed
batches change their token count every step (it grew step after step before: peak RSS up to 1.6x TRL's)."""
from __future__ import annotations

from torch import nn


def speed_up(model: nn.Module, onednn_linear: bool = False) -> None:
    from posttrain.core.fast_norm import lean_rms_norms
    from posttrain.core.fast_rotary import lean_rotary

    lean_rms_norms(model)
    lean_rotary(model)
    if onednn_linear:
        from posttrain.core.fast_linear import onednn_linears, onednn_pays

        if onednn_pays():
            onednn_linears(model)
