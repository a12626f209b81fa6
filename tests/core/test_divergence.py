"""A diverged run is not a success: the final save refuses with a clear error and exit code 2, and the
summary says how many steps were skipped."""
import os

import pytest
import torch

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.cli import main
from posttrain.config import load_config
from posttrain.core.divergence import divergence_problems
from posttrain.core.engine import Engine, TrainingAborted

from .helpers import sft_overrides, write_sft_jsonl


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr(Engine, "plot", lambda self: None)  # matplotlib is not tested here


class NaNAt(SFT):
    """SFT whose loss is NaN at the given 0-based steps (a bad batch, an overflow)."""

    def __init__(self, cfg, bad_steps):
        super().__init__(cfg)
        self.bad = set(bad_steps)

    def loss(self, model, batch, num_items):
        loss, metrics = super().loss(model, batch, num_items)
        return (loss * float("nan") if self.engine.step in self.bad else loss), metrics


def _cfg(model_dir, tmp_path, **kw):
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=16)
    base = dict(max_steps=6, batch_size=2, threads=1)
    return load_config(SFTConfig, None, sft_overrides(model_dir, data, str(tmp_path / "out"), **{**base, **kw}))


def test_huge_learning_rate_is_refused_and_good_checkpoints_kept(tiny_model_dir, tmp_path, capsys):
    """lr=1e6: the loss stays finite (near uniform) and no step is skipped, but the weights reach ~1e6."""
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=16)
    argv = ["sft"] + sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), max_steps=4, save_steps=2,
                                   batch_size=2, threads=1, learning_rate=1e6)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: the run diverged, so no final model was saved" in err and "largest weight grew" in err
    assert "step-00000002" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "final")
    assert os.listdir(tmp_path / "out" / "checkpoints") == ["step-00000002"]  # not rotated out by a bad one


def test_too_many_skipped_steps_refused(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path)  # 3 of 6 skipped = 50% > max_skipped_fraction 0.1, and 3 >= 3
    with pytest.raises(TrainingAborted, match=r"3 of 6 steps \(50%\) were skipped as non-finite"):
        Engine(cfg, NaNAt(cfg, [1, 2, 4])).train()
    assert not os.path.exists(tmp_path / "out" / "final")


def test_two_skips_in_a_short_run_are_allowed_and_counted(tiny_model_dir, tmp_path, capfd):
    """Defaults: 2 of 6 (33% > 10%) is under min_skipped_steps=3, so the run is saved, and says so."""
    cfg = _cfg(tiny_model_dir, tmp_path)
    last = Engine(cfg, NaNAt(cfg, [1, 3])).train()
    assert last["skipped_steps"] == 2 and os.path.isdir(tmp_path / "out" / "final")
    assert "2 of 6 steps were skipped as non-finite" in capfd.readouterr().err


def test_skipped_share_rule_short_and_long_runs():
    """Refused iff skipped/steps > 0.1 and skipped >= 3 (the defaults)."""
    model = torch.nn.Linear(3, 2)

    def refused(skipped, steps):
        return bool(divergence_problems(model=model, last_loss=1.0, skipped=skipped, steps=steps, init_abs_max=1.0,
                                        max_skipped_fraction=0.1, max_weight_growth=100.0, min_skipped_steps=3))

    assert not refused(1, 5) and not refused(2, 5) and not refused(2, 19)  # 20%, 40%, 10.5%: under 3 skips
    assert refused(3, 5) and refused(3, 29)  # 60%, 10.3%
    assert not refused(3, 30) and not refused(100, 1000)  # exactly 10%: not more than the share
    assert refused(4, 30) and refused(101, 1000)  # long runs: the share alone decides, as before


def test_nonfinite_last_step_refused(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, max_skipped_fraction=1.0)
    with pytest.raises(TrainingAborted, match="the last step's loss is nan"):
        Engine(cfg, NaNAt(cfg, [5])).train()


def test_nonfinite_weight_refused():
    model = torch.nn.Linear(3, 2)
    ok = dict(model=model, last_loss=1.0, skipped=0, steps=10, init_abs_max=1.0, max_skipped_fraction=0.1,
              max_weight_growth=100.0, min_skipped_steps=3)
    assert divergence_problems(**ok) == []
    with torch.no_grad():
        model.weight[0, 1] = float("inf")
    assert divergence_problems(**ok) == ["1 weight tensor(s) hold nan or inf (e.g. weight)"]


def test_summary_line_says_how_many_steps_were_skipped(tiny_model_dir, tmp_path, capsys):
    data = write_sft_jsonl(tmp_path / "train.jsonl", n=8)
    assert main(["sft"] + sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), max_steps=2, batch_size=2,
                                        threads=1)) == 0
    assert ", 0 of 2 steps skipped (non-finite)" in capsys.readouterr().out
