"""Atomic checkpoints: partial folders are skipped, damaged files are named, SIGKILL resumes bit-exact."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.checkpoint import CheckpointError, latest_complete
from posttrain.core.engine import Engine

from .helpers import sft_overrides, write_sft_jsonl


def _cfg(model_dir, tmp_path, **kw):
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    return load_config(SFTConfig, None, sft_overrides(model_dir, data, str(tmp_path / "out"), **kw))


def test_partial_checkpoint_skipped_and_damaged_file_named(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, max_steps=4, save_steps=2, save_total_limit=5)
    Engine(cfg, SFT(cfg)).train()
    root = tmp_path / "out" / "checkpoints"
    assert sorted(os.listdir(root)) == ["step-00000002", "step-00000004"]
    os.remove(root / "step-00000004" / "COMPLETE")
    msgs = []
    assert latest_complete(str(root), log=msgs.append) == str(root / "step-00000002")
    assert "partial" in msgs[0] and "step-00000004" in msgs[0]
    opt = root / "step-00000002" / "optimizer.pt"
    with open(opt, "r+b") as f:
        f.truncate(os.path.getsize(opt) // 2)
    eng = Engine(cfg, SFT(cfg))
    msgs = []
    eng.say = msgs.append
    eng._resume()  # the only complete checkpoint is damaged: named, moved aside, training starts over
    assert eng.step == 0 and os.path.isdir(root / "step-00000002.corrupt")
    assert any("step-00000002 is corrupt: optimizer.pt has" in m for m in msgs), msgs


def test_checkpoint_of_another_model_is_an_error_not_a_fallback(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, max_steps=2, save_steps=0)
    Engine(cfg, SFT(cfg)).train()
    eng = Engine(cfg, SFT(cfg))
    eng.model.lm_head = torch.nn.Linear(eng.model.lm_head.in_features, 7, bias=False)
    with pytest.raises(CheckpointError, match="does not match the model"):
        eng._resume()
    assert os.path.isdir(tmp_path / "out" / "checkpoints" / "step-00000002")


def _cmd(model_dir, data, out, steps):
    return [sys.executable, "-m", "posttrain", "sft"] + sft_overrides(
        model_dir, data, out, max_steps=steps, save_steps=1, save_total_limit=2, batch_size=2, threads=1)


def test_sigkill_then_resume_is_bit_identical(tiny_model_dir, tmp_path):
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    steps = 14
    ref_out, out = str(tmp_path / "ref"), str(tmp_path / "run")
    subprocess.run(_cmd(tiny_model_dir, data, ref_out, steps), check=True, capture_output=True)
    proc = subprocess.Popen(_cmd(tiny_model_dir, data, out, steps), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = os.path.join(out, "checkpoints", "step-00000005")
    deadline = time.time() + 120
    while not os.path.exists(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "final")), "killed too late to test anything"
    res = subprocess.run(_cmd(tiny_model_dir, data, out, steps), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stderr
    a = load_file(os.path.join(ref_out, "final", "model.safetensors"))
    b = load_file(os.path.join(out, "final", "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
