"""The 2025 policy-gradient surrogates that GRPO's `loss_type` and `importance_sampling_level` pick:
GSPO's sequence-level ratio, the PPO clip on either ratio, CISPO and SAPO.

Shapes as `losses.policy`: `logps`, `old_logps`, `mask` `[B, T]` (token-aligned, mask float 1 =
completion token), `advantages` `[B]` or `[B, T]`. Every surrogate returns `(token_loss [B, T], metrics)`,
token_loss 0 where `mask == 0`, so any aggregation of `losses.policy.AGGREGATIONS` reduces it.
`LOSS_TYPES` maps a `loss_type` name to (surrogate, aggregation) as TRL 1.16's GRPOTrainer pairs them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from posttrain.losses.policy import AGGREGATIONS, Aggregation
from posttrain.losses.reduce import masked_mean

IS_LEVELS = ("token", "sequence")
Surrogate = Callable[..., tuple[Tensor, dict[str, Tensor]]]


def _zero_outside(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def log_importance_weights(logps: Tensor, old_logps: Tensor, mask: Tensor, level: str = "token") -> Tensor:
    """Log importance weights of the current policy against the one that sampled.

    token:    log r_it = logp_it - old_logp_it                                    -> `[B, T]`
    sequence: GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", eq. 7), the length-
              normalised sequence ratio s_i = (pi(y_i|x) / pi_old(y_i|x))^(1/|y_i|), i.e.
              log s_i = sum_t m_it (logp_it - old_logp_it) / sum_t m_it            -> `[B, 1]`
    Positions with `mask == 0` never enter (their log-ratio is 0); a row with an empty mask gets 0.
    """
    if level not in IS_LEVELS:
        raise ValueError(f"importance_sampling_level: expected one of {list(IS_LEVELS)}, found '{level}'")
    if logps.shape != old_logps.shape or logps.shape != mask.shape:
        raise ValueError(f"logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape")
    log_ratio = _zero_outside(logps - old_logps, mask)
    if level == "token":
        return log_ratio
    return masked_mean(log_ratio, mask, dim=-1).unsqueeze(-1)


def _adv(advantages: Tensor) -> Tensor:
    return advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages


def clip_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *, eps_low: float,
                   eps_high: float, level: str = "token") -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) on the ratio of `level`:

        w = exp(log_importance_weights(...))          token: r_it;  sequence: GSPO's s_i (eq. 5)
        token_loss_it = -min(w A_i, clip(w, 1 - eps_low, 1 + eps_high) A_i)

    With level "token" this is `losses.policy.ppo_clip_loss`; with "sequence" it is GSPO: one ratio
    and one clip decision per sequence, broadcast over its tokens, so the per-sequence mean (`grpo`
    aggregation) is GSPO's objective. Metrics: `clip_frac` (masked tokens whose clipped term is chosen
    and differs), `ratio_mean` (masked mean of w).
    """
    w = torch.exp(log_importance_weights(logps, old_logps, mask, level))
    adv = _adv(advantages)
    unclipped = w * adv
    clipped = torch.clamp(w, 1.0 - eps_low, 1.0 + eps_high) * adv
    token_loss = _zero_outside(-torch.minimum(unclipped, clipped).expand_as(mask), mask)
    is_clipped = (clipped < unclipped).to(logps.dtype).expand_as(mask).detach()
    return token_loss, {"clip_frac": masked_mean(is_clipped, mask),
                        "ratio_mean": masked_mean(w.detach().expand_as(mask), mask)}


def cispo_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *, max_weight: float,
                    level: str = "token") -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax 2025, "MiniMax-M1", eq. 4-5): clip the importance weight, not the update, and
    keep every token's gradient (REINFORCE weighted by a capped, detached ratio):

        token_loss_it = -sg(min(w, max_weight)) * A_i * logp_it

    `max_weight` is the paper's 1 + eps_high^IS (ScaleRL's eps_max; TRL 1.16's `epsilon_high` for
    cispo, recommended 5.0); the paper sets no lower bound, nor does this. Gradient per token:
    -min(w, max_weight) * A_i * d logp_it, never zero (unlike the PPO clip). Metrics: `clip_frac` (masked
    tokens with w > max_weight), `ratio_mean`.
    """
    if not max_weight > 0:
        raise ValueError(f"cispo_max_weight must be > 0, got {max_weight}")
    w = torch.exp(log_importance_weights(logps, old_logps, mask, level)).detach()
    capped = torch.clamp(w, max=max_weight)
    token_loss = _zero_outside(-(capped * _adv(advantages)) * logps, mask)
    return token_loss, {"clip_frac": masked_mean((w > max_weight).to(logps.dtype).expand_as(mask), mask),
                        "ratio_mean": masked_mean(w.expand_as(mask), mask)}


def sapo_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *, tau_pos: float,
                   tau_neg: float, level: str = "token") -> tuple[Tensor, dict[str, Tensor]]:
    """SAPO (Gao et al. 2025, "Soft Adaptive Policy Optimization", arXiv 2511.20347): a smooth gate in
    place of the hard clip,

        f(w) = sigmoid(tau (w - 1)) * 4 / tau,    token_loss_it = -f(w) * A_i,
        tau = tau_pos where A_i > 0, tau_neg otherwise (TRL 1.16's defaults 1.0 and 1.05).

    On-policy (w = 1) the gradient is that of -w A (f'(1) = 1); far from 1 it fades smoothly instead of
    dropping to zero. Metrics: `clip_frac` 0 (nothing is hard-clipped), `ratio_mean`.
    """
    if not (tau_pos > 0 and tau_neg > 0):
        raise ValueError(f"sapo temperatures must be > 0, got tau_pos={tau_pos}, tau_neg={tau_neg}")
    w = torch.exp(log_importance_weights(logps, old_logps, mask, level))
    adv = _adv(advantages)
    tau = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    gate = torch.sigmoid(tau * (w - 1.0)) * 4.0 / tau
    token_loss = _zero_outside(-(gate * adv).expand_as(mask), mask)
    return token_loss, {"clip_frac": torch.zeros((), device=logps.device),
                        "ratio_mean": masked_mean(w.detach().expand_as(mask), mask)}


SURROGATES: dict[str, Surrogate] = {"clip": clip_surrogate, "cispo": cispo_surrogate, "sapo": sapo_surrogate}

LOSS_TYPES: dict[str, tuple[str, Aggregation]] = {
    **{name: ("clip", agg) for name, agg in AGGREGATIONS.items()},
    "cispo": ("cispo", AGGREGATIONS["dapo"]),  # token sum / tokens of the step, as MiniMax-M1 and TRL
    "sapo": ("sapo", AGGREGATIONS["grpo"]),    # per-sequence mean, as TRL
}
"""`loss_type` -> (surrogate name in SURROGATES, aggregation)."""
