"""SIGTERM to a 2-process torchrun SFT run (CPU, gloo): every process finishes the step, one complete
checkpoint is written, the run exits non-zero, and rerunning the same command resumes it. Slow (two
launches of two processes per case).

Cases: the launcher gets the signal (a scheduler's `kill PID`; torchrun forwards it to every worker), and
only the rank-1 worker gets it, so rank 0 learns of it through the engine's agreement (`_stop_requested`).
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from ..core.helpers import sft_overrides, write_sft_jsonl
from .common import ENV, torchrun

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _cmd(model_dir, data, out, steps, strategy):
    return torchrun(["-m", "posttrain", "sft"] + sft_overrides(model_dir, data, out, max_steps=steps, save_steps=0,
                                                                batch_size=2, threads=1) + [
        f"distributed.strategy={strategy}"])


def _worker_pid(launcher: int, local_rank: int) -> int:
    """The pid of the torchrun worker with LOCAL_RANK `local_rank` (a child of the launcher)."""
    with open(f"/proc/{launcher}/task/{launcher}/children") as f:
        for pid in f.read().split():
            with open(f"/proc/{pid}/environ", "rb") as env:
                if f"LOCAL_RANK={local_rank}".encode() in env.read().split(b"\0"):
                    return int(pid)
    raise AssertionError(f"no worker of local rank {local_rank} under {launcher}")


@pytest.mark.parametrize("target, strategy", [("launcher", "fsdp2"), ("rank1", "ddp")])
def test_sigterm_checkpoints_every_rank_then_rerun_resumes(tiny_model_dir, tmp_path, target, strategy):
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    out = str(tmp_path / "out")
    log = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen(_cmd(tiny_model_dir, data, out, 100000, strategy), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True)
    try:
        metrics = os.path.join(out, "metrics.jsonl")  # rank 0 logged step 1: both workers are in the loop
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not (os.path.exists(metrics)
                                                                      and os.path.getsize(metrics)):
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it was signalled"
        os.kill(proc.pid if target == "launcher" else _worker_pid(proc.pid, 1), signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.seek(0)
    err = log.read()
    assert proc.returncode != 0, err[-3000:]
    lines = [ln for ln in err.splitlines() if "interrupted at step" in ln]
    assert len(lines) == 1, err[-3000:]  # said once, by rank 0
    step = int(lines[0].split("interrupted at step ")[1].split(";")[0])
    if target == "rank1":
        assert "SIGTERM received by another process" in err  # rank 0 was not signalled itself
    ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert ckpts == [f"step-{step:08d}"], ckpts  # exactly one, complete, no temp folder left
    folder = os.path.join(out, "checkpoints", ckpts[0])
    assert os.path.exists(os.path.join(folder, "COMPLETE"))
    assert sorted(n for n in os.listdir(folder) if n.startswith("rng-rank")) == ["rng-rank0.pt", "rng-rank1.pt"]
    assert not os.path.exists(os.path.join(out, "final"))
    # the same command resumes there (max_steps may change on resume: one step more, to stay quick)
    res = subprocess.run(_cmd(tiny_model_dir, data, out, step + 1, strategy), env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count(f"resumed from {folder} (step {step})") == 1, res.stderr[-3000:]  # rank 0 says it
    assert os.path.isdir(os.path.join(out, "final"))
