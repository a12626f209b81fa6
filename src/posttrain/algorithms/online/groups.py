"""Group-relative advantages of a round (GRPO and its variants): `n` samples of a prompt are contiguous
rows (as `Rollouts` lays them out), and their rewards become advantages group by group:

- a reward of None ("could not score") removes its row from training; the rest of the group is
  compared among itself (a group with fewer than 2 scored rows carries no signal: advantage 0);
- a group whose scored rewards are all equal has advantage 0 for every row ("zero-std"); with
  `filter_zero_std_groups` its rows are dropped from the step instead (DAPO's dynamic-sampling filter,
  without re-sampling), unless that would leave this process nothing to train on.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Estimator = Callable[[Tensor, int], Tensor]   # rewards [N] (contiguous groups), group size -> advantages [N]


def grouped_advantages(rewards: list[float | None], group_size: int, estimator: Estimator
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Advantages of contiguous groups of `group_size` rows, scored rows only.

    Returns `(advantages [N] float32, scored [N] bool, zero_std [N // group_size] bool)`: unscored rows
    (None) get advantage 0; a group is zero-std when it has fewer than 2 scored rows or all its scored
    rewards are equal, and then all its advantages are exactly 0. Full groups go through `estimator`
    in one call; a group with gaps is computed over its scored rows alone.
    """
    n = len(rewards)
    if group_size < 2 or n % group_size:
        raise ValueError(f"{n} rewards do not split into groups of {group_size} (group size must be >= 2)")
    scored = torch.tensor([r is not None for r in rewards])
    values = torch.tensor([0.0 if r is None else float(r) for r in rewards], dtype=torch.float32)
    adv = torch.zeros(n, dtype=torch.float32)
    grouped_scored = scored.view(-1, group_size)
    full = grouped_scored.all(dim=1)
    rows = torch.arange(n).view(-1, group_size)
    if full.any():
        idx = rows[full].reshape(-1)
        adv[idx] = estimator(values[idx], group_size).float()
    zero_std = torch.zeros(n // group_size, dtype=torch.bool)
    for g in range(n // group_size):
        sel = rows[g][grouped_scored[g]]
        if len(sel) < 2 or bool(values[sel].max() == values[sel].min()):
            zero_std[g] = True
            adv[rows[g]] = 0.0
        elif not full[g]:
            adv[sel] = estimator(values[sel], len(sel)).float()
    return adv, scored, zero_std


def kept_rows(scored: Tensor, zero_std: Tensor, group_size: int, filter_zero_std: bool) -> list[int]:
    """Rows that train: scored ones, minus zero-std groups when filtering. Falls back to every scored
    row when filtering would leave none, and to every row (all advantages 0) when none is scored, so a
    process always has a step to take part in."""
    keep = scored.clone()
    if filter_zero_std:
        keep &= ~zero_std.repeat_interleave(group_size)
        if not keep.any():
            keep = scored.clone()
    if not keep.any():
        keep = torch.ones_like(scored)
    return keep.nonzero().flatten().tolist()
