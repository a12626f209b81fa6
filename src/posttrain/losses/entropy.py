"""Entropy control for policy-gradient losses: train only on the high-entropy "forking" tokens, and an
optional entropy bonus.

Shapes: `entropy`, `mask` `[B, T]` (token-aligned, mask float 1 = completion token).
"""
from __future__ import annotations

import torch
from torch import Tensor

from posttrain.losses.reduce import Normaliser, masked_sum


def top_entropy_mask(entropy: Tensor, mask: Tensor, quantile: float) -> Tensor:
    """The top-`quantile` share of the masked tokens by entropy (Wang et al. 2025, "Beyond the 80/20
    Rule: High-Entropy Minority Tokens Drive Effective RL for LLM Reasoning", sec. 4; TRL 1.16's
    `top_entropy_quantile`, rho there):

        threshold = torch.quantile(entropy[mask], 1 - quantile)   (linear interpolation)
        keep_t = mask_t and entropy_t >= threshold

    over all the masked tokens of the batch given (the paper's batch-level choice, as TRL: per micro-
    batch). quantile 1.0 keeps every masked token; 0.0 keeps only the highest-entropy one(s).
    Returns a float mask `[B, T]` (detached), 0 wherever `mask == 0`; all zeros if `mask` is empty.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in [0, 1], got {quantile}")
    on = mask != 0
    if quantile >= 1.0 or not bool(on.any()):
        return on.to(entropy.dtype)
    ent = entropy.detach().float()
    threshold = torch.quantile(ent[on], 1.0 - quantile)
    return (on & (ent >= threshold)).to(entropy.dtype)


def entropy_bonus(entropy: Tensor, mask: Tensor, norm: Normaliser, coef: float) -> Tensor:
    """`-coef * sum_t m_t H_t / norm.num_tokens`: the term added to the loss to reward entropy (Williams
    & Peng 1991; Mnih et al. 2016, "A3C", eq. after 7). With the step-wide token count as denominator the
    micro-batch terms add up to `-coef` times the step's mean token entropy, so accumulation is exact.
    `entropy` must carry gradients for the bonus to act. `[B, T]` -> scalar.
    """
    return -coef * masked_sum(entropy, mask) / norm.num_tokens
