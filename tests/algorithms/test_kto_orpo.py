"""KTO and ORPO trainers: hand values at the start, learning a separable toy preference, unpaired-row
errors, exact resume, `--help`."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from posttrain.algorithms.kto import KTO, KTOConfig
from posttrain.algorithms.orpo import ORPO, ORPOConfig
from posttrain.config import load_config
from posttrain.core.engine import Engine
from posttrain.data.errors import DataError
from tests.algorithms.test_dpo import overrides, write_pref_jsonl


def write_unpaired(path, n=24):
    """The toy preferences as unpaired rows: chosen -> label true, rejected -> label false."""
    pref = [json.loads(line) for line in open(write_pref_jsonl(str(path) + ".pref", n=n))]
    with open(path, "w") as f:
        for row in pref:
            f.write(json.dumps({"prompt": row["prompt"], "completion": row["chosen"], "label": True}) + "\n")
            f.write(json.dumps({"prompt": row["prompt"], "completion": row["rejected"], "label": False}) + "\n")
    return str(path)


def _metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def test_kto_starts_at_half_lambda_and_separates_desirable_from_undesirable(tiny_model_dir, tmp_path):
    data = write_unpaired(tmp_path / "unpaired.jsonl")
    cfg = load_config(KTOConfig, None, overrides(tiny_model_dir, tmp_path, max_steps=10, beta=0.5,
                                                 desirable_weight=1.0, undesirable_weight=1.5,
                                                 **{"data.train": data}))
    eng = Engine(cfg, KTO(cfg))
    b = eng.algo.micro_batches(0)[0]
    assert b.kl_input_ids is not None and b.labels.any() and (~b.labels).any()
    loss, m = eng.algo.loss(eng.model, b, eng.algo.normaliser([b]))
    # policy = reference: every reward is 0 and z_ref = 0, so each row's loss is lambda_y * (1 - sigmoid(0))
    expected = sum(0.5 * (1.0 if y else 1.5) for y in b.labels.tolist()) / len(b.labels)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6) and float(m["kl"]) == 0.0
    eng.train()
    rows = _metrics(cfg.output_dir)
    assert rows[-1]["rewards/desirable"] > 0 > rows[-1]["rewards/undesirable"]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_kto_takes_preference_rows_and_refuses_bad_labels(tiny_model_dir, tmp_path):
    cfg = load_config(KTOConfig, None, overrides(tiny_model_dir, tmp_path, max_steps=1))  # preference rows
    eng = Engine(cfg, KTO(cfg))
    assert len(eng.algo.examples) == 2 * 48 and sum(e.label for e in eng.algo.examples) == 48
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b", "label": true}\n{"prompt": "a", "completion": "c"}\n'
                   '{"prompt": "a", "completion": "d", "label": "yes"}\n')
    cfg = load_config(KTOConfig, None, overrides(tiny_model_dir, tmp_path, **{"data.train": str(bad)}))
    with pytest.raises(DataError) as err:
        Engine(cfg, KTO(cfg))
    text = str(err.value)
    assert "bad.jsonl:2" in text and "label" in text and "missing" in text
    assert "bad.jsonl:3" in text and "expected a bool" in text and "found str" in text


def test_orpo_needs_no_reference_and_learns_the_preference(tiny_model_dir, tmp_path, monkeypatch):
    import posttrain.core.models as models

    monkeypatch.setattr(models, "Reference", None)  # ORPO must never build one
    cfg = load_config(ORPOConfig, None, overrides(tiny_model_dir, tmp_path, max_steps=10, lam=1.0))
    last = Engine(cfg, ORPO(cfg)).train()
    rows = _metrics(cfg.output_dir)
    assert rows[-1]["log_odds_ratio"] > rows[0]["log_odds_ratio"] + 0.5
    assert rows[-1]["nll"] < rows[0]["nll"] and last["accuracy"] == 1.0


@pytest.mark.parametrize("algo,cfg_cls", [(KTO, KTOConfig), pytest.param(ORPO, ORPOConfig, marks=pytest.mark.slow)])
def test_resume_is_exact(tiny_model_dir, tmp_path, algo, cfg_cls):
    small = write_pref_jsonl(tmp_path / "small.jsonl", n=12)

    def run(out, steps):
        cfg = load_config(cfg_cls, None, overrides(tiny_model_dir, tmp_path, max_steps=steps, batch_size=4,
                                                   output_dir=str(out), **{"data.train": small}))
        Engine(cfg, algo(cfg)).train()
        return load_file(os.path.join(out, "final", "model.safetensors")), _metrics(out)

    a, ma = run(tmp_path / "a", 3)
    run(tmp_path / "b", 2)
    b, mb = run(tmp_path / "b", 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]


def test_help_documents_the_keys(capsys):
    from posttrain.cli import main

    for name, keys in [("kto", ("desirable_weight", "undesirable_weight", "beta")), ("orpo", ("lam",))]:
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert all(k in out for k in keys), out


@pytest.mark.parametrize("name,algo,cfg_cls", [("kto-tiny", KTO, KTOConfig), ("orpo-tiny", ORPO, ORPOConfig)])
def test_recipes_load_and_pass_the_checks(name, algo, cfg_cls):
    root = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")
    algo(load_config(cfg_cls, os.path.join(root, f"{name}.yaml")))
