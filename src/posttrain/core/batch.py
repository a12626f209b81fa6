"""Typed batches. Shapes: B sequences, T tokens. `mask` is 1 where the token counts.

Token-aligned convention everywhere: position t of `*_logps` is log p(input_ids[:, t] | input_ids[:, :t]),
so `mask[:, t] = 1` means "the token at t is trained/scored"; position 0 is never trained.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


class _Movable:
    def to(self, device):
        """Same batch with every tensor moved to `device`."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})


@dataclass
class SFTBatch(_Movable):
    input_ids: Tensor                 # [B, T] long
    position_ids: Tensor              # [B, T] long; restarts at 0 for each packed row
    mask: Tensor                      # [B, T] float; 1 = positive trained token
    neg_mask: Tensor                  # [B, T] float; 1 = token of a negative (unlikelihood) completion
    attention_mask: Tensor | None = None  # [B, T]; None when packed (rows are told apart by position_ids)
    num_rows: int = 0                 # source rows in this batch

    @property
    def num_items(self) -> float:
        """Tokens that carry loss (positive + negative): the normaliser summed over an accumulated step."""
        return float(self.mask.sum() + self.neg_mask.sum())


@dataclass
class PreferenceBatch(_Movable):
    """Chosen rows then rejected rows stacked on one batch axis: rows [0, P) chosen, [P, 2P) rejected."""
    input_ids: Tensor                 # [2P, T] long, right-padded (packed: [1, N])
    attention_mask: Tensor | None     # [2P, T]; None when packed
    mask: Tensor                      # [2P, T] float; 1 = response token (scored)
    margin: Tensor                    # [P] float; rater margin (0 when absent)
    weight: Tensor                    # [P] float; per-pair weight (rankings: 1 / number of pairs of the prompt)
    ref_chosen_logps: Tensor | None = None    # [P] cached reference log-probs (precompute_ref)
    ref_rejected_logps: Tensor | None = None  # [P]
    # padding-free form (`data.packed_pairs`): input_ids/mask [1, N] holding the 2P sequences back to back,
    # attention_mask None, position ids restarting at 0 per sequence
    position_ids: Tensor | None = None        # [1, N] long
    seq_ids: Tensor | None = None             # [1, N] long: sequence (0..2P-1) of each position
    last_index: Tensor | None = None          # [2P] long: position of each sequence's last token in the row
    pred_index: Tensor | None = None          # [1, N] long: the position whose hidden state predicts each token
    num_tokens: int = 0                       # tokens of the 2P sequences (a shared prompt counted per sequence)
    # grouped form (`group_collate`, `pack_groups_collate`): the sequences are each row's distinct responses,
    # once each (S of them, not 2P); pair i compares sequence chosen_index[i] with rejected_index[i]
    chosen_index: Tensor | None = None        # [P] long
    rejected_index: Tensor | None = None      # [P] long

    @property
    def packed(self) -> bool:
        return self.position_ids is not None

    @property
    def num_sequences(self) -> int:
        if self.chosen_index is not None:
            return int(self.last_index.shape[0]) if self.last_index is not None else int(self.input_ids.shape[0])
        return 2 * self.num_pairs

    def row_ids(self) -> Tensor:
        """`[B, T]` sequence index of every position: `seq_ids` when packed, else the row."""
        if self.seq_ids is not None:
            return self.seq_ids
        b, t = self.input_ids.shape
        return torch.arange(b, device=self.input_ids.device)[:, None].expand(b, t)

    def last_positions(self) -> tuple[Tensor, Tensor]:
        """(row, column) of each sequence's last real token, for indexing `[B, T, ...]` tensors."""
        if self.last_index is not None:
            return torch.zeros_like(self.last_index), self.last_index
        last = self.attention_mask.sum(-1).long() - 1
        return torch.arange(last.shape[0], device=last.device), last

    @property
    def num_pairs(self) -> int:
        return int(self.margin.shape[0])

    @property
    def num_items(self) -> float:
        return float(self.weight.sum())


@dataclass
class RolloutBatch(_Movable):
    """Prompt + completion per row, right-padded. Completion tokens are the ones `mask` marks."""
    input_ids: Tensor                 # [B, T] long
    attention_mask: Tensor            # [B, T]
    mask: Tensor                      # [B, T] float; 1 = completion token
    old_logps: Tensor                 # [B, T] log-probs of the policy that sampled (0 outside mask)
    advantages: Tensor                # [B, T] (sequence advantages broadcast over tokens for GRPO)
    ref_logps: Tensor | None = None   # [B, T] reference log-probs when a KL term is used
    returns: Tensor | None = None     # [B, T] PPO value targets
    old_values: Tensor | None = None  # [B, T] PPO values at collection time

    @property
    def num_items(self) -> float:
        return float(self.mask.sum())


def pad_right(seqs: list[list[int]], pad: int, width: int | None = None) -> Tensor:
    """[len(seqs), width] long tensor, each sequence followed by `pad`."""
    width = width or max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
