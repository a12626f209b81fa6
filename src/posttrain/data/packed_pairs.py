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
    return _packed_batch(examples, ids, pos, mask, owner, last, pred=None, num_tokens=len(ids))


def _shared_len(chosen, rejected) -> int:
    """Tokens the two sequences share before either's first scored token (their common prompt)."""
    limit = min(chosen.mask.index(1), rejected.mask.index(1))
    n = 0
    while n < limit and chosen.input_ids[n] == rejected.input_ids[n]:
        n += 1
    return n


def pack_shared_prefix(seqs: Sequence[list[int]], prefix_len: int, ids: list[int], pos: list[int],
                       pred: list[int]) -> list[int]:
    """Append `seqs`, which share their first `prefix_len` tokens, to a packed row as `[seq 0 whole, tail 1,
    tail 2, ...]` (the shared prefix once), extending `ids`, `pos` (position ids) and `pred` (per token,
    the packed index of the hidden state that predicts it) in place. Each tail's positions continue from
    the prefix, which `core.varlen_attention` reads as a branch attending to the prefix, and its first
    token is predicted from the prefix's last token. Returns where each sequence's own tokens start
    (sequence 0: where the prefix starts). A pair of `pack_shared_prompt_collate` is two sequences, a
    GRPO group (`algorithms.online.buffer`) is the G completions of one prompt."""
    root, starts = len(ids), []
    for k, seq in enumerate(seqs):
        frm = prefix_len if k else 0
        n, start = len(seq) - frm, len(ids)
        first = root + prefix_len - 1 if frm and prefix_len else start - 1
        pred += ([first] + list(range(start, start + n - 1)))[:n]
        ids += seq[frm:]
        pos += range(frm, len(seq))
        starts.append(start)
    return starts


def pack_shared_prompt_collate(examples: Sequence[PreferenceExample], pad_id: int | None = None) -> PreferenceBatch:
    """Every pair as `[prompt, chosen tail, rejected tail]` in one packed row: the prompt (the tokens both
    share before their first scored token) is computed once per pair. The rejected tail's position ids
    continue from the prompt, which `core.varlen_attention` reads as a branch (it attends to the prompt,
    not to the chosen tail); `pred_index` sends the rejected tail's first token to the prompt's last
    position. Sequence ids, `last_index` and the per-sequence results are those of
    `pack_preference_collate` (chosen k = sequence k, rejected k = sequence P + k)."""
    if not examples:
        raise ValueError("pack_shared_prompt_collate needs at least one example")
    pairs = [(ex.responses[c], ex.responses[r]) for ex in examples for c, r in ex.pairs]
    p = len(pairs)
    ids, pos, mask, owner, pred, last = [], [], [], [], [], [0] * (2 * p)
    for k, (ch, rj) in enumerate(pairs):
        s = _shared_len(ch, rj)
        pack_shared_prefix([ch.input_ids, rj.input_ids], s, ids, pos, pred)
        for seq, tail_from, who in ((ch, 0, k), (rj, s, p + k)):
            mask += seq.mask[tail_from:]
            owner += [who] * (len(seq.input_ids) - tail_from)
        last[k], last[p + k] = len(ids) - 1 - (len(rj.input_ids) - s), len(ids) - 1
    return _packed_batch(examples, ids, pos, mask, owner, last, pred=pred,
                         num_tokens=sum(len(c.input_ids) + len(r.input_ids) for c, r in pairs))


def _group_shared_len(responses) -> int:
    """Tokens all `responses` share before any one's first scored token (their common prompt)."""
    limit = min(r.mask.index(1) for r in responses)
    first = responses[0].input_ids
    n = 0
    while n < limit and all(r.input_ids[n] == first[n] for r in responses):
        n += 1
    return n


def pack_groups_collate(examples: Sequence[PreferenceExample], pad_id: int | None = None) -> PreferenceBatch:
    """Every RESPONSE of every example once, as `[prompt, tail 1, ..., tail K]` per example in one packed
    row (`pack_shared_prefix`: the prompt computed once, each tail a branch attending to it): a ranking of
    K costs its prompt plus K tails instead of K(K-1)/2 `[prompt, chosen, rejected]` triples. Sequence s
    is the s-th response laid end to end (`preference.group_indices` gives each pair's two), `last_index`
    its last token; margin and weight per pair as in `pack_shared_prompt_collate`."""
    if not examples:
        raise ValueError("pack_groups_collate needs at least one example")
    from .preference import group_indices

    ids, pos, mask, owner, pred, last, num_tokens = [], [], [], [], [], [], 0
    for ex in examples:
        s = _group_shared_len(ex.responses)
        starts = pack_shared_prefix([r.input_ids for r in ex.responses], s, ids, pos, pred)
        ends = starts[1:] + [len(ids)]
        for k, r in enumerate(ex.responses):
            tail_from = s if k else 0
            mask += r.mask[tail_from:]
            owner += [len(last)] * (len(r.input_ids) - tail_from)
            last.append(ends[k] - 1)
            num_tokens += len(r.input_ids)
    batch = _packed_batch(examples, ids, pos, mask, owner, last, pred=pred, num_tokens=num_tokens)
    batch.chosen_index, batch.rejected_index = group_indices(examples)
    batch.ref_chosen_logps = batch.ref_rejected_logps = None
    return batch


def _packed_batch(examples, ids, pos, mask, owner, last, *, pred, num_tokens: int) -> PreferenceBatch:
    """The one-row `PreferenceBatch` of a packed layout (`pred`: per-token prediction index, or None when
    every token is predicted from the one before it)."""
    ref_chosen, ref_rejected = _ref_tensors(examples)
    return PreferenceBatch(
        input_ids=torch.tensor([ids], dtype=torch.long), attention_mask=None,
        mask=torch.tensor([mask], dtype=torch.float32),
        margin=torch.tensor([ex.margin for ex in examples for _ in ex.pairs], dtype=torch.float32),
        weight=torch.tensor([ex.weight for ex in examples for _ in ex.pairs], dtype=torch.float32),
        ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected,
        position_ids=torch.tensor([pos], dtype=torch.long), seq_ids=torch.tensor([owner], dtype=torch.long),
        last_index=torch.tensor(last, dtype=torch.long),
        pred_index=None if pred is None else torch.tensor([pred], dtype=torch.long), num_tokens=num_tokens)


def choose_collate(model, padding_free: bool, share_prompt: bool = True):
    """(collate function, packed?): when `padding_free` and the model's attention can run per sequence
    (switching it to `sdpa_varlen`), the packed collator (with each pair's prompt computed once when
    `share_prompt`), else `preference_collate` (right padding)."""
    from posttrain.core.varlen_attention import use_varlen

    from .preference import preference_collate

    if padding_free and use_varlen(model):
        return (pack_shared_prompt_collate if share_prompt else pack_preference_collate), True
    return preference_collate, False
