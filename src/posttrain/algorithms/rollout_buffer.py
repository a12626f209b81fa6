"""GRPO's rollout buffer: one round of sampled groups turned into the micro-batches of a step.

A round is `len(prompts) * G` completions (G = group size, the `n` samples of a prompt are contiguous
rows, as `Rollouts` lays them out). Its rewards become advantages here, group by group:

- a reward of None ("could not score") removes its row from training; the rest of the group is
  compared among itself (a group with fewer than 2 scored rows carries no signal: advantage 0);
- a group whose scored rewards are all equal has advantage 0 for every row ("zero-std"); with
  `filter_zero_std_groups` its rows are dropped from the step instead (DAPO's dynamic-sampling filter,
  without re-sampling), unless that would leave this process nothing to train on.

The kept rows are split into `grad_accum` micro-batches (`GRPOBatch`: a `RolloutBatch` plus the
step's global `Normaliser`, so every loss aggregation divides by step-wide counts and gradient
accumulation 1x8 equals 8x1). `to_state` / `from_state` turn a round into plain tensors and numbers
for the checkpoint (loaded with `weights_only=True`), so a resume in the middle of a round continues
on the very same rollouts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import Tensor

from posttrain.core.batch import RolloutBatch, pad_right
from posttrain.losses.reduce import Normaliser

Estimator = Callable[[Tensor, int], Tensor]   # rewards [N] (contiguous groups), group size -> advantages [N]


@dataclass
class GRPOBatch(RolloutBatch):
    """A `RolloutBatch` (right-padded prompt + completion rows) with GRPO's step bookkeeping.

    `old_logps` [B, T] first holds the sampler's log-probs; on the first optimisation pass the loss
    replaces them by the trainer's own (detached) log-probs, so the first pass has ratio exactly 1 and
    later passes (`num_iterations > 1`) take ratios against the policy that sampled. `fresh` is True
    until that happened (and `is_weights` holds the rollout IS correction then computed, when configured).
    `norm` holds the global counts of the step (all micro-batches, all processes).
    """
    norm: Normaliser | None = None
    fresh: bool = True
    is_weights: Tensor | None = None  # [B, T] rollout importance-sampling weights, set on the first pass


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


def split_even(items: list[int], parts: int) -> list[list[int]]:
    """`items` cut into at most `parts` contiguous non-empty pieces whose sizes differ by at most 1."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def collate_rows(prompt_ids: list[list[int]], completion_ids: list[list[int]], completion_logps: list[list[float]],
                 advantages: Tensor, pad_id: int, device) -> GRPOBatch:
    """Right-padded `GRPOBatch` of prompt + completion rows (no `norm` yet).

    Token-aligned (core.batch): completion token j of a row sits at position len(prompt) + j, where
    `mask` is 1, `old_logps` holds its sampled log-prob and `advantages` the row's advantage.
    """
    seqs = [p + c for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(s) for s in seqs)
    input_ids = pad_right(seqs, pad_id, width)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.float32)
    old = torch.zeros((len(seqs), width), dtype=torch.float32)
    for i, (p, c, lp) in enumerate(zip(prompt_ids, completion_ids, completion_logps)):
        attention[i, : len(p) + len(c)] = 1
        mask[i, len(p): len(p) + len(c)] = 1.0
        old[i, len(p): len(p) + len(c)] = torch.tensor(lp, dtype=torch.float32)
    adv = advantages.float().view(-1, 1) * mask
    return GRPOBatch(input_ids=input_ids.to(device), attention_mask=attention.to(device), mask=mask.to(device),
                     old_logps=old.to(device), advantages=adv.to(device))


def with_norm(batches: list[GRPOBatch], num_tokens: float, num_seqs: float, max_len: int) -> list[GRPOBatch]:
    norm = Normaliser(max(num_tokens, 1.0), max(num_seqs, 1.0), max_len)
    for b in batches:
        b.norm = norm
    return batches


def to_state(batches: list[GRPOBatch]) -> list[dict]:
    """Plain (CPU tensors, numbers) form of a round's micro-batches, for `torch.save`."""
    out = []
    for b in batches:
        d = {f.name: getattr(b, f.name) for f in fields(b) if f.name not in ("norm", "fresh")}
        d = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in d.items()}
        d["fresh"] = b.fresh
        d["norm"] = [b.norm.num_tokens, b.norm.num_seqs, b.norm.max_len]
        out.append(d)
    return out


def from_state(state: list[dict], device) -> list[GRPOBatch]:
    out = []
    for d in state:
        d = dict(d)
        t, s, m = d.pop("norm")
        kw = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in d.items()}
        out.append(GRPOBatch(**kw, norm=Normaliser(float(t), float(s), int(m))))
    return out
