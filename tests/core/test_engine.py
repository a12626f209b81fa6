"""The shared engine, driven by SFT: loss falls, params move, accumulation, skips, checkpoints."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine, TrainingAborted

from .helpers import sft_overrides, write_sft_jsonl


def _cfg(tiny_model_dir, tmp_path, **kw):
    data = write_sft_jsonl(tmp_path / "train.jsonl")
    return load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), **kw))


def test_sft_loss_falls_params_move_outputs_written(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny_model_dir, tmp_path, max_steps=12)
    eng = Engine(cfg, SFT(cfg))
    before = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    eng.train()
    rows = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    moved = [n for n, p in eng.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)
    final = tmp_path / "out" / "final"
    reloaded = AutoModelForCausalLM.from_pretrained(str(final))
    assert torch.equal(reloaded.lm_head.weight, eng.model.lm_head.weight)
    assert (final / "tokenizer.json").exists() and (tmp_path / "out" / "loss.png").exists()
    assert (tmp_path / "out" / "config.yaml").exists()
    assert os.path.exists(tmp_path / "out" / "checkpoints" / "step-00000012" / "COMPLETE")


def _step_grads(cfg):
    """Gradients of optimizer step 0 (before the update: Adam's first step is ~lr*sign(g), which hides them)."""
    eng = Engine(cfg, SFT(cfg))
    m = eng._backward_step(eng.algo.micro_batches(0))
    return m["loss"], {n: p.grad.clone() for n, p in eng.model.named_parameters()}


def test_grad_accum_1x8_equals_8x1(tiny_model_dir, tmp_path):
    loss_a, a = _step_grads(_cfg(tiny_model_dir, tmp_path, batch_size=8, grad_accum=1))
    loss_b, b = _step_grads(_cfg(tiny_model_dir, tmp_path, batch_size=1, grad_accum=8))
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-6, rtol=1e-4)


class _NaNAt(SFT):
    """SFT whose loss is NaN at chosen steps (0-based)."""

    def __init__(self, cfg, bad_steps):
        super().__init__(cfg)
        self.bad, self.cur = set(bad_steps), 0

    def micro_batches(self, step):
        self.cur = step
        return super().micro_batches(step)

    def loss(self, model, batch, num_items):
        loss, m = super().loss(model, batch, num_items)
        return (loss * float("nan"), m) if self.cur in self.bad else (loss, m)


def test_non_finite_step_is_skipped_untouched(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path)
    eng = Engine(cfg, _NaNAt(cfg, {1}))
    eng.train_step()
    params = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    opt_state = {k: v["exp_avg"].clone() for k, v in enumerate(eng.optimizer.state.values())}
    m = eng.train_step()
    assert m["skipped_steps"] == 1
    for n, p in eng.model.named_parameters():
        assert torch.equal(p, params[n])
    for k, v in enumerate(eng.optimizer.state.values()):
        assert torch.equal(v["exp_avg"], opt_state[k])
    assert eng.train_step()["skipped_steps"] == 1  # recovers


def test_consecutive_skips_abort_with_step(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, max_consecutive_skips=3)
    eng = Engine(cfg, _NaNAt(cfg, {0, 1, 2, 3}))
    with pytest.raises(TrainingAborted, match="3 consecutive non-finite steps, the last at step 3"):
        eng.train()


def test_resume_from_checkpoint_matches_uninterrupted(tiny_model_dir, tmp_path):
    full = _cfg(tiny_model_dir, tmp_path / "a", max_steps=6)
    Engine(full, SFT(full)).train()
    part = _cfg(tiny_model_dir, tmp_path / "b", max_steps=3)
    Engine(part, SFT(part)).train()
    resumed = _cfg(tiny_model_dir, tmp_path / "b", max_steps=6)
    eng = Engine(resumed, SFT(resumed))
    eng.train()
    a = load_file(str(tmp_path / "a" / "out" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "out" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in open(tmp_path / "b" / "out" / "metrics.jsonl")]
    assert steps == list(range(1, 7))


def test_packing_gives_the_padded_batch_gradient(tiny_model_dir, tmp_path):
    loss_a, a = _step_grads(_cfg(tiny_model_dir, tmp_path, batch_size=6))
    loss_b, b = _step_grads(_cfg(tiny_model_dir, tmp_path, batch_size=6, **{"data.packing": "true"}))
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-6, rtol=1e-4)
