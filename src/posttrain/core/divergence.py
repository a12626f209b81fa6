"""Is a finished run fit to be saved as the final model? A diverged run is not a success.

The engine asks `divergence_problems` before the final save. A run is refused when
  - the last step's loss is not finite;
  - any trainable weight is not finite;
  - more than `max_skipped_fraction` of all steps were skipped as non-finite, and at least
    `min_skipped_steps` were: in a short run one or two skips are a large share but no sign of a
    diverged run (a skipped step leaves the weights untouched, which the other checks still see, and a
    streak of skips aborts the run earlier: `max_consecutive_skips`). With the defaults (0.1, 3) the two
    rules differ only for runs under 20 steps (1 or 2 skips there); from 20 steps on, a share over 10%
    is at least 3 skips;
  - the largest trainable weight grew more than `max_weight_growth` times (relative to
    max(initial largest weight, 1)): e.g. learning_rate=1e6 leaves weights of 1e6 and a loss near
    uniform that is still finite, which the first three checks cannot see.
"""
from __future__ import annotations

import math

import torch


def abs_max(params) -> float:
    """Largest |w| over `params` (nan when any weight is nan, inf when any is inf). Sharded (fsdp2)
    parameters count their local shard, and the result is the maximum over every process (a collective
    then: all processes call it), so all of them take the same decision."""
    best, sharded = 0.0, False
    with torch.no_grad():
        for p in params:
            if hasattr(p, "to_local"):
                p, sharded = p.to_local(), True
            if p.numel():
                m = float(p.detach().abs().max())
                if not math.isfinite(m):
                    best = m
                    break
                best = max(best, m)
    if sharded:
        import torch.distributed as dist

        t = torch.tensor([best if not math.isnan(best) else math.inf, float(math.isnan(best))], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return math.nan if t[1] > 0 else float(t[0])
    return best


def nonfinite_names(named_params, limit: int = 3) -> tuple[int, list[str]]:
    """(how many tensors hold a nan or inf, the first `limit` of their names)."""
    bad = []
    with torch.no_grad():
        for name, p in named_params:
            p = p.to_local() if hasattr(p, "to_local") else p  # a shard (fsdp2): this process's part
            if p.numel() and not bool(torch.isfinite(p.detach()).all()):
                bad.append(name)
    return len(bad), bad[:limit]


def divergence_problems(*, model, last_loss: float | None, skipped: int, steps: int, init_abs_max: float | None,
                        max_skipped_fraction: float, max_weight_growth: float,
                        min_skipped_steps: int) -> list[str]:
    """Why the run's final weights must not be saved (empty when they may)."""
    problems = []
    if last_loss is not None and not math.isfinite(last_loss):
        problems.append(f"the last step's loss is {last_loss}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    count, names = nonfinite_names(named)
    if any(hasattr(p, "to_local") for _, p in named):  # sharded: every process must see the same answer
        import torch.distributed as dist

        t = torch.tensor([float(count)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        count, names = int(t[0]), names or ["on another process"]
    if count:
        problems.append(f"{count} weight tensor(s) hold nan or inf (e.g. {', '.join(names)})")
    if steps > 0 and skipped / steps > max_skipped_fraction and skipped >= min_skipped_steps:
        problems.append(f"{skipped} of {steps} steps ({100 * skipped / steps:.0f}%) were skipped as non-finite "
                        f"(max_skipped_fraction {max_skipped_fraction}, min_skipped_steps {min_skipped_steps})")
    if not count and max_weight_growth > 0 and init_abs_max is not None and math.isfinite(init_abs_max):
        now, base = abs_max(p for _, p in named), max(init_abs_max, 1.0)
        if now > max_weight_growth * base:
            problems.append(f"the largest weight grew from {init_abs_max:.3g} to {now:.3g} (more than "
                            f"max_weight_growth={max_weight_growth:g} times)")
    return problems
