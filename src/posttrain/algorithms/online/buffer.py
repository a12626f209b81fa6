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
    packed_ids: Tensor | None = None    # [1, N] the rows packed padding-free, each group's prompt once
    packed_pos: Tensor | None = None    # [1, N] their position ids (a group's later rows branch off its prompt)
    scored_pred: Tensor | None = None   # [K] packed index of the hidden state predicting each completion token
    scored_dest: Tensor | None = None   # [K] that token's flat index in the padded [B, T] layout


def pack_rows(prompt_ids: list[list[int]], completion_ids: list[list[int]], width: int) -> dict[str, Tensor]:
    """The RoundBatch fields of the padding-free layout of rows `prompt + completion` (padded width
    `width`): consecutive rows with the same prompt (a GRPO group) as `[prompt, completion 1, completion
    2, ...]` with the prompt computed once (`data.packed_pairs.pack_shared_prefix`; attention per sequence
    by `core.varlen_attention`), plus where each completion token is predicted from and where its
    log-prob goes in the padded `[B, T]` layout the loss reads."""
    from posttrain.data.packed_pairs import pack_shared_prefix

    ids, pos, pred, from_, dest = [], [], [], [], []
    r = 0
    while r < len(prompt_ids):
        end = r + 1
        while end < len(prompt_ids) and prompt_ids[end] == prompt_ids[r]:
            end += 1
        p = len(prompt_ids[r])
        starts = pack_shared_prefix([prompt_ids[i] + completion_ids[i] for i in range(r, end)], p, ids, pos, pred)
        for k, i in enumerate(range(r, end)):
            first = starts[k] + (p if k == 0 else 0)          # packed index of completion token 0
            from_ += pred[first:first + len(completion_ids[i])]
            dest += range(i * width + p, i * width + p + len(completion_ids[i]))
        r = end
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return {"packed_ids": as_long([ids]), "packed_pos": as_long([pos]), "scored_pred": as_long(from_),
            "scored_dest": as_long(dest)}


def packed_token_logps(model, batch: RoundBatch, *, chunk_size: int = 0, temperature: float = 1.0):
    """`(logps, entropy)` `[B, T]` float32 of a packed `RoundBatch`, token-aligned as `core.logprobs.token_logps`
    gives them for its padded rows, at the completion tokens (0 elsewhere: the loss reads them through `mask`
    only). One forward of the packed row (the model on `sdpa_varlen`); the head at completion tokens only."""
    from posttrain.core.logprobs import hidden_states, selected_logps
    from posttrain.core.strategy import call_root

    def run(m):
        hidden = hidden_states(m, batch.packed_ids, None, batch.packed_pos)
        targets = batch.input_ids.reshape(-1).index_select(0, batch.scored_dest)
        return selected_logps(m, hidden, batch.scored_pred, targets, chunk_size=chunk_size, temperature=temperature,
                              with_entropy=True)

    lp, ent = call_root(model, run)
    shape, zeros = batch.mask.shape, batch.mask.new_zeros(batch.mask.numel())
    return (zeros.index_copy(0, batch.scored_dest, lp).view(shape),
            zeros.index_copy(0, batch.scored_dest, ent).view(shape))


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
                 advantages: Tensor, pad_id: int, device, packed: bool = False) -> RoundBatch:
    """`RoundBatch` of rows with one advantage each (broadcast over the row's completion tokens) and
    the sampled log-probs as `old_logps`; with `packed`, also the padding-free layout (`pack_rows`)."""
    ids, attention, mask = collate_rollouts(prompt_ids, completion_ids, pad_id, "cpu")
    old = torch.zeros(mask.shape, dtype=torch.float32)
    for i, (p, lp) in enumerate(zip(prompt_ids, completion_logps)):
        old[i, len(p): len(p) + len(lp)] = torch.tensor(lp, dtype=torch.float32)
    adv = advantages.float().view(-1, 1) * mask
    extra = pack_rows(prompt_ids, completion_ids, ids.shape[1]) if packed else {}
    return RoundBatch(input_ids=ids.to(device), attention_mask=attention.to(device), mask=mask.to(device),
                      old_logps=old.to(device), advantages=adv.to(device), **{k: v.to(device) for k, v in extra.items()})


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
