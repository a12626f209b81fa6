"""A round of rollouts as tensors: right-padded prompt + completion rows, the micro-batches a step
trains on, and the plain form a checkpoint stores so a resume in the middle of a round continues on
the very same rollouts (loaded with `weights_only=True`)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from posttrain.core.batch import RolloutBatch, pad_right


@dataclass
class RoundBatch(RolloutBatch):
    """A micro-batch of a round whose `old_logps` first hold the sampler's log-probs; on the first
    optimisation pass the loss replaces them by the trainer's own (detached) log-probs, so that pass
    has ratio exactly 1 and later passes take ratios against the policy that sampled. `fresh` is True
    until that happened (and `is_weights` [B, T] holds the rollout IS correction then computed, if any)."""
    fresh: bool = True
    is_weights: Tensor | None = None


def collate_rollouts(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, device,
                     trained: list[bool] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """`(input_ids [B, T] long, attention_mask [B, T] long, mask [B, T] float32)` of prompt + completion
    rows, right-padded to the longest. Token-aligned (core.batch): completion token j of a row sits at
    position len(prompt) + j, where `mask` is 1, unless `trained[row]` is False (then its mask is 0)."""
    ids = pad_right([p + c for p, c in zip(prompt_ids, completion_ids)], pad_id).to(device)
    attention = torch.zeros_like(ids)
    mask = torch.zeros(ids.shape, dtype=torch.float32, device=device)
    for r, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        attention[r, : len(p) + len(c)] = 1
        if trained is None or trained[r]:
            mask[r, len(p): len(p) + len(c)] = 1.0
    return ids, attention, mask


def collate_rows(prompt_ids: list[list[int]], completion_ids: list[list[int]], completion_logps: list[list[float]],
                 advantages: Tensor, pad_id: int, device) -> RoundBatch:
    """`RoundBatch` of rows with one advantage each (broadcast over the row's completion tokens) and
    the sampled log-probs as `old_logps`."""
    ids, attention, mask = collate_rollouts(prompt_ids, completion_ids, pad_id, "cpu")
    old = torch.zeros(mask.shape, dtype=torch.float32)
    for i, (p, lp) in enumerate(zip(prompt_ids, completion_logps)):
        old[i, len(p): len(p) + len(lp)] = torch.tensor(lp, dtype=torch.float32)
    adv = advantages.float().view(-1, 1) * mask
    return RoundBatch(input_ids=ids.to(device), attention_mask=attention.to(device), mask=mask.to(device),
                      old_logps=old.to(device), advantages=adv.to(device))


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


def to_state(batches: list) -> list[dict]:
    """Plain form (CPU tensors, numbers, None) of a round's batches (dataclasses), for `torch.save`."""
    return [{f.name: (v.detach().cpu() if isinstance(v := getattr(b, f.name), Tensor) else v) for f in fields(b)}
            for b in batches]


def from_state(state: list[dict], cls, device) -> list:
    """The batches of `to_state`, as `cls` instances with their tensors on `device`."""
    return [cls(**{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in d.items()}) for d in state]
