"""Masked reductions and the step-wide normaliser shared by every loss.

Masks are float, 1 = the element counts, 0 = it does not. Elements where the mask is 0 never reach the
result, even when they hold inf or nan (padding), because the reductions select with `torch.where`
instead of multiplying by the mask alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `x * mask`, over all elements (`dim=None`, 0-dim result) or along `dim`.

    Shapes: `x` and `mask` broadcastable, e.g. both `[B, T]`. Positions with `mask == 0` contribute
    exactly 0 (and no gradient), whatever `x` holds there.
    """
    weighted = torch.where(mask != 0, x * mask, torch.zeros((), dtype=x.dtype, device=x.device))
    return weighted.sum() if dim is None else weighted.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """`masked_sum(x, mask, dim) / mask.sum(dim)`; 0 where the mask is empty (never nan).

    Shapes: `x`, `mask` `[B, T]` -> 0-dim tensor (`dim=None`) or `[B]` (`dim=-1`).
    """
    x, mask = torch.broadcast_tensors(x, mask.to(x.dtype))
    count = mask.sum() if dim is None else mask.sum(dim)
    safe = torch.where(count != 0, count, torch.ones_like(count))
    return masked_sum(x, mask, dim) / safe


@dataclass(frozen=True)
class Normaliser:
    """Global counts of ONE optimiser step (all micro-batches, all processes), built by the engine for
    every algorithm (`core.engine`, from each micro-batch's `Algorithm.counts`) and passed to its `loss`.

    num_tokens: loss-carrying tokens (sum of the masks) in the step.
    num_seqs:   sequences (rows) in the step.
    max_len:    the generation budget in tokens (max completion length), Dr. GRPO's constant.
    num_items:  the algorithm's own unit (`batch.num_items`: SFT tokens, DPO/RM pair weights, PPO
                completion tokens); None where no one set it (then a loss that needs it fails loudly).
    Dividing a micro-batch's loss sum by these counts makes the summed micro-batch losses equal the
    full-batch loss, so gradient accumulation 1x8 equals 8x1.
    """

    num_tokens: float
    num_seqs: float
    max_len: int
    num_items: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_tokens", "num_seqs", "max_len", "num_items"):
            value = getattr(self, name)
            if name == "num_items" and value is None:
                continue
            if not value > 0:
                raise ValueError(f"Normaliser.{name} must be > 0, got {value!r}")


def step_normaliser(num_items: float, num_tokens: float, num_seqs: float, max_len: int) -> Normaliser:
    """The `Normaliser` of a step from its summed counts; empty counts are clamped (items to 1e-8,
    tokens and rows to 1) so a step with nothing to train on divides by a positive number."""
    return Normaliser(num_tokens=max(num_tokens, 1.0), num_seqs=max(num_seqs, 1.0), max_len=max_len,
                      num_items=max(num_items, 1e-8))
