"""Mixed precision: the setting's name, and fp16's loss scaling around one optimizer step.

fp16 autocast (accelerate's, on a GPU) computes activations and their gradients in half precision, whose
smallest number is ~6e-8: small gradients underflow to 0. `LossScale` multiplies the loss by a scale
(accelerate's `torch.amp.GradScaler`) before backward and divides the gradients by it before clipping; a
step whose scaled gradient overflows is skipped and the scale halved. With no scaler (fp32, bf16, CPU,
DeepSpeed, which scales fp16 itself) every method is the plain operation.
"""
from __future__ import annotations

import math


def mixed_precision_name(value) -> str:
    """`no`, `bf16` or `fp16`. YAML reads a bare `no` as false (and OmegaConf then stores 'False')."""
    name = str(value).strip().lower()
    if name in ("no", "false", "none", "0", "fp32", "float32"):
        return "no"
    if name in ("bf16", "bfloat16"):
        return "bf16"
    if name in ("fp16", "float16"):
        return "fp16"
    raise ValueError(f"mixed_precision: expected no, bf16 or fp16, found {value!r}")


def fp16_note(setting, accelerator) -> str | None:
    """What to tell the user when fp16 was asked for where accelerate does not autocast (CPU)."""
    if mixed_precision_name(setting) == "fp16" and not accelerator.native_amp:
        return ("mixed_precision=fp16 has no effect on this device (no fp16 autocast on CPU): training in the "
                "model's dtype")
    return None


class LossScale:
    """One optimizer step's loss scaling: `scale(loss)` before backward, `unscale(optimizer)` before
    clipping (returns the scale used, or None without a scaler), `step`, then `update` every step."""

    def __init__(self, scaler=None):
        self.scaler = scaler

    def scale(self, loss):
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale(self, optimizer) -> float | None:
        if self.scaler is None:
            return None
        scale = float(self.scaler.get_scale())
        self.scaler.unscale_(optimizer)
        return scale

    def step(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)  # steps: the caller checked that the unscaled gradient is finite
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    @staticmethod
    def overflow(scale: float | None, loss: float, grad_norm: float) -> bool:
        """A finite loss whose scaled gradient is not finite, at a scale above 1: the scale's fault (the
        scaler halves it), not the model's, so it does not count toward the consecutive-skip abort."""
        return scale is not None and scale > 1 and math.isfinite(loss) and not math.isfinite(grad_norm)

    def current(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler is not None else None

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
