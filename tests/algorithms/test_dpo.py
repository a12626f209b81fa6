"""DPO: log 2 at the start, learning on a separable toy set, SimPO without a reference, exact resume, CLI."""
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch

from posttrain.algorithms.dpo import DPO, DPOConfig, sequence_logps
from posttrain.config import load_config
from posttrain.core.engine import Engine

GOOD = ["correct", "clear", "specific", "honest", "solid", "logic"]
BAD = ["bug", "undefined", "variable", "not", "print", "x"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_pref_jsonl(path, n=48, seed=0, ranking_every=0):
    """Separable toy preferences: the chosen response uses GOOD words, the rejected one BAD words, with
    varied lengths; every `ranking_every`-th row is a K=3 ranking (good, good-ish mix, bad)."""
    rng = random.Random(seed)
    words = lambda pool: " ".join(rng.choice(pool) for _ in range(rng.randint(2, 7)))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            prompt = [{"role": "user", "content": f"Review: def f{i}(x): return x + {rng.randint(0, 99)}"}]
            good, bad = [{"role": "assistant", "content": words(GOOD)}], [{"role": "assistant", "content": words(BAD)}]
            row = {"prompt": prompt, "chosen": good, "rejected": bad}
            if ranking_every and i % ranking_every == 0:
                mixed = [{"role": "assistant", "content": words(GOOD) + " " + words(BAD)}]
                row = {"prompt": prompt, "responses": [good, mixed, bad]}
            f.write(json.dumps(row) + "\n")
    return str(path)


def overrides(model_dir, tmp_path, **kw):
    base = {"model": model_dir, "data.train": write_pref_jsonl(tmp_path / "train.jsonl"),
            "output_dir": str(tmp_path / "out"), "max_steps": 4, "batch_size": 8, "learning_rate": 3e-3,
            "lr_scheduler": "constant", "report_to": "[]", "max_length": 64, "seed": 1}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def dpo_cfg(model_dir, tmp_path, **kw):
    return load_config(DPOConfig, None, overrides(model_dir, tmp_path, **kw))


@pytest.mark.parametrize("precompute", [False, True])
def test_loss_is_log2_when_policy_equals_reference(tiny_model_dir, tmp_path, precompute):
    cfg = dpo_cfg(tiny_model_dir, tmp_path, precompute_ref=precompute)
    eng = Engine(cfg, DPO(cfg))
    assert (eng.algo.ref is None) == precompute            # precompute frees the frozen copy
    batch = eng.algo.micro_batches(0)[0]
    assert batch.ref_chosen_logps is not None              # cached, or run when the batch was built
    m = eng._backward_step([batch])
    assert m["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert m["rewards/margin"] == pytest.approx(0.0, abs=1e-5)
    if not precompute:  # the same forward twice: exactly equal, a tie, which counts as wrong
        assert m["rewards/accuracy"] == 0.0 and m["rewards/margin"] == 0.0
    assert m["logps/chosen"] < 0 and m["logps/rejected"] < 0


def test_dpo_learns_a_separable_preference(tiny_model_dir, tmp_path):
    evals = write_pref_jsonl(tmp_path / "eval.jsonl", n=16, seed=7)
    cfg = dpo_cfg(tiny_model_dir, tmp_path, max_steps=12, **{"data.eval": evals})
    last = Engine(cfg, DPO(cfg)).train()
    rows = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4) and rows[0]["rewards/accuracy"] == 0.0
    assert last["loss"] < 0.5 * math.log(2) and last["rewards/accuracy"] == 1.0
    assert last["eval/rewards/accuracy"] >= 0.9
    assert last["eval/loss"] < math.log(2) and last["rewards/chosen"] > last["rewards/rejected"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margin", "logps/chosen", "logps/rejected"):
        assert all(key in r for r in rows)
    assert (tmp_path / "out" / "loss.png").exists() and (tmp_path / "out" / "final" / "config.json").exists()


def test_simpo_builds_no_reference(tiny_model_dir, tmp_path, monkeypatch):
    import copy

    import posttrain.core.models as models

    def refuse(*a, **k):
        raise AssertionError("SimPO must not build a reference model")
    real_deepcopy = copy.deepcopy
    cfg = dpo_cfg(tiny_model_dir, tmp_path, loss="simpo", beta=2.0, precompute_ref=True, max_steps=3)
    monkeypatch.setattr(models, "Reference", refuse)
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: refuse() if isinstance(x, torch.nn.Module)
                        else real_deepcopy(x, *a))
    eng = Engine(cfg, DPO(cfg))
    assert eng.algo.ref is None and not eng.algo.needs_ref
    assert eng.algo.examples[0].ref_logps is None
    m = eng._backward_step(eng.algo.micro_batches(0))
    assert math.isfinite(m["loss"]) and m["loss"] > 0 and "rewards/accuracy" in m


def test_rpo_term_and_lora_reference_is_the_base(tiny_model_dir, tmp_path):
    cfg = dpo_cfg(tiny_model_dir, tmp_path, rpo_alpha=0.5, padding_free=False, **{"lora.r": 4})
    eng = Engine(cfg, DPO(cfg))
    assert eng.algo.ref._shared                       # the adapter-disabled model, not a copy
    with torch.no_grad():
        for n, p in eng.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    batch = eng.algo.micro_batches(0)[0]
    loss, m = eng.algo.loss(eng.model, batch, eng.algo.normaliser([batch]))
    assert m["rewards/margin"] != 0.0 and m["nll"] > 0
    base_loss = float(loss.detach()) - 0.5 * float(m["nll"])
    lengths, p = batch.mask.sum(-1), batch.num_pairs
    with torch.no_grad():
        logps = sequence_logps(eng.model, batch.input_ids, batch.attention_mask, batch.mask, 1024)
        with eng.model.disable_adapter():
            ref = sequence_logps(eng.model, batch.input_ids, batch.attention_mask, batch.mask, 1024)
    h = (logps[:p] - ref[:p]) - (logps[p:] - ref[p:])
    assert base_loss == pytest.approx(float(-torch.nn.functional.logsigmoid(0.1 * h).mean()), rel=1e-4)
    assert float(m["nll"]) == pytest.approx(float((-logps[:p] / lengths[:p]).mean()), rel=1e-4)


def test_data_order_and_cached_reference_are_functions_of_the_step(tiny_model_dir, tmp_path):
    """What exact resume needs from the algorithm (the engine's resume is tested in tests/core): a fresh
    run's batches at step k, reference log-probs included, equal the original run's."""
    small = write_pref_jsonl(tmp_path / "small.jsonl", n=12)
    cfg = dpo_cfg(tiny_model_dir, tmp_path, precompute_ref=True, grad_accum=2, batch_size=3, **{"data.train": small})
    a, b = Engine(cfg, DPO(cfg)), Engine(cfg, DPO(cfg))
    a.train_step()                                       # a has moved on; b is the resumed process
    for step in (1, 7):
        for x, y in zip(a.algo.micro_batches(step), b.algo.micro_batches(step)):
            assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.ref_chosen_logps, y.ref_chosen_logps)
    assert not torch.equal(a.algo.micro_batches(0)[0].input_ids, a.algo.micro_batches(1)[0].input_ids)


def test_cli_dpo_recipe_exits_zero(tiny_model_dir, tmp_path):
    args = overrides(tiny_model_dir, tmp_path, max_steps=1, **{"data.eval": "null"})
    proc = subprocess.run([sys.executable, "-m", "posttrain", "dpo", "--config",
                           os.path.join(ROOT, "recipes", "dpo-tiny.yaml"), *args, "save_steps=0", "eval_steps=0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done: loss" in proc.stdout and (tmp_path / "out" / "final" / "config.json").exists()
