"""Every algorithm under ddp and fsdp2 (2 CPU processes, gloo, fp32), kills, resumes and 2 nodes: slow.

SFT (padded, packed, with activation checkpointing per layer), DPO (frozen sharded reference; LoRA with
the adapter disabled as reference), RM, GRPO (with a sharded k3 reference) and PPO (value head, reference,
rollouts from the sharded policy, advantages whitened over both processes): per-step losses and final
weights equal the 1-process run on the same global batch (rollouts are seeded per prompt by its global
position in the round, so both processes together sample what one process samples).
"""
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from posttrain.cli import main

from ..algorithms.test_dpo import write_pref_jsonl
from ..core.helpers import sft_overrides, write_sft_jsonl
from .common import ENV, assert_same_run, losses, run, torchrun, weights, worker

pytestmark = pytest.mark.slow
HERE = os.path.dirname(os.path.abspath(__file__))


def _common(model_dir, out="unused", **kw):
    base = dict(max_steps=3, threads=1, save_steps=0)
    base.update(kw)
    args = sft_overrides(model_dir, "unused", out, **base)
    return [a for a in args if not a.startswith(("output_dir=", "batch_size=", "data.train="))]


def _prompts(path, n=32):
    import json

    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}) + "\n")
    return str(path)


def _rl_config(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"rewards:\n  - name: {os.path.join(HERE, 'rewards.py')}:digits\n    weight: 1.0\n")
    return str(path)


CASES = {
    "sft-padded": ("sft", lambda d, t: ["data.train=" + write_sft_jsonl(t / "d.jsonl")], 8),
    "sft-packed": ("sft", lambda d, t: ["data.train=" + write_sft_jsonl(t / "d.jsonl"), "data.packing=true"], 8),
    "sft-checkpointed": ("sft", lambda d, t: ["data.train=" + write_sft_jsonl(t / "d.jsonl"),
                                              "gradient_checkpointing=true"], 8),
    "dpo": ("dpo", lambda d, t: ["data.train=" + write_pref_jsonl(t / "d.jsonl")], 8),
    "dpo-lora": ("dpo", lambda d, t: ["data.train=" + write_pref_jsonl(t / "d.jsonl"), "lora.r=4"], 8),
    "rm": ("rm", lambda d, t: ["data.train=" + write_pref_jsonl(t / "d.jsonl"), "learning_rate=1e-3"], 8),
    "grpo": ("grpo", lambda d, t: ["data.train=" + _prompts(t / "d.jsonl"), "num_generations=4", "beta=0.1",
                                   "max_new_tokens=8", "sample_steps=0"], 16),
    "ppo": ("ppo", lambda d, t: ["data.train=" + _prompts(t / "d.jsonl"), "max_new_tokens=8", "ppo_epochs=1",
                                 "init_kl_coef=0.05", "learning_rate=1e-3"], 8),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_algorithm_under_ddp_and_fsdp2(tiny_model_dir, tmp_path, case):
    algo, extra, global_batch = CASES[case]
    args = _common(tiny_model_dir) + extra(tiny_model_dir, tmp_path) + [f"distributed.global_batch_size={global_batch}"]
    config = _rl_config(tmp_path, case) if algo in ("grpo", "ppo") else None
    worker([{"algo": algo, "out": str(tmp_path / s), "overrides": args + [f"distributed.strategy={s}"],
             "config": config}
            for s in ("ddp", "fsdp2")])
    # PPO's loss (~1e-4, whitened advantages) and GRPO's first-pass loss (~1e-8: ratio 1 times group advantages
    # that sum to 0) are sums of terms that nearly cancel: compare them to 1e-7 absolute too
    atol = 1e-7 if algo in ("grpo", "ppo") else 0.0
    assert_same_run(str(tmp_path / "ddp"), str(tmp_path / "fsdp2"), loss_atol=atol)
    cmd = [algo] + (["--config", config] if config else []) + args + [f"output_dir={tmp_path / 'one'}"]
    assert main(cmd) == 0
    for s in ("ddp", "fsdp2"):
        assert_same_run(str(tmp_path / "one"), str(tmp_path / s), loss_atol=atol)
    if case == "dpo-lora":
        assert os.path.exists(tmp_path / "fsdp2" / "final" / "adapter_model.safetensors")


def _sft_cmd(model_dir, data, out, steps, strategy="fsdp2"):
    return ["-m", "posttrain", "sft"] + sft_overrides(model_dir, data, out, max_steps=steps, save_steps=1,
                                                      save_total_limit=2, batch_size=2, threads=1) + [
        f"distributed.strategy={strategy}"]


def test_sigkill_during_fsdp2_then_rerun_is_bit_identical(tiny_model_dir, tmp_path):
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    steps, ref, out = 10, str(tmp_path / "ref"), str(tmp_path / "run")
    run(torchrun(_sft_cmd(tiny_model_dir, data, ref, steps)))
    proc = subprocess.Popen(torchrun(_sft_cmd(tiny_model_dir, data, out, steps)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    target = os.path.join(out, "checkpoints", "step-00000004")
    deadline = time.time() + 300
    while not os.path.exists(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, at once
    proc.wait()
    assert not os.path.exists(os.path.join(out, "final")), "killed too late to test anything"
    r = run(torchrun(_sft_cmd(tiny_model_dir, data, out, steps)))
    assert "resumed from" in r.stderr
    a, b = weights(ref), weights(out)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lora", [0, 4])
def test_resume_one_to_two_processes(tiny_model_dir, tmp_path, lora):
    """A 1-process checkpoint (full; with LoRA the trainable tensors only) read into the sharded 2-process
    model, then trained to the end."""
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    args = _common(tiny_model_dir, max_steps=4, save_steps=2) + [f"data.train={data}", f"lora.r={lora}",
                                                                 "distributed.global_batch_size=8"]
    assert main(["sft"] + args + [f"output_dir={tmp_path / 'one'}"]) == 0
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "one" / "checkpoints" / "step-00000002", part / "checkpoints" / "step-00000002")
    worker([{"algo": "sft", "out": str(part), "overrides": args + ["distributed.strategy=fsdp2"]}])
    assert losses(str(part)) == pytest.approx(losses(str(tmp_path / "one"))[2:], rel=1e-5)
    for k, v in weights(str(tmp_path / "one")).items():
        torch.testing.assert_close(weights(str(part))[k], v, rtol=0, atol=1e-5)


def test_two_nodes_of_one_process_equal_one_node_of_two(tiny_model_dir, tmp_path):
    from .common import free_port

    data = write_sft_jsonl(tmp_path / "train.jsonl")
    args = ["-m", "posttrain", "sft"] + sft_overrides(tiny_model_dir, data, "x", max_steps=3, batch_size=4,
                                                      threads=1)
    run(torchrun([a.replace("output_dir=x", f"output_dir={tmp_path / 'one-node'}") for a in args]))
    port = free_port()
    nodes = [subprocess.Popen(
        [*torchrun([], nproc=1)[:3], "--nnodes", "2", "--node_rank", str(r), "--nproc_per_node", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(port),
         *[a.replace("output_dir=x", f"output_dir={tmp_path / 'two-nodes'}") for a in args]],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [n.communicate(timeout=600) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), [o[1][-2000:] for o in outs]
    assert "world size 2, strategy ddp" in outs[0][1]
    assert_same_run(str(tmp_path / "one-node"), str(tmp_path / "two-nodes"), rel=1e-6, atol=1e-6)


def test_accelerate_launch_without_multi_gpu_on_cpu_warns(tiny_model_dir, tmp_path):
    """The README's old command: on CPU, accelerate starts ONE process; the run says so (issue 10, trip 1)."""
    import sys

    data = write_sft_jsonl(tmp_path / "train.jsonl", n=8)
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    r = run([accelerate, "launch", "--num_processes", "2", "-m", "posttrain", "sft"]
            + sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), max_steps=1, threads=1))
    assert "world size 1, strategy none" in r.stderr
    assert "warning: accelerate launch asked for 2 processes but started this ONE" in r.stderr


ACCELERATE_CONFIGS = {  # what `accelerate config` writes for FSDP2 and for DDP (MULTI_GPU: the launcher that starts
    # N processes; on CPU they run gloo and accelerate's state says MULTI_CPU)
    "fsdp": "distributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
            "  fsdp_reshard_after_forward: true\n  fsdp_offload_params: false\n  fsdp_state_dict_type: "
            "SHARDED_STATE_DICT\n",
    "ddp": "distributed_type: MULTI_GPU\n",
}


def test_accelerate_launch_with_an_fsdp_or_ddp_config_file(tiny_model_dir, tmp_path):
    """`accelerate launch --config_file X -m posttrain sft` with strategy auto: an FSDP config runs fsdp2, a DDP
    config ddp, 2 CPU processes each, and the two runs are the same run."""
    import sys

    from .common import free_port

    data = write_sft_jsonl(tmp_path / "train.jsonl", n=16)
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    for name, body in ACCELERATE_CONFIGS.items():
        (tmp_path / f"{name}.yaml").write_text(f"compute_environment: LOCAL_MACHINE\n{body}machine_rank: 0\n"
                                               "mixed_precision: 'no'\nnum_machines: 1\nnum_processes: 2\n"
                                               "rdzv_backend: static\nsame_network: true\nuse_cpu: true\n")
        r = run([accelerate, "launch", "--config_file", str(tmp_path / f"{name}.yaml"), "--main_process_port",
                 str(free_port()), "-m", "posttrain", "sft"]
                + sft_overrides(tiny_model_dir, data, str(tmp_path / name), max_steps=3, batch_size=2, threads=1))
        expected = "fsdp2 (2 layers + root)" if name == "fsdp" else "ddp"
        assert f"world size 2, strategy {expected}, device cpu" in r.stderr, r.stderr[-2000:]
    assert_same_run(str(tmp_path / "fsdp"), str(tmp_path / "ddp"))
