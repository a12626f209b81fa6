"""Policy-gradient maths: the PPO clipped surrogate, the clipped value loss, KL estimators, and the
aggregations that turn a `[B, T]` token loss into the scalar of one micro-batch.

Shapes: `[B, T]` per token (token-aligned log-probs, see core.batch), `mask` float 1 = completion token.
Token losses returned here are 0 wherever `mask == 0`; an aggregation from `AGGREGATIONS` reduces them.
Every aggregation divides by step-wide counts (`Normaliser`), so summing the losses of all
micro-batches of a step gives the full-batch loss (gradient accumulation 1x8 equals 8x1).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from posttrain.losses.reduce import Normaliser, masked_mean, masked_sum

Aggregation = Callable[[Tensor, Tensor, Normaliser], Tensor]


def _zero_outside(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def ppo_clip_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *,
                  eps_low: float, eps_high: float) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), per token, with the asymmetric clip range
    `[1 - eps_low, 1 + eps_high]` of DAPO's clip-higher (Yu et al. 2025; eps_low = eps_high is PPO):

        r_t = exp(logp_t - old_logp_t)
        token_loss_t = -min(r_t * A_t, clip(r_t, 1 - eps_low, 1 + eps_high) * A_t)

    Shapes: `logps`, `old_logps`, `mask` `[B, T]`; `advantages` `[B, T]`, or `[B]` (one advantage per
    sequence, GRPO) broadcast over the tokens. Returns `token_loss` `[B, T]`, 0 where `mask == 0`
    (the log-ratio is zeroed there first, so padding cannot overflow `exp`).
    Metrics (this micro-batch, detached): `clip_frac`, the fraction of masked tokens whose clipped term
    is the one chosen and differs from the unclipped term (A > 0 and r > 1 + eps_high, or A < 0 and
    r < 1 - eps_low; exactly the tokens with zero gradient); `ratio_mean`, the masked mean ratio.
    """
    if logps.shape != old_logps.shape or logps.shape != mask.shape:
        raise ValueError(f"logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(_zero_outside(logps - old_logps, mask))
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    token_loss = _zero_outside(-torch.minimum(unclipped, clipped), mask)
    is_clipped = (clipped < unclipped).to(logps.dtype).detach()
    metrics = {"clip_frac": masked_mean(is_clipped, mask), "ratio_mean": masked_mean(ratio.detach(), mask)}
    return token_loss, metrics


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *,
               clip: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss of PPO as in OpenAI baselines / TRL (not in the PPO paper itself):

        v_clip_t = old_v_t + clip(v_t - old_v_t, -clip, clip)
        token_loss_t = 0.5 * max((v_t - R_t)^2, (v_clip_t - R_t)^2)

    Shapes: all `[B, T]`; returns `token_loss` `[B, T]`, 0 where `mask == 0`, and metrics (this
    micro-batch, detached, masked means): `value_loss`; `vf_clip_frac`, the fraction of tokens whose
    clipped term is strictly larger (those get no gradient beyond the clip); `value_mean`.
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = _zero_outside(0.5 * torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
    with torch.no_grad():
        clipped = ((v_clipped - returns) ** 2 > (values - returns) ** 2).float()
        metrics = {"value_loss": masked_mean(loss, mask), "vf_clip_frac": masked_mean(clipped, mask),
                   "value_mean": masked_mean(values, mask)}
    return loss, metrics


def kl_k1(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Schulman's k1 estimator of KL(pi || ref) ("Approximating KL Divergence", 2020), per token:
    `k1 = logp - ref_logp`. Unbiased on samples from pi, high variance, can be negative. `[B, T]`."""
    return logps - ref_logps


def kl_k2(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Schulman's k2 estimator (2020): `k2 = 0.5 * (logp - ref_logp)^2`, per token, >= 0, biased,
    low variance; its gradient is the gradient of the true KL on samples from pi. `[B, T]`."""
    return 0.5 * (logps - ref_logps) ** 2


def kl_k3(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Schulman's k3 estimator (2020), GRPO's KL term (Shao et al. 2024, eq. 4), per token:
    `k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1`, unbiased and >= 0. `[B, T]`.
    No clamping: positions outside the mask must hold finite log-probs (0 by the batch convention)."""
    log_ratio = ref_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_aggregate(token_loss: Tensor, mask: Tensor, norm: Normaliser) -> Tensor:
    """GRPO's sequence-level mean (Shao et al. 2024, eq. 3): each sequence's token losses are averaged
    over its own masked tokens, then sequences are averaged:
    `sum_i (sum_t m_it l_it / sum_t m_it) / norm.num_seqs`. A row with an empty mask contributes 0.
    Shapes: `[B, T]` -> scalar."""
    return masked_mean(token_loss, mask, dim=-1).sum() / norm.num_seqs


def dr_grpo_aggregate(token_loss: Tensor, mask: Tensor, norm: Normaliser) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
    Perspective"): no per-sequence length
    normalisation, a constant denominator: `sum_it m_it l_it / (norm.num_seqs * norm.max_len)`, where
    `max_len` is the generation budget (max completion tokens), as TRL's `dr_grpo`. `[B, T]` -> scalar."""
    return masked_sum(token_loss, mask) / (norm.num_seqs * norm.max_len)


def dapo_aggregate(token_loss: Tensor, mask: Tensor, norm: Normaliser) -> Tensor:
    """DAPO's token-level policy-gradient loss (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement
    Learning System at Scale"): every token of the step weighs the same,
    `sum_it m_it l_it / norm.num_tokens` (num_tokens = masked tokens of the whole step).
    `[B, T]` -> scalar."""
    return masked_sum(token_loss, mask) / norm.num_tokens


def bnpo_aggregate(token_loss: Tensor, mask: Tensor, norm: Normaliser) -> Tensor:
    """Batch-normalised token mean, per MICRO-batch as TRL's `bnpo`: the token mean over the
    masked tokens of THIS micro-batch, scaled by this micro-batch's share of the step's sequences:

        (sum_it m_it l_it / sum_it m_it) * B / norm.num_seqs

    With one micro-batch per step this is the plain token mean. With several, the micro-batch means
    are averaged (weighted by rows), as TRL's bnpo divided by the accumulation steps; so unlike `dapo`
    it is NOT invariant to how a step is split into micro-batches. `[B, T]` -> scalar."""
    return masked_mean(token_loss, mask) * (token_loss.shape[0] / norm.num_seqs)


AGGREGATIONS: dict[str, Aggregation] = {
    "grpo": grpo_aggregate,
    "dr_grpo": dr_grpo_aggregate,
    "dapo": dapo_aggregate,
    "bnpo": bnpo_aggregate,
}
