"""Rollout importance-sampling correction: when the rollout engine's log-probs differ from the
trainer's for the same tokens (vLLM kernels, bf16 sampling, another precision), the samples come from
a slightly different policy than the one the loss differentiates. Weighting each token's loss by the
ratio trainer / sampler (truncated, or masked where it is extreme) corrects the bias.

Truncated IS (TIS: Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
Training"; the `token_truncate` / `sequence_truncate` modes of TRL 1.16 and verl) and masked IS (MIS,
the `*_mask` modes):

    rho_it = exp(trainer_logp_it - sampler_logp_it)                        token level   [B, T]
    rho_i  = exp(sum_t m_it (trainer_logp_it - sampler_logp_it))           sequence level [B, 1]
    truncate: w = clamp(rho, clip_min, clip_max)     mask: w = rho if clip_min <= rho <= clip_max else 0

The weight is detached (a constant of the loss), multiplies the surrogate's token loss, and is
computed once per round against the trainer's first-pass log-probs. Shapes: `[B, T]` in, mask float.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from posttrain.losses.reduce import masked_mean

IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def rollout_is_weights(trainer_logps: Tensor, sampler_logps: Tensor, mask: Tensor, *, mode: str,
                       clip_min: float | None = None, clip_max: float | None = 3.0
                       ) -> tuple[Tensor, dict[str, Tensor]]:
    """`(weights, metrics)`: detached weights `[B, T]` (token modes) or `[B, 1]` (sequence modes).

    `clip_min` / `clip_max` None = no bound on that side (TRL's defaults: None and 3.0). A sampler
    log-prob that is nan (the engine could not score the token) counts as no mismatch (ratio 1).
    Metrics, over the masked tokens (sequence modes: over the rows with at least one token):
    `is/ratio_mean`, `is/ratio_max` (of rho before truncation or masking), `is/frac_masked` (weights
    set to 0 by a mask mode), `is/frac_truncated` (weights changed by a truncate mode),
    `is/logp_diff_mean`, `is/logp_diff_max` (|trainer - sampler| per token).
    """
    if mode not in IS_MODES:
        raise ValueError(f"rollout_is_mode: expected one of {list(IS_MODES)}, found '{mode}'")
    if trainer_logps.shape != sampler_logps.shape or trainer_logps.shape != mask.shape:
        raise ValueError(f"trainer_logps {tuple(trainer_logps.shape)}, sampler_logps {tuple(sampler_logps.shape)} "
                         f"and mask {tuple(mask.shape)} must have the same shape")
    on = mask != 0
    diff = torch.nan_to_num(trainer_logps.detach() - sampler_logps.detach(), nan=0.0)
    diff = torch.where(on, diff, torch.zeros_like(diff))
    if mode.startswith("sequence"):
        log_rho, sel = diff.sum(-1, keepdim=True), on.any(-1, keepdim=True)
    else:
        log_rho, sel = diff, on
    rho = torch.exp(log_rho)
    lo = -math.inf if clip_min is None else clip_min
    hi = math.inf if clip_max is None else clip_max
    outside = (rho < lo) | (rho > hi)
    if mode.endswith("truncate"):
        weights = rho.clamp(min=clip_min, max=clip_max)
    else:
        weights = torch.where(outside, torch.zeros_like(rho), rho)
    rows = sel.to(rho.dtype)
    abs_diff = diff.abs()
    out_frac = masked_mean(outside.to(rho.dtype), rows)
    metrics = {
        "is/ratio_mean": masked_mean(rho, rows),
        "is/ratio_max": rho[sel].max() if bool(sel.any()) else torch.zeros((), device=rho.device),
        "is/frac_masked": out_frac if mode.endswith("mask") else torch.zeros_like(out_frac),
        "is/frac_truncated": out_frac if mode.endswith("truncate") else torch.zeros_like(out_frac),
        "is/logp_diff_mean": masked_mean(abs_diff, mask),
        "is/logp_diff_max": abs_diff[on].max() if bool(on.any()) else torch.zeros((), device=rho.device),
    }
    return weights, metrics
