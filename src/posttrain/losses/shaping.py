"""Reward shaping on completion lengths: DAPO's soft overlong penalty.

Shapes: `[N]` per completion.
"""
from __future__ import annotations

import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, *, max_len: int, cache: int) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13), added to the task reward:

        R_len(y) = 0                                   if |y| <= L_max - L_cache
                   ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
                   -1                                   if |y| > L_max

    with L_max = `max_len` (the generation budget) and L_cache = `cache` (the soft band, tokens).
    A completion cut at the budget has |y| = L_max and gets -1 through the middle case; a penalty in
    (-1, 0) grows linearly over the band. `lengths` `[N]` (completion tokens) -> `[N]` float32.
    """
    if not 0 < cache <= max_len:
        raise ValueError(f"overlong_cache must be in (0, max_new_tokens={max_len}], got {cache}")
    lengths = lengths.to(torch.float32)
    start = float(max_len - cache)
    penalty = (start - lengths) / cache
    penalty = torch.where(lengths <= start, torch.zeros_like(lengths), penalty)
    return torch.where(lengths > max_len, torch.full_like(lengths, -1.0), penalty)

