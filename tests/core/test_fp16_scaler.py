"""fp16 mixed precision: the loss is scaled before backward, so small gradients do not underflow.

accelerate autocasts to fp16 (and builds a GradScaler) only on an accelerator; on CPU these tests emulate
it with torch's CPU fp16 autocast and a CPU GradScaler in the engine's place."""
import json
import os

import pytest
import torch

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine

from .helpers import sft_overrides, write_sft_jsonl

TINY = 1e-6  # loss factor: d loss / d logit ~ 1e-6 / tokens ~ 1e-8, below fp16's smallest subnormal (6e-8)


def _reset_accelerate():
    """accelerate keeps one process-wide state; mixed precision can only change after a reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    _reset_accelerate()


class _TinyLoss(SFT):
    def loss(self, model, batch, norm):
        loss, m = super().loss(model, batch, norm)
        return loss * TINY, m


def _engine(tiny_model_dir, tmp_path, fp16: bool, scaler=None, **kw):
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=16)
    over = sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), batch_size=8, max_grad_norm=0, **kw)
    cfg = load_config(SFTConfig, None, over + (["mixed_precision=fp16"] if fp16 else []))
    _reset_accelerate()
    eng = Engine(cfg, _TinyLoss(cfg))
    if fp16:  # what accelerate does on a GPU, here on CPU
        eng.accelerator.autocast = lambda: torch.autocast("cpu", dtype=torch.float16)
        eng.loss_scale.scaler = scaler
    grads = {}
    eng.optimizer.register_step_pre_hook(
        lambda opt, a, k: grads.update({id(p): p.grad.clone() for p in eng.params if p.grad is not None}))
    return eng, grads


def test_fp16_on_cpu_says_it_has_no_effect(tiny_model_dir, tmp_path, capsys):
    eng, _ = _engine(tiny_model_dir, tmp_path, fp16=False, mixed_precision="fp16")
    assert eng.loss_scale.scaler is None and "mixed_precision=fp16 has no effect" in capsys.readouterr().err


def test_scaled_fp16_gradients_match_fp32(tiny_model_dir, tmp_path):
    ref, ref_grads = _engine(tiny_model_dir, tmp_path / "a", fp16=False)
    ref.train_step()
    eng, grads = _engine(tiny_model_dir, tmp_path / "b", fp16=True, scaler=torch.amp.GradScaler("cpu"))
    m = eng.train_step()
    assert m["grad_scale"] == 65536.0 and m["skipped_steps"] == 0
    head = eng.model.lm_head.weight
    g, g_ref = grads[id(head)], ref_grads[id(ref.model.lm_head.weight)]
    # unscaled: an fp16 backward of this loss leaves (almost) every lm_head gradient at exactly 0
    assert (g != 0).float().mean() > 0.9
    torch.testing.assert_close(g, g_ref, rtol=0.05, atol=1e-3 * float(g_ref.abs().max()))


def test_overflow_halves_the_scale_and_does_not_abort(tiny_model_dir, tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)  # scaled fp16 gradients are inf
    eng, _ = _engine(tiny_model_dir, tmp_path, fp16=True, scaler=scaler, max_consecutive_skips=1)
    before = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    for _ in range(2):
        m = eng.train_step()
    assert m["skipped_steps"] == 2 and eng.consecutive_skips == 0
    assert m["grad_scale"] == 2.0 ** 99 and float(scaler.get_scale()) == 2.0 ** 98
    assert all(torch.equal(p, before[n]) for n, p in eng.model.named_parameters())
    path = eng.save_checkpoint()
    with open(os.path.join(path, "trainer.json")) as f:
        assert json.load(f)["grad_scaler"]["scale"] == 2.0 ** 98


def test_unscaled_fp16_underflows(tiny_model_dir, tmp_path):
    """The failure the scaler prevents (kept as a check that the emulation above really is fp16)."""
    eng, grads = _engine(tiny_model_dir, tmp_path, fp16=True, scaler=None)
    eng.train_step()
    assert (grads[id(eng.model.lm_head.weight)] != 0).float().mean() < 0.1
