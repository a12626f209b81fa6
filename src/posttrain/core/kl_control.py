"""KL-penalty coefficients for RLHF: fixed, or adapted toward a target KL (Ziegler et al. 2019).

The PPO reward of a completion is `score - beta * KL(policy || reference)`; `beta` is `controller.value`.

`FixedKLController`: `beta` never changes.

`AdaptiveKLController` ("Fine-Tuning Language Models from Human Preferences", Ziegler et al. 2019,
sec. 2.2), in the form of OpenAI's lm-human-preferences and TRL:

    e      = clip(KL_measured / KL_target - 1, -0.2, 0.2)
    beta  <- beta * (1 + e * n_steps / horizon)

where `KL_measured` is the mean per-sequence KL of the rollouts just used and `n_steps` the number of
rollouts (sequences) they were; the paper's `K_beta` is `n_steps / horizon` (0.1 with their numbers).
So `beta` grows while the policy drifts further than the target and shrinks while it stays closer, at
most by a factor `1 +- 0.2 * n_steps / horizon` per update.

Both keep their state in `state_dict()` (plain floats) for exact resume.
"""
from __future__ import annotations

import math

CLIP = 0.2


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, init_kl_coef: float):
        if not init_kl_coef >= 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef!r}")
        self.value = float(init_kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No change; returns the coefficient."""
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Proportional control of beta toward `target` KL over `horizon` rollouts (module docstring)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        super().__init__(init_kl_coef)
        if not target > 0:
            raise ValueError(f"target_kl must be > 0 for the adaptive KL controller, got {target!r}")
        if not horizon > 0:
            raise ValueError(f"kl_horizon must be > 0, got {horizon!r}")
        self.target, self.horizon = float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move beta after `n_steps` rollouts whose mean per-sequence KL was `current_kl`; returns beta.
        A non-finite KL leaves beta unchanged."""
        if not math.isfinite(current_kl):
            return self.value
        error = min(max(current_kl / self.target - 1.0, -CLIP), CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


KL_CONTROLLERS = ("fixed", "adaptive")


def make_kl_controller(kind: str, *, init_kl_coef: float, target_kl: float, kl_horizon: float):
    """`kind` "fixed" or "adaptive" (the PPO config's `kl_ctl`)."""
    if kind == "fixed":
        return FixedKLController(init_kl_coef)
    if kind == "adaptive":
        return AdaptiveKLController(init_kl_coef, target_kl, kl_horizon)
    raise ValueError(f"kl_ctl: expected one of {list(KL_CONTROLLERS)}, found {kind!r}")
