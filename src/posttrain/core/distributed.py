"""Collectives the algorithms need beside the engine's gradient sync: sums and maxima of a few numbers
over all processes. With one process (or no process group) they return their input unchanged, so the
same code runs on a laptop and under `accelerate launch` / `torchrun`."""
from __future__ import annotations

import torch
import torch.distributed as dist

OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """`values` combined element-wise over every process (`op`: sum, max or min), as float64.
    A collective call: every process must make it, with a list of the same length."""
    if op not in OPS:
        raise ValueError(f"all_reduce: op must be one of {sorted(OPS)}, got {op!r}")
    if not is_distributed():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, OPS[op]))
    return t.tolist()
