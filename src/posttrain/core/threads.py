"""How many CPU threads torch uses: the cores this process may run on, shared by the local processes.

torch's own default is every core of the machine for every process, which oversubscribes a box that
runs several processes (data parallel, or other jobs): each process's threads then wait on the others.
"""
from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def local_processes() -> int:
    """Processes of this job on this machine (torchrun and accelerate set LOCAL_WORLD_SIZE)."""
    for var in ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"):
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return 1


def pick_threads(requested: int) -> tuple[int, str]:
    """(threads, why): `requested` when > 0, else OMP_NUM_THREADS when set, else cores / local processes."""
    if requested and requested > 0:
        return requested, "threads=" + str(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), f"OMP_NUM_THREADS={env}; override with threads=N"
    cores, procs = available_cores(), local_processes()
    return max(1, cores // procs), f"{cores} cores available / {procs} local process(es); override with threads=N"
