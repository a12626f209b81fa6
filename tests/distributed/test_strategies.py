"""distributed.strategy on real engines, as CPU processes (gloo, fp32).

Fast: SFT under ddp and fsdp2 (2 processes, one launch) equals the 1-process run on the same global
batch (per-step losses within 1e-5 relative, final weights within 1e-5); fsdp2 holds about half the
parameter + optimizer bytes per process; its sharded checkpoint resumes on 1 process to the same result;
the final folder loads with AutoModelForCausalLM; bad settings are one-line errors.
Slow: every algorithm x strategy, SIGKILL + rerun, resume 1 -> 2, 2 nodes x 1 process.
"""
import json
import os
import shutil

import pytest
import torch

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.cli import main
from posttrain.config import load_config
from posttrain.core.engine import Engine

from ..core.helpers import sft_overrides, write_sft_jsonl
from .common import assert_same_run, losses, weights, worker
from .worker import local_bytes

STEPS = 3


def sft_args(model_dir, data, **kw):
    base = dict(max_steps=STEPS, batch_size=4, threads=1, save_steps=2, save_total_limit=5)
    base.update(kw)
    args = sft_overrides(model_dir, data, "unused", **base)
    return [a for a in args if not a.startswith(("output_dir=", "batch_size="))] + ["distributed.global_batch_size=8"]


def test_sft_ddp_fsdp2_equal_one_process_half_bytes_and_resume_on_one(tiny_model_dir, tmp_path):
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    args = sft_args(tiny_model_dir, data)
    one = str(tmp_path / "one")
    cfg = load_config(SFTConfig, None, args + [f"output_dir={one}"])
    eng = Engine(cfg, SFT(cfg))
    eng.train()
    one_bytes = local_bytes(eng)
    assert eng.cfg.batch_size == 8 and eng.strategy.name == "none"

    r = worker([{"algo": "sft", "out": str(tmp_path / "ddp"), "overrides": args + ["distributed.strategy=ddp"]},
                {"algo": "sft", "out": str(tmp_path / "fsdp2"), "overrides": args + ["distributed.strategy=fsdp2"],
                 "measure_bytes": str(tmp_path / "bytes.json")}])
    # every run says first how it runs (issue 10: a one-process run must not pass for a parallel one)
    assert "world size 2, strategy ddp, device cpu" in r.stderr
    assert "world size 2, strategy fsdp2 (2 layers + root), device cpu" in r.stderr
    assert "dtype torch.float32 (mixed precision no), batch 4 per process x 1 accumulation x 2 processes" in r.stderr
    assert_same_run(one, str(tmp_path / "ddp"))
    assert_same_run(one, str(tmp_path / "fsdp2"))
    with open(tmp_path / "bytes.json") as f:
        measured = json.load(f)
    assert measured["world"] == 2
    assert measured["bytes"] == pytest.approx(one_bytes / 2, rel=0.10), (measured, one_bytes)

    ckpt = tmp_path / "fsdp2" / "checkpoints" / "step-00000002"
    assert os.path.isdir(ckpt / "dcp") and (ckpt / "COMPLETE").exists()
    assert sorted(n for n in os.listdir(ckpt) if n.startswith("rng-rank")) == ["rng-rank0.pt", "rng-rank1.pt"]
    # 2 -> 1: the sharded step-2 checkpoint resumed by one plain process finishes as the uninterrupted run
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fsdp2" / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    cfg = load_config(SFTConfig, None, args + [f"output_dir={resumed}"])
    eng = Engine(cfg, SFT(cfg))
    eng.train()
    assert eng.step == STEPS and len(losses(str(resumed))) == 1  # only step 3 was trained here
    assert losses(str(resumed))[0] == pytest.approx(losses(one)[-1], rel=1e-5)
    for k, v in weights(one).items():
        torch.testing.assert_close(weights(str(resumed))[k], v, rtol=0, atol=1e-5)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "fsdp2" / "final"))
    assert type(model).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(model.state_dict()["lm_head.weight"], weights(one)["lm_head.weight"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("distributed.strategy=fsdp", "error: distributed.strategy: expected one of auto, none, ddp, fsdp2, deepspeed, "
                                  "found 'fsdp' (did you mean 'fsdp2'?)"),
    ("distributed.strategy=fsdp2", "error: distributed.strategy=fsdp2 needs a process group, and this process was "
                                   "not started by a launcher: run it as `torchrun --nproc_per_node N"),
    ("distributed.strategy=ddp", "error: distributed.strategy=ddp needs a process group"),
    ("distributed.strategy=deepspeed", "error: distributed.strategy=deepspeed needs the deepspeed package: "
                                       "pip install deepspeed"),
    ("distributed.global_batch_size=7", "error: distributed.global_batch_size 7 is not divisible by 1 processes x "
                                        "grad_accum 2; pick a multiple of 2"),
])
def test_bad_distributed_settings_are_one_line_errors(tiny_model_dir, tmp_path, capsys, monkeypatch, override,
                                                      message):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    if "deepspeed" in override:
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "deepspeed" else real(n, *a))
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=8)
    args = sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), grad_accum=2) + [override]
    assert main(["sft"] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message), err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not os.path.exists(tmp_path / "out" / "checkpoints")


def test_accelerate_launch_that_started_one_process_is_named():
    from posttrain.core.strategy import launcher_mismatch

    argv = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--num_processes", "2", "-m", "posttrain", "sft"]
    msg = launcher_mismatch(1, argv)
    assert msg.startswith("warning: accelerate launch asked for 2 processes but started this ONE")
    assert "torchrun --nproc_per_node 2" in msg
    assert launcher_mismatch(2, argv) is None                                   # it did start two
    assert launcher_mismatch(1, argv[:3] + ["--num_processes=1", "-m", "posttrain"]) is None
    assert launcher_mismatch(1, ["/venv/bin/python", "-m", "pytest"]) is None


def test_auto_takes_what_accelerate_launch_selected():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from posttrain.core.strategy import resolve_name

    acc = lambda kind, n: SimpleNamespace(distributed_type=kind, num_processes=n)  # noqa: E731
    assert resolve_name("auto", acc(DistributedType.FSDP, 2)) == "fsdp2"          # accelerate's FSDP config
    assert resolve_name("auto", acc(DistributedType.DEEPSPEED, 2)) == "deepspeed"
    assert resolve_name("auto", acc(DistributedType.MULTI_CPU, 2)) == "ddp"
    assert resolve_name("auto", acc(DistributedType.NO, 1)) == "none"
    assert resolve_name("fsdp2", acc(DistributedType.MULTI_GPU, 4)) == "fsdp2"     # the config wins when given
