"""Preference pairs packed padding-free: every sequence of a batch back to back in ONE row.

`pack_preference_collate` is the padding-free twin of `preference.preference_collate`: the same P chosen
sequences then P rejected ones, in the same order, concatenated into `input_ids [1, N]` (N = real tokens,
no padding) with position ids restarting at 0 for each sequence and no attention mask. The model must
attend within each sequence only: `core.varlen_attention` (`use_varlen(model)`) splits the row at every
position-id restart and runs causal attention per sequence, so no token attends across a seam and no
`[N, N]` mask is built. `seq_ids` names each position's sequence (for per-sequence sums of log-probs) and
`last_index` each sequence's last token (the reward model's read-out position). A sequence's first token
is its prompt's first token and never scored, so the seam's logit is never used.
"""
from __future__ import annotations

from typing import Sequence

import torch

from posttrain.core.batch import PreferenceBatch

from .preference import PreferenceExample, _ref_tensors


def pack_preference_collate(examples: Sequence[PreferenceExample], pad_id: int | None = None) -> PreferenceBatch:
    """Every pair of `examples` as one packed `PreferenceBatch` (chosen sequences, then rejected ones).
    `pad_id` is unused (nothing is padded); it is accepted so both collators share one signature."""
    if not examples:
        raise ValueError("pack_preference_collate needs at least one example")
    chosen = [ex.responses[c] for ex in examples for c, _ in ex.pairs]
    rejected = [ex.responses[r] for ex in examples for _, r in ex.pairs]
    seqs = chosen + rejected
    ids, pos, mask, owner, last = [], [], [], [], []
    for k, s in enumerate(seqs):
        n = len(s.input_ids)
        ids += s.input_ids
        pos += range(n)
        mask += s.mask
        owner += [k] * n
        last.append(len(ids) - 1)
    ref_chosen, ref_rejected = _ref_tensors(examples)
    return PreferenceBatch(
        input_ids=torch.tensor([ids], dtype=torch.long), attention_mask=None,
        mask=torch.tensor([mask], dtype=torch.float32),
        margin=torch.tensor([ex.margin for ex in examples for _ in ex.pairs], dtype=torch.float32),
        weight=torch.tensor([ex.weight for ex in examples for _ in ex.pairs], dtype=torch.float32),
        ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected,
        position_ids=torch.tensor([pos], dtype=torch.long), seq_ids=torch.tensor([owner], dtype=torch.long),
        last_index=torch.tensor(last, dtype=torch.long))


def choose_collate(model, padding_free: bool):
    """(collate function, packed?): the packed collator when `padding_free` and the model's attention can
    run per sequence (switching it to `sdpa_varlen`), else `preference_collate` (right padding)."""
    from posttrain.core.varlen_attention import use_varlen

    from .preference import preference_collate

    if padding_free and use_varlen(model):
        return pack_preference_collate, True
    return preference_collate, False
