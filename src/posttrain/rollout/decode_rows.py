"""The decode batch of `hf.HFBackend._lean_chunk` on `lean.LeanLlama`: which rows are live, their next tokens,
positions, key mask and KV cache, the outputs so far, and the compaction of finished rows."""
from __future__ import annotations

import torch
from torch import Tensor

from .lean import with_views

COMPACT = 0.75   # `hf.HFBackend._lean_chunk` compacts its batch when at most this share of its rows is live


class DecodeRows:
    """The decode batch of `hf.HFBackend._lean_chunk`: `rows` (each batch row's output row), which are `live`
    (None: all), the next `tokens`, positions `pos`, additive key mask `keys` (None: none), KV `cache` (per
    layer, `LeanLlama.new_cache`), and the outputs
    [step, output row] `out_tok` / `out_lp` with each output row's `length`."""

    def __init__(self, keys: Tensor | None, pos: Tensor, cache: list, budget: int, pad_id: int):
        rows = len(pos)
        self.keys, self.pos, self.cache, self.live, self.tokens = keys, pos, cache, None, None
        self.full = True   # every row of the chunk still in the batch (no compaction yet)
        self.rows = torch.arange(rows, device=pos.device)
        self.out_tok = torch.full((budget, rows), pad_id, dtype=torch.long, device=pos.device)
        self.out_lp = torch.zeros((budget, rows), dtype=torch.float32, device=pos.device)
        self.length = torch.full((rows,), budget, dtype=torch.long, device=pos.device)

    def uniforms(self, us: Tensor | None, step: int, generator, params) -> tuple:
        """(generator, u) for `sample_next`: the rows' own stream values, or with finished rows in the batch,
        the generator's draws for the live rows only (as the transformers path, which drops them, draws)."""
        if us is not None:
            return None, us[step] if self.full else us[step].index_select(0, self.rows.cpu())
        if self.live is None or params.greedy:
            return generator, None
        u = torch.zeros(len(self.rows), device=self.rows.device)
        u[self.live] = torch.rand(int(self.live.sum()), generator=generator, device=self.rows.device)
        return None, u

    def record(self, step: int, tokens: Tensor, lps: Tensor) -> None:
        self.tokens = tokens
        if self.full:
            self.out_tok[step], self.out_lp[step] = tokens, lps
        else:
            self.out_tok[step].index_copy_(0, self.rows, tokens)
            self.out_lp[step].index_copy_(0, self.rows, lps)

    def finish(self, step: int, done: Tensor) -> bool:
        """Rows that sampled an end at `step`; True when no row is left."""
        if self.live is not None:
            done = done & self.live
            if not bool(done.any()):
                return False
        self.length[self.rows[done]] = step + 1
        self.live = ~done if self.live is None else self.live & ~done
        live = int(self.live.sum())
        if live == 0:
            return True
        if live <= COMPACT * len(self.rows):
            self.compact(torch.nonzero(self.live).squeeze(1))
        return False

    def compact(self, keep: Tensor) -> None:
        self.rows, self.tokens, self.pos, self.full = self.rows[keep], self.tokens[keep], self.pos[keep], False
        self.keys = None if self.keys is None else self.keys[keep]
        self.cache = [with_views(kv[keep]) for kv, _, _ in self.cache]
        self.live = None
