"""Reward model: the loss with margins and weights, learning, eval.json, save/load round trips, LoRA."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from posttrain.algorithms.reward_model import RewardModelConfig, RewardModelTrainer, make_engine
from posttrain.config import load_config
from posttrain.core.engine import Engine
from posttrain.core.models import save_final
from posttrain.rewards.reward_model import RewardModel, sequence_rewards

from .test_dpo import ROOT, write_pref_jsonl


def rm_overrides(model_dir, tmp_path, **kw):
    base = {"model": model_dir, "data.train": write_pref_jsonl(tmp_path / "train.jsonl", ranking_every=4),
            "output_dir": str(tmp_path / "out"), "max_steps": 3, "batch_size": 8, "learning_rate": 3e-3,
            "lr_scheduler": "constant", "report_to": "[]", "max_length": 64, "seed": 1}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def rm_cfg(model_dir, tmp_path, **kw):
    return load_config(RewardModelConfig, None, rm_overrides(model_dir, tmp_path, **kw))


def read(path):
    return [json.loads(line) for line in open(path)]


def test_loss_is_bradley_terry_with_margin_weights_and_centering(tiny_model_dir, tmp_path):
    rows = [r | {"margin": 0.5 * i} for i, r in enumerate(read(write_pref_jsonl(tmp_path / "m.jsonl", n=8,
                                                                                ranking_every=3)))]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = rm_cfg(tiny_model_dir, tmp_path, center_rewards_coefficient=0.1, padding_free=False,  # padded rows here
                 score_once=False,                                                          # as 2P pair sequences
                 **{"data.train": tmp_path / "m.jsonl"})
    eng = make_engine(cfg)
    batch = eng.algo.micro_batches(0)[0]
    assert batch.num_pairs == 3 * 3 + 5 and batch.num_items == pytest.approx(8.0)   # 3 rankings of K=3
    loss, m = eng.algo.loss(eng.model, batch, eng.algo.normaliser([batch]))
    with torch.no_grad():
        r = sequence_rewards(eng.model, batch.input_ids, batch.attention_mask)
    p, w = batch.num_pairs, batch.weight
    assert bool((batch.margin > 0).any())
    expected = ((w * -F.logsigmoid(r[:p] - r[p:] - batch.margin)).sum()
                + 0.1 * (w * (r[:p] + r[p:]) ** 2).sum()) / batch.num_items
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(m["accuracy"]) == pytest.approx(float((r[:p] > r[p:]).float().mean()))


def test_grad_accum_1x8_equals_8x1_with_rankings(tiny_model_dir, tmp_path):
    def grads(**kw):
        eng = make_engine(rm_cfg(tiny_model_dir, tmp_path, **kw))
        m = eng._backward_step(eng.algo.micro_batches(0))
        return m["loss"], {n: p.grad.clone() for n, p in eng.model.named_parameters() if p.grad is not None}
    loss_a, a = grads(batch_size=8, grad_accum=1)
    loss_b, b = grads(batch_size=1, grad_accum=8)
    assert loss_a == pytest.approx(loss_b, rel=1e-5) and "score.weight" in a
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-6, rtol=1e-4)


def test_cli_rm_learns_writes_eval_json_and_reloads(tiny_model_dir, tmp_path):
    from posttrain.cli import main

    evals = write_pref_jsonl(tmp_path / "eval.jsonl", n=24, seed=9)
    args = rm_overrides(tiny_model_dir, tmp_path, max_steps=10, **{"data.eval": evals})
    assert main(["rm", "--config", os.path.join(ROOT, "recipes", "rm-tiny.yaml"), *args]) == 0
    out = tmp_path / "out"
    report = json.loads((out / "eval.json").read_text())
    assert report["step"] == 10 and report["pairs"] == 24 and report["accuracy"] >= 0.9
    assert {"margin", "ece", "by_margin", "length_pearson", "length_spearman"} <= set(report)
    assert "eval/accuracy" in read(out / "metrics.jsonl")[-1] and (out / "loss.png").exists()
    rm = RewardModel.from_pretrained(str(out / "final"))
    rows = read(evals)
    chosen = rm([r["prompt"] for r in rows], [r["chosen"][0]["content"] for r in rows], extra=list(range(24)))
    rejected = rm([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    margins = [c - r for c, r in zip(chosen, rejected)]
    assert rm.name == "reward_model" and sum(d > 0 for d in margins) / 24 == report["accuracy"]
    assert sum(margins) / 24 == pytest.approx(report["margin"], abs=1e-4)


def test_lora_trains_the_head_and_adapter_folder_round_trips(tiny_model_dir, tmp_path):
    cfg = rm_cfg(tiny_model_dir, tmp_path, **{"lora.r": 4})
    eng = make_engine(cfg)
    trainable = [n for n, p in eng.model.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable) and any("lora_A" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    head = [p.detach().clone() for n, p in eng.model.named_parameters() if "score" in n and p.requires_grad]
    eng.train_step()
    moved = [p for n, p in eng.model.named_parameters() if "score" in n and p.requires_grad]
    assert not torch.equal(head[0], moved[0])
    save_final(eng.model, eng.tokenizer, str(tmp_path / "out" / "final"))      # what Engine.train ends with
    assert (tmp_path / "out" / "final" / "adapter_config.json").exists()
    prompts = [[{"role": "user", "content": "Review: print(x)"}]] * 2 + ["plain text prompt"]
    completions = ["x is undefined", "correct clear", " looks fine"]
    live = RewardModel(eng.model, eng.tokenizer)(prompts, completions)
    loaded = RewardModel.from_pretrained(str(tmp_path / "out" / "final"))(prompts, completions)
    assert loaded == pytest.approx(live, abs=1e-5)
    live = RewardModel(eng.model, eng.tokenizer, max_length=32)
    empty = live([prompts[0], "p", "word " * 40], ["", " ", "fine"])      # an empty answer is scored
    assert all(isinstance(x, float) for x in empty[:2]) and empty[2] is None   # prompt too long: None, never 0


def test_engine_without_a_scalar_head_says_how_to_build_it(tiny_model_dir, tmp_path):
    cfg = rm_cfg(tiny_model_dir, tmp_path)
    with pytest.raises(ValueError, match="make_engine"):
        Engine(cfg, RewardModelTrainer(cfg))
