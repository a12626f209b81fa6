"""Trip 8: Ctrl-C / SIGTERM finish the step, write an atomic checkpoint, say how to resume, exit non-zero;
a second Ctrl-C aborts at once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine
from posttrain.core.signals import StopFlag, TrainingInterrupted

from .helpers import sft_overrides, write_sft_jsonl


def test_first_signal_sets_flag_second_ctrl_c_aborts_handlers_restored():
    before = signal.getsignal(signal.SIGINT)
    with StopFlag(say=lambda m: None) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # flag only: the process lives on
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_another_process_received_is_adopted_once():
    said = []
    stop = StopFlag(say=said.append)
    assert stop.adopt(0) == 0 and stop.signum == 0 and said == []  # nobody was signalled
    assert stop.adopt(signal.SIGTERM) == signal.SIGTERM and stop.signum == signal.SIGTERM
    assert said == ["SIGTERM received by another process: saving a checkpoint"]
    assert stop.adopt(signal.SIGTERM) == signal.SIGTERM and len(said) == 1  # already known: not said again


class _SignalAt(SFT):
    """SFT that sends this process a signal at the end of step `at` (as a cluster's pre-emption would)."""

    def __init__(self, cfg, at, signum):
        super().__init__(cfg)
        self.at, self.signum = at, signum

    def on_step_end(self, step, metrics):
        if step == self.at:
            os.kill(os.getpid(), self.signum)


def test_signal_in_training_checkpoints_and_stops_then_resumes(tiny_model_dir, tmp_path, capsys):
    data = write_sft_jsonl(tmp_path / "d.jsonl", n=16)
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), max_steps=5))
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2; rerun the same command to resume") as e:
        Engine(cfg, _SignalAt(cfg, 2, signal.SIGTERM)).train()
    assert e.value.signum == signal.SIGTERM
    assert os.path.exists(tmp_path / "out" / "checkpoints" / "step-00000002" / "COMPLETE")
    assert not os.path.exists(tmp_path / "out" / "final")
    eng = Engine(cfg, SFT(cfg))
    eng.train()
    assert "resumed from" in capsys.readouterr().err and eng.step == 5


@pytest.mark.slow
def test_sigint_checkpoints_and_rerun_resumes(tiny_model_dir, tmp_path):
    data = write_sft_jsonl(tmp_path / "d.jsonl", n=16)
    out = str(tmp_path / "out")

    def cmd(steps):
        return [sys.executable, "-m", "posttrain", "sft"] + sft_overrides(tiny_model_dir, data, out, max_steps=steps)

    log = open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen(cmd(100000), stdout=subprocess.DEVNULL, stderr=log)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    finally:
        proc.kill()
    log.seek(0)
    err = log.read()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if "interrupted at step" in ln][0]
    step = int(line.split("interrupted at step ")[1].split(";")[0])
    assert line.endswith(f"interrupted at step {step}; rerun the same command to resume")
    assert os.path.exists(os.path.join(out, "checkpoints", f"step-{step:08d}", "COMPLETE"))
    assert json.loads(open(metrics).read().splitlines()[-1])["step"] == step
    assert not os.path.exists(os.path.join(out, "final"))
    # rerunning resumes there (max_steps may change on resume: finish one step later, to stay quick)
    res = subprocess.run(cmd(step + 1), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"step-{step:08d}" in res.stderr and "resumed from" in res.stderr


def test_stop_votes_sum_over_processes_to_the_largest_signal():
    """The engine sums every process's votes with the step's metrics (one collective for both); the agreed
    signal is the largest any process got, as the max over signal numbers was."""
    got_term, got_int, none = StopFlag(), StopFlag(), StopFlag()
    got_term.signum, got_int.signum = signal.SIGTERM, signal.SIGINT
    assert none.votes() == [0.0, 0.0] and got_int.votes() == [1.0, 0.0] and got_term.votes() == [0.0, 1.0]
    summed = lambda *flags: [sum(v) for v in zip(*(f.votes() for f in flags))]  # noqa: E731
    assert StopFlag.agreed(summed(none, none)) == 0
    assert StopFlag.agreed(summed(none, got_int)) == signal.SIGINT
    assert StopFlag.agreed(summed(got_int, got_term, none)) == signal.SIGTERM
    assert StopFlag.agreed(summed(got_term, got_term)) == signal.SIGTERM  # 2 votes: still SIGTERM, not 30
