"""Speed switches the engine turns on for every algorithm; none changes a result (forward values bit for bit):
Llama-style RMSNorm and rotary embeddings get hand-written backwards with fewer passes over the activations
(`core/fast_norm.py`, `core/fast_rotary.py`; their tests compare values and gradients with autograd's)."""
from __future__ import annotations

from torch import nn


def speed_up(model: nn.Module) -> None:
    from posttrain.core.fast_norm import lean_rms_norms
    from posttrain.core.fast_rotary import lean_rotary

    lean_rms_norms(model)
    lean_rotary(model)
