"""The fault campaign: SIGKILL at four points (while the first checkpoint is written, while a later one
is written, in the middle of a step, during the final save), then a plain rerun. The rerun must finish
with final weights bit-identical to an uninterrupted run and leave no temp folder behind.

Each killed run is a forked child of the test process (no interpreter start-up per run); it kills itself
with SIGKILL at the chosen point. Fast: SFT at all four points. Slow: SFT, DPO, GRPO and PPO.
"""
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from posttrain.config import DataConfig, load_config
from posttrain.core import checkpoint_integrity
from posttrain.core.engine import Engine

from .helpers import sft_overrides, write_sft_jsonl

POINTS = ("first_checkpoint", "later_checkpoint", "mid_step", "final_save")
STEPS, SAVE_EVERY = 6, 2


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """The loss plot (matplotlib) is not what is tested here and costs more than the training."""
    if torch.cuda.is_available():
        pytest.skip("a forked child cannot use CUDA once the parent has; on GPU machines the subprocess-based "
                    "test_checkpoint.py::test_sigkill_then_resume_is_bit_identical covers kills")
    monkeypatch.setattr(Engine, "plot", lambda self: None)


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str, eng: Engine) -> None:
    """Make `eng` kill its process at `point`."""
    if point in ("first_checkpoint", "later_checkpoint"):  # after model + optimizer are written, before COMPLETE
        target, calls, real = 1 if point == "first_checkpoint" else 2, [], checkpoint_integrity.manifest_entries

        def manifest(*a, **kw):
            calls.append(1)
            if len(calls) == target:
                _die()
            return real(*a, **kw)
        checkpoint_integrity.manifest_entries = manifest
    elif point == "mid_step":  # gradients computed, optimizer not yet stepped (step 4 of 6)
        real_step = eng.optimizer.step
        eng.optimizer.step = lambda *a, **kw: _die() if eng.step == 3 else real_step(*a, **kw)
    else:  # the final folder's weights are written into its temp folder, not yet renamed into place
        real_save = eng.model.save_pretrained

        def save(*a, **kw):
            real_save(*a, **kw)
            _die()
        eng.model.save_pretrained = save


def _killed_run(make_engine, point: str) -> None:
    pid = os.fork()
    if pid == 0:  # child: train until the armed point kills it
        code = 3
        try:
            eng = make_engine()
            _arm(point, eng)
            eng.train()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"{point}: the child was not killed (exit {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status})"


def _leftovers(out: str) -> list[str]:
    found = [d for d in os.listdir(out) if d.startswith(".final-") or d == "final.old"]
    ck = os.path.join(out, "checkpoints")
    return found + [d for d in os.listdir(ck) if d.startswith(".tmp-step-")]


def campaign(make_engine, tmp_path, points=POINTS) -> None:
    """`make_engine(out_dir)` -> a fresh Engine writing to out_dir."""
    ref = str(tmp_path / "ref")
    make_engine(ref).train()
    want = load_file(os.path.join(ref, "final", "model.safetensors"))
    for point in points:
        out = str(tmp_path / point)
        _killed_run(lambda: make_engine(out), point)
        assert not os.path.exists(os.path.join(out, "final")), point
        eng = make_engine(out)
        eng.train()
        got = load_file(os.path.join(out, "final", "model.safetensors"))
        assert set(got) == set(want), point
        bad = [k for k in want if not (got[k] == want[k]).all()]
        assert not bad, f"{point}: final weights differ from the uninterrupted run in {bad[:3]}"
        assert _leftovers(out) == [], f"{point}: temp folders left: {_leftovers(out)}"


def sft_engine(model_dir, data):
    from posttrain.algorithms.sft import SFT, SFTConfig

    def make(out):
        cfg = load_config(SFTConfig, None, sft_overrides(model_dir, data, out, max_steps=STEPS, save_steps=SAVE_EVERY,
                                                         batch_size=2, threads=1))
        return Engine(cfg, SFT(cfg))
    return make


def test_kill_at_four_points_sft(tiny_model_dir, tmp_path):
    campaign(sft_engine(tiny_model_dir, write_sft_jsonl(tmp_path / "train.jsonl", n=16)), tmp_path)


def _dpo_engine(model_dir, tmp_path):
    from posttrain.algorithms.dpo import DPO, DPOConfig

    from ..algorithms.test_dpo import write_pref_jsonl

    data = write_pref_jsonl(tmp_path / "pref.jsonl", n=16)

    def make(out):
        cfg = load_config(DPOConfig, None, [f"{k}={v}" for k, v in dict(
            model=model_dir, **{"data.train": data}, output_dir=out, max_steps=STEPS, save_steps=SAVE_EVERY,
            batch_size=2, max_length=64, learning_rate=3e-3, lr_scheduler="constant", report_to="[]", seed=1,
            threads=1).items()])
        return Engine(cfg, DPO(cfg))
    return make


def _prompts(path, n=16):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}) + "\n")
    return str(path)


class Digits:
    name = "digits"

    def __call__(self, prompts, completions, **columns):
        return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def _grpo_engine(model_dir, tmp_path):
    from posttrain.algorithms.grpo import GRPO, GRPOConfig
    from posttrain.rewards import CombinedReward

    data = _prompts(tmp_path / "prompts.jsonl")

    def make(out):
        cfg = load_config(GRPOConfig, None, [f"{k}={v}" for k, v in dict(
            model=model_dir, **{"data.train": data}, output_dir=out, max_steps=STEPS, save_steps=SAVE_EVERY,
            batch_size=4, num_generations=2, max_new_tokens=6, max_length=48, learning_rate=3e-3,
            lr_scheduler="constant", report_to="[]", seed=5, threads=1).items()])
        return Engine(cfg, GRPO(cfg, reward=CombinedReward([Digits()])))
    return make


def _ppo_engine(model_dir, tmp_path):
    from posttrain.algorithms.ppo import PPO, PPOConfig

    data = _prompts(tmp_path / "prompts.jsonl")

    def make(out):
        cfg = PPOConfig(model=model_dir, output_dir=out, max_steps=STEPS, save_steps=SAVE_EVERY, batch_size=4,
                        max_length=48, max_new_tokens=6, learning_rate=1e-2, lr_scheduler="constant", report_to=[],
                        ppo_epochs=2, threads=1, seed=0, data=DataConfig(train=data))
        return Engine(cfg, PPO(cfg, reward=Digits()))
    return make


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dpo", "grpo", "ppo"])
def test_kill_at_four_points_other_trainers(algo, tiny_model_dir, tmp_path):
    make = {"dpo": _dpo_engine, "grpo": _grpo_engine, "ppo": _ppo_engine}[algo](tiny_model_dir, tmp_path)
    campaign(make, tmp_path)
