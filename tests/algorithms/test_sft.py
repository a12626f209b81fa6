"""The SFT trainer: negatives are left out unless the loss uses them."""
import json

import pytest

from posttrain.algorithms.sft import SFT, SFTConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine

from tests.core.helpers import sft_overrides, write_sft_jsonl


def _engine(tiny_model_dir, tmp_path, data, **kw):
    cfg = load_config(SFTConfig, None, sft_overrides(tiny_model_dir, data, str(tmp_path / "out"), batch_size=8, **kw))
    return Engine(cfg, SFT(cfg))


@pytest.mark.parametrize("loss", ["nll", "dft"])
def test_negatives_do_not_shrink_the_positive_loss(tiny_model_dir, tmp_path, capsys, loss):
    # each row gives a positive and a negative completion of about the same length: kept in the batch, the
    # negatives' tokens would count in the normaliser and the nll loss would be ~ nll * pos / (pos + neg) ~ nll / 2
    data = write_sft_jsonl(tmp_path / "neg.jsonl", n=16, negatives=True)
    eng = _engine(tiny_model_dir, tmp_path, data, loss=loss)
    assert "train: ignored 16 negative completions" in capsys.readouterr().err
    assert len(eng.algo.examples) == 16 and not any(e.negative for e in eng.algo.examples)
    m = eng._backward_step(eng.algo.micro_batches(0))
    if loss == "nll":  # one micro-batch: the loss is the mean nll over the positive tokens
        assert m["loss"] == pytest.approx(m["nll"], rel=1e-5)
    batch = eng.algo.micro_batches(0)[0]
    assert float(batch.neg_mask.sum()) == 0 and batch.num_items == float(batch.mask.sum())


def test_unlikelihood_keeps_negatives(tiny_model_dir, tmp_path):
    data = write_sft_jsonl(tmp_path / "neg.jsonl", n=16, negatives=True)
    eng = _engine(tiny_model_dir, tmp_path, data, loss="unlikelihood")
    assert sum(e.negative for e in eng.algo.examples) == 16


def test_only_negatives_is_an_error(tiny_model_dir, tmp_path):
    path = tmp_path / "neg_only.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f" a{i}", "label": False}) + "\n"
                            for i in range(4)))
    with pytest.raises(ValueError, match="every completion is negative"):
        _engine(tiny_model_dir, tmp_path, str(path))
