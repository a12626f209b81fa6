"""What an algorithm tells the engine. Each algorithm is a small module implementing this."""
from __future__ import annotations

from typing import Any

import torch

from posttrain.losses.reduce import Normaliser, step_normaliser


class Algorithm:
    """Subclass and implement `setup`, `micro_batches` and `loss`; the rest has sensible defaults.

    The engine owns the model, optimizer, schedule, accumulation, clipping, logging and checkpoints.
    """

    name = "algorithm"
    plot_keys: tuple[str, ...] = ("loss", "eval/loss")
    # False: the engine zeroes every dropout of the model before `setup` (and so before any reference copy).
    # Needed where the maths compares forwards: DPO's log-ratios (log 2 at the start), GRPO/PPO importance
    # ratios across passes, a reward model's scores. TRL disables dropout in these trainers too.
    dropout: bool = True
    # True: float32 `nn.Linear` layers on a CPU may run on oneDNN (`core/fast_linear.py`; equal to MKL's results
    # to float rounding, ~2x faster on AMD CPUs with AVX-512); `fast_linear.onednn_pays` decides by CPU vendor and
    # AVX-512 (not on Intel, where MKL is as fast, nor without AVX-512, where MKL is faster). Every algorithm asks;
    # False keeps MKL whatever the CPU. See `core/speedups.py`.
    onednn_linear: bool = True

    def setup(self, engine) -> None:
        """Build data, reference models, rollout backends; `engine.model`/`engine.tokenizer` exist."""

    def micro_batches(self, step: int) -> list[Any]:
        """This process's micro-batches of optimizer step `step` (a deterministic function of the step
        and the algorithm state, so resume is exact)."""
        raise NotImplementedError(f"{type(self).__name__} must implement micro_batches")

    def loss(self, model, batch, norm: Normaliser) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch, already divided by the step's global counts `norm` (the engine builds
        it from `counts` of every micro-batch of every process; `norm.num_items` is the usual divisor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss")

    def counts(self, batch) -> tuple[float, float, float]:
        """(num_items, loss-carrying tokens, rows) of one micro-batch; the engine sums them over the step.
        `num_items` is the batch's own unit (`batch.num_items`), tokens are its `mask`'s sum."""
        mask = getattr(batch, "mask", None)
        items = float(batch.num_items)
        rows = getattr(batch, "num_sequences", batch.input_ids.shape[0])  # a packed batch is one row of many
        return items, float(mask.sum()) if mask is not None else items, float(rows)

    def max_len(self) -> int:
        """`Normaliser.max_len`: the generation budget of online algorithms; `max_length` otherwise."""
        return int(getattr(getattr(self, "cfg", None), "max_length", 1))

    def normaliser(self, batches) -> Normaliser:
        """The `Normaliser` of `batches` on this process alone (evaluation, tests); the engine's sums all."""
        items, tokens, rows = (sum(c) for c in zip(*(self.counts(b) for b in batches)))
        return step_normaliser(items, tokens, rows, self.max_len())

    def tokens(self, batch) -> int:
        """Non-padding tokens in the batch (for tokens/s)."""
        am = getattr(batch, "attention_mask", None)
        return int(am.sum()) if am is not None else int(batch.input_ids.numel())

    def evaluate(self, model) -> dict[str, float]:
        return {}

    def has_eval(self) -> bool:
        return False

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Hook after each optimizer step (e.g. adaptive KL control)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finish(self, engine) -> None:
        """After the last step and the final save (e.g. write eval.json)."""


class StepSampler:
    """Which rows each process uses at each optimizer step: a pure function of (seed, step).

    Global row position p = ((step * grad_accum + k) * world + rank) * batch_size + i; its epoch is
    p // N and its row is a seeded permutation of epoch. So 2 processes x batch 4 see exactly the rows
    of 1 process x batch 8, and a resumed run needs only the step number.
    """

    def __init__(self, n: int, batch_size: int, grad_accum: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        if n <= 0:
            raise ValueError("no training rows left after filtering")
        self.n, self.bs, self.ga, self.seed, self.rank, self.world, self.shuffle = (
            n, batch_size, grad_accum, seed, rank, world, shuffle)
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if self.shuffle:
                # epoch 0 is torch.randperm(n) under manual_seed(seed): the order TRL's sampler uses
                g = torch.Generator().manual_seed(self.seed + epoch * 1_000_003)
                self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            else:
                self._perms[epoch] = list(range(self.n))
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
        return self._perms[epoch]

    def positions(self, step: int) -> list[list[int]]:
        """The global row positions p (above) of this process's micro-batches at `step`: the same p on any
        number of processes names the same row (online algorithms seed each prompt's sampling by it)."""
        starts = [((step * self.ga + k) * self.world + self.rank) * self.bs for k in range(self.ga)]
        return [list(range(start, start + self.bs)) for start in starts]

    def micro_indices(self, step: int) -> list[list[int]]:
        return [[self._perm(p // self.n)[p % self.n] for p in part] for part in self.positions(step)]

    def epoch(self, step: int) -> float:
        return (step + 1) * self.ga * self.world * self.bs / self.n
