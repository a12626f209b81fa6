"""distributed.strategy on real engines, as CPU processes (gloo, fp32).

Fast (ONE launch of 2 processes: SFT under ddp, fsdp2, fsdp2 + LoRA): each equals the 1-process run on the
same global batch (per-step losses within 1e-5 relative, final weights within 1e-5); fsdp2 holds about
half the parameter + optimizer bytes per process; its sharded checkpoint resumes on 1 process to the same
result, and a corrupt shard makes it fall back to the previous checkpoint; a LoRA sharded checkpoint
holds the adapter only and resumes on 1 process; the final folder loads with AutoModelForCausalLM; bad
settings are one-line errors.
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
    base = dict(max_steps=STEPS, batch_size=4, threads=1, save_steps=1, save_total_limit=5)
    base.update(kw)
    args = sft_overrides(model_dir, data, "unused", **base)
    return [a for a in args if not a.startswith(("output_dir=", "batch_size="))] + ["distributed.global_batch_size=8"]


def train_one(args, out) -> Engine:
    """A 1-process run in this process (resumes when `out` holds checkpoints)."""
    cfg = load_config(SFTConfig, None, args + [f"output_dir={out}"])
    eng = Engine(cfg, SFT(cfg))
    eng.train()
    return eng


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """The 1-process runs (full, LoRA) and one launch of 2 processes: ddp, fsdp2, fsdp2 + LoRA."""
    tmp = tmp_path_factory.mktemp("strategies")
    args = sft_args(tiny_model_dir, write_sft_jsonl(tmp / "train.jsonl"))
    lora = args + ["lora.r=4"]
    one = train_one(args, tmp / "one")
    out = {"tmp": tmp, "args": args, "lora": lora, "one_bytes": local_bytes(one), "one_engine": one}
    assert one.cfg.batch_size == 8 and one.strategy.name == "none"
    train_one(lora, tmp / "one-lora")
    out["launch"] = worker([
        {"algo": "sft", "out": str(tmp / "ddp"), "overrides": args + ["distributed.strategy=ddp"]},
        {"algo": "sft", "out": str(tmp / "fsdp2"), "overrides": args + ["distributed.strategy=fsdp2"],
         "measure_bytes": str(tmp / "bytes.json")},
        {"algo": "sft", "out": str(tmp / "fsdp2-lora"), "overrides": lora + ["distributed.strategy=fsdp2"]}])
    return out


def test_sft_ddp_fsdp2_equal_one_process_and_half_bytes(runs):
    tmp, r = runs["tmp"], runs["launch"]
    # every run says first how it runs (issue 10: a one-process run must not pass for a parallel one)
    assert "world size 2, strategy ddp, device cpu" in r.stderr
    assert "world size 2, strategy fsdp2 (2 layers + root), device cpu" in r.stderr
    assert "dtype torch.float32 (mixed precision no), batch 4 per process x 1 accumulation x 2 processes" in r.stderr
    for name in ("ddp", "fsdp2"):
        assert_same_run(str(tmp / "one"), str(tmp / name))
    assert_same_run(str(tmp / "one-lora"), str(tmp / "fsdp2-lora"))
    with open(tmp / "bytes.json") as f:
        measured = json.load(f)
    assert measured["world"] == 2
    assert measured["bytes"] == pytest.approx(runs["one_bytes"] / 2, rel=0.10), (measured, runs["one_bytes"])

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp / "fsdp2" / "final"))
    assert type(model).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(model.state_dict()["lm_head.weight"], weights(str(tmp / "one"))["lm_head.weight"],
                               rtol=0, atol=1e-5)


def _resume_on_one(runs, src: str, steps: list[int], name: str, lora: bool = False):
    """Checkpoints `steps` of the 2-process run `src`, copied into a fresh folder and trained on by 1 process."""
    tmp = runs["tmp"]
    for s in steps:
        shutil.copytree(tmp / src / "checkpoints" / f"step-{s:08d}", tmp / name / "checkpoints" / f"step-{s:08d}")
    return train_one(runs["lora" if lora else "args"], tmp / name)


def test_fsdp2_checkpoint_resumes_on_one_process(runs):
    tmp = runs["tmp"]
    ckpt = tmp / "fsdp2" / "checkpoints" / "step-00000002"
    assert os.path.isdir(ckpt / "dcp") and (ckpt / "COMPLETE").exists()
    assert sorted(n for n in os.listdir(ckpt) if n.startswith("rng-rank")) == ["rng-rank0.pt", "rng-rank1.pt"]
    eng = _resume_on_one(runs, "fsdp2", [2], "resumed")  # 2 -> 1: DCP reshards into the plain model
    assert eng.step == STEPS and len(losses(str(tmp / "resumed"))) == 1  # only step 3 was trained here
    assert losses(str(tmp / "resumed"))[0] == pytest.approx(losses(str(tmp / "one"))[-1], rel=1e-5)
    for k, v in weights(str(tmp / "one")).items():
        torch.testing.assert_close(weights(str(tmp / "resumed"))[k], v, rtol=0, atol=1e-5)


def test_fsdp2_checkpoint_is_checksummed_and_a_corrupt_shard_falls_back(runs, capsys):
    tmp = runs["tmp"]
    meta = json.loads((tmp / "fsdp2" / "checkpoints" / "step-00000002" / "trainer.json").read_text())
    files = set(meta["checksums"]["files"])
    assert {"dcp/__0_0.distcp", "dcp/__1_0.distcp", "dcp/.metadata", "rng-rank1.pt", "algorithm-rank1.pt"} <= files
    assert files == set(meta["files"]) and meta["model_state"] == "full"
    for s in (1, 2):
        name = f"step-{s:08d}"
        shutil.copytree(tmp / "fsdp2" / "checkpoints" / name, tmp / "corrupt" / "checkpoints" / name)
    shard = tmp / "corrupt" / "checkpoints" / "step-00000002" / "dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # rank 1's shard, same size: only its checksum can tell
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    eng = train_one(runs["args"], tmp / "corrupt")
    err = capsys.readouterr().err
    assert "checkpoint step-00000002 is corrupt: dcp/__1_0.distcp does not match its checksum" in err, err
    assert os.path.isdir(tmp / "corrupt" / "checkpoints" / "step-00000002.corrupt")
    assert eng.step == STEPS and losses(str(tmp / "corrupt")) == pytest.approx(losses(str(tmp / "one"))[1:], rel=1e-5)
    for k, v in weights(str(tmp / "one")).items():
        torch.testing.assert_close(weights(str(tmp / "corrupt"))[k], v, rtol=0, atol=1e-5)


def test_fsdp2_lora_checkpoint_holds_the_adapter_only_and_resumes_on_one_process(runs):
    from torch.distributed.checkpoint import FileSystemReader

    tmp = runs["tmp"]
    ckpt = tmp / "fsdp2-lora" / "checkpoints" / "step-00000002"
    meta = json.loads((ckpt / "trainer.json").read_text())

    def model_tensors(run):  # {name: elements} of the model's tensors in a step-2 DCP checkpoint
        md = FileSystemReader(str(tmp / run / "checkpoints" / "step-00000002" / "dcp")).read_metadata()
        return {k: v.size.numel() for k, v in md.state_dict_metadata.items() if k.startswith("model.")}

    lora, full = model_tensors("fsdp2-lora"), model_tensors("fsdp2")
    assert meta["model_state"] == "trainable" and lora and all("lora_" in k for k in lora), lora
    assert sum(lora.values()) < sum(full.values()) / 5  # the adapter, not the base (1/15 here)
    eng = _resume_on_one(runs, "fsdp2-lora", [2], "resumed-lora", lora=True)  # 2 -> 1, base from the config
    assert eng.step == STEPS and len(losses(str(tmp / "resumed-lora"))) == 1
    assert losses(str(tmp / "resumed-lora"))[0] == pytest.approx(losses(str(tmp / "one-lora"))[-1], rel=1e-5)
    for k, v in weights(str(tmp / "one-lora")).items():
        torch.testing.assert_close(weights(str(tmp / "resumed-lora"))[k], v, rtol=0, atol=1e-5)


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


def test_auto_takes_accelerates_fsdp_config_on_cpu_and_its_options(monkeypatch, tmp_path):
    """Without a GPU accelerate's state says MULTI_CPU even for an FSDP config; the environment its launcher
    sets (ACCELERATE_USE_FSDP, FSDP_*) still selects fsdp2, with the options posttrain has (a real launch:
    tests/distributed/test_matrix.py, slow)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from posttrain.core.strategy import launcher_mismatch, make_strategy

    cpu2 = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2, device=torch.device("cpu"))
    monkeypatch.setattr("posttrain.core.strategy.ensure_process_group", lambda *a: None)
    cfg = load_config(SFTConfig, None, ["output_dir=unused"])
    said = []
    assert make_strategy(cfg, cpu2, said.append).name == "ddp" and not said
    for k, v in {"ACCELERATE_USE_FSDP": "true", "FSDP_OFFLOAD_PARAMS": "true", "FSDP_RESHARD_AFTER_FORWARD": "false",
                 "FSDP_ACTIVATION_CHECKPOINTING": "true"}.items():
        monkeypatch.setenv(k, v)
    assert make_strategy(cfg, cpu2, said.append).name == "fsdp2"
    assert said == ["from accelerate's FSDP config: distributed.cpu_offload=true, distributed.reshard_after_forward="
                    "false, gradient_checkpointing=true"]
    assert cfg.distributed.cpu_offload and not cfg.distributed.reshard_after_forward and cfg.gradient_checkpointing
    explicit = load_config(SFTConfig, None, ["output_dir=unused", "distributed.strategy=ddp"])
    assert make_strategy(explicit, cpu2).name == "ddp" and not explicit.distributed.cpu_offload  # the config wins
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    from posttrain.core.strategy import resolve_name

    assert resolve_name("auto", cpu2) == "deepspeed"
    # a MULTI_CPU config file with num_processes 2 starts ONE process on CPU: said, as for --num_processes 2
    (tmp_path / "ddp.yaml").write_text("distributed_type: MULTI_CPU\nnum_processes: 2\n")
    argv = ["/venv/bin/accelerate", "launch", "--config_file", str(tmp_path / "ddp.yaml"), "-m", "posttrain", "sft"]
    assert launcher_mismatch(1, argv).startswith("warning: accelerate launch asked for 2 processes")


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
