"""SFT batches: right padding, or padding-free packing of many sequences into one row.

Packing contract (checked against transformers' `masking_utils`): with `attention_mask=None` and
`position_ids` that restart at 0 for each sequence, `find_packed_sequence_indices` splits the row
into its sequences and `create_causal_mask` builds a block-diagonal causal mask (sdpa, eager, flex;
flash-attention reads the same position ids as varlen boundaries). transformers skips that detection
when a KV cache exists, and Llama-style models create one whenever `use_cache` is true, which is their
config default; so the model MUST be called with `use_cache=False` on a packed batch, or tokens attend
across sequences. The first token of each packed sequence has mask 0 (nothing before it in its own
sequence), so the logit computed across the seam is never trained.
"""
from __future__ import annotations

import bisect
from typing import Sequence

import torch

from posttrain.core.batch import SFTBatch, pad_right

from .chat import Encoded


def _masks(examples: Sequence[Encoded], width: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    pos = [e.mask if not e.negative else [0] * len(e.mask) for e in examples]
    neg = [e.mask if e.negative else [0] * len(e.mask) for e in examples]
    return pad_right(pos, 0, width).float(), pad_right(neg, 0, width).float()


def pad_collate(examples: Sequence[Encoded], pad_id: int) -> SFTBatch:
    """[B, T] right-padded batch; position_ids 0..T-1 per row; attention_mask 1 on real tokens.
    A negative example's mask goes to `neg_mask`."""
    if not examples:
        raise ValueError("pad_collate needs at least one example")
    width = max(len(e.input_ids) for e in examples)
    input_ids = pad_right([e.input_ids for e in examples], pad_id, width)
    attention = pad_right([[1] * len(e.input_ids) for e in examples], 0, width)
    mask, neg_mask = _masks(examples, width)
    position_ids = torch.arange(width, dtype=torch.long).expand(len(examples), width).clone()
    return SFTBatch(input_ids=input_ids, position_ids=position_ids, mask=mask, neg_mask=neg_mask,
                    attention_mask=attention, num_rows=len(examples))


def pack_collate(examples: Sequence[Encoded], pad_id: int | None = None) -> SFTBatch:
    """All examples concatenated into ONE row [1, total]: position_ids restart at 0 for each example,
    attention_mask None (call the model with `use_cache=False`, see module docstring). No padding is
    needed, so `pad_id` is unused; it is accepted so both collators share one call signature."""
    if not examples:
        raise ValueError("pack_collate needs at least one example")
    ids = [t for e in examples for t in e.input_ids]
    positions = [p for e in examples for p in range(len(e.input_ids))]
    pos = [0 if e.negative else m for e in examples for m in e.mask]
    neg = [m if e.negative else 0 for e in examples for m in e.mask]
    return SFTBatch(input_ids=torch.tensor([ids], dtype=torch.long),
                    position_ids=torch.tensor([positions], dtype=torch.long),
                    mask=torch.tensor([pos], dtype=torch.float), neg_mask=torch.tensor([neg], dtype=torch.float),
                    attention_mask=None, num_rows=len(examples))


def pack_into_bins(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group example indices into packs of at most `max_tokens` tokens: best-fit decreasing (longest
    first, each into the fullest pack it fits), deterministic; each pack lists its indices ascending,
    packs in order of creation. A length over `max_tokens` is a `ValueError` naming the example."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"example {i} has {n} tokens, more than max_tokens={max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens left, bin index), sorted
    for i in order:
        k = bisect.bisect_left(free, (lengths[i], -1))
        if k == len(free):
            bins.append([i])
            bisect.insort(free, (max_tokens - lengths[i], len(bins) - 1))
            continue
        left, b = free.pop(k)
        bins[b].append(i)
        bisect.insort(free, (left - lengths[i], b))
    return [sorted(b) for b in bins]
