"""Trip 3: the default CPU threads come from the cores available and the local processes; printed; `threads`
overrides."""
import os

from posttrain.core import threads


def test_default_threads_share_available_cores_between_local_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    n, why = threads.pick_threads(0)
    assert n == 4 and "8 cores available / 2 local process(es)" in why and "threads=N" in why
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.pick_threads(0)[0] == 1          # never 0
    assert threads.pick_threads(3) == (3, "threads=3")  # the override wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.pick_threads(0)[0] == 2          # an explicit environment setting is respected


def test_available_cores_follows_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert 1 <= threads.available_cores() <= 3
