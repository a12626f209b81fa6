"""core/allocator.py: glibc serves torch's big CPU buffers from its heap and keeps freed memory there, so a
training step's activations are not mapped (and faulted in page by page) anew every step.

Each check runs in a fresh interpreter: the thresholds are process-wide and set once."""
import os
import subprocess
import sys

import pytest

from posttrain.core.allocator import _running_glibc

pytestmark = pytest.mark.skipif(not _running_glibc(), reason="mallopt thresholds are glibc's")

# For float32 tensors of 1, 16 and 30 MiB: by how many MiB glibc's mmapped blocks and its heap grew while the
# tensor was alive, and by how much the heap changed when it was freed (glibc's `mallinfo2`).
_PROBE = """
import ctypes, sys, torch
from posttrain.core.allocator import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
info = ctypes.CDLL(None).mallinfo2
info.restype = Info
if sys.argv[1] == "keep":
    print(keep_freed_memory(), keep_freed_memory())
for mib in (1, 16, 30):
    a = info(); t = torch.ones(mib << 18); b = info(); del t; c = info()
    print((b.hblkhd - a.hblkhd) >> 20, (b.arena - a.arena) >> 20, (c.arena - b.arena) >> 20)
"""


def _probe(mode: str, env_extra: dict | None = None) -> list[str]:
    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return out.stdout.splitlines()


def test_big_buffers_come_from_the_heap_and_stay_there():
    said, *rows = _probe("keep")
    assert said == "True True"     # set, and the second call is a no-op that says so
    mapped, grown, after_free = zip(*(map(int, r.split()) for r in rows))
    assert mapped == (0, 0, 0)       # none of them mmapped on its own
    assert after_free == (0, 0, 0)   # the heap keeps what was freed, for the next step
    assert sum(grown) >= 30          # the heap grew to hold them (by 30 MiB, or 14 when the freed 16 MiB is reused)


def test_glibc_defaults_map_each_big_buffer_on_its_own():
    # the control: in a fresh process glibc mmaps anything above 128 KiB (and unmaps it when freed)
    assert _probe("plain") == ["1 0 0", "16 0 0", "30 0 0"]


def test_posttrain_malloc_system_leaves_glibc_defaults():
    said, *rows = _probe("keep", {"POSTTRAIN_MALLOC": "system"})
    assert said == "False False"
    assert rows == ["1 0 0", "16 0 0", "30 0 0"]


def test_the_engine_keeps_freed_memory_when_it_trains_on_a_cpu(tiny_model_dir, tmp_path, monkeypatch):
    from posttrain.algorithms.sft import SFT, SFTConfig
    from posttrain.config import load_config
    from posttrain.core import allocator
    from posttrain.core.engine import Engine

    from .helpers import sft_overrides, write_sft_jsonl

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=8)
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, str(tmp_path / "out")))
    Engine(cfg, SFT(cfg))
    assert calls == [1]
