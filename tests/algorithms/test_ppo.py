"""PPO-RLHF: the loss, learning a toy reward, the KL penalty at work, exact resume, LoRA, the CLI."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from posttrain.algorithms.ppo import PPO, PPOConfig
from posttrain.algorithms.value_head import attach_value_head
from posttrain.config import DataConfig, LoraConfig
from posttrain.core.batch import RolloutBatch
from posttrain.core.engine import Engine
from posttrain.core.logprobs import token_logps

TIMING = ("step_s", "tokens_per_s")


class Digits:
    """Toy reward: the fraction of a completion's characters that are digits."""
    name = "digits"

    def __call__(self, prompts, completions, **columns):
        return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppo-data") / "prompts.jsonl"
    with open(path, "w") as f:
        for i in range(64):
            f.write(json.dumps({"prompt": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}) + "\n")
    return str(path)


def config(model, prompts, out, **kw):
    base = dict(model=model, output_dir=str(out), max_steps=24, batch_size=16, max_length=64, max_new_tokens=8,
                learning_rate=1e-2, lr_scheduler="constant", report_to=[], ppo_epochs=2, init_kl_coef=0.0,
                threads=1, resume=False, seed=0, data=DataConfig(train=prompts))
    base.update(kw)
    return PPOConfig(**base)


def train(cfg, reward=None) -> list[dict]:
    Engine(cfg, PPO(cfg, reward=reward or Digits())).train()
    with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_loss_runs_params_move_and_value_loss_falls(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    head = attach_value_head(model)
    ids = torch.randint(5, model.config.vocab_size, (4, 12))
    attn = torch.ones_like(ids)
    mask = torch.zeros(4, 12)
    mask[:, 6:] = 1.0
    with torch.no_grad():
        old = token_logps(model, ids, attn) * mask
    returns = torch.tensor([[1.0], [-1.0], [0.5], [0.0]]) * mask
    batch = RolloutBatch(input_ids=ids, attention_mask=attn, mask=mask, old_logps=old,
                         advantages=torch.randn(4, 12) * mask, returns=returns, old_values=torch.zeros(4, 12))
    algo = PPO(config(tiny_model_dir, "unused", "unused", cliprange_value=100.0))
    before = model.lm_head.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    value_losses = []
    for _ in range(20):
        loss, metrics = algo.loss(model, batch, algo.normaliser([batch]))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        value_losses.append(metrics["value_loss"])
    assert {"policy_loss", "clip_frac", "vf_clip_frac", "entropy", "approx_kl"} <= set(metrics)
    assert value_losses[-1] < 0.1 * value_losses[0], value_losses
    assert not torch.equal(model.lm_head.weight, before) and float(head.weight.detach().abs().sum()) > 0


def test_reward_rises_and_a_large_kl_penalty_keeps_the_policy_close(tiny_model_dir, prompts, tmp_path):
    free = train(config(tiny_model_dir, prompts, tmp_path / "beta0"))
    held = train(config(tiny_model_dir, prompts, tmp_path / "beta1", init_kl_coef=1.0))
    mean = lambda ms, key: sum(m[key] for m in ms) / len(ms)  # noqa: E731  (2 steps per round: 2 rounds)
    first, last = mean(free[:4], "score"), mean(free[-4:], "score")
    assert last > first + 0.1, (first, last)
    kl_free, kl_held = mean(free[-4:], "kl"), mean(held[-4:], "kl")
    assert free[0]["kl"] == held[0]["kl"] == 0.0          # same seeds: the first round is the reference itself
    assert kl_held < 0.5 * kl_free, (kl_held, kl_free)
    assert {m["kl_coef"] for m in held} == {1.0}


def test_resume_equals_uninterrupted_run(tiny_model_dir, prompts, tmp_path):
    kw = dict(batch_size=4, grad_accum=2, max_new_tokens=6, kl_ctl="adaptive", init_kl_coef=0.1, target_kl=0.01,
              kl_horizon=10, save_steps=0, resume=True)
    whole = train(config(tiny_model_dir, prompts, tmp_path / "whole", max_steps=6, **kw))
    train(config(tiny_model_dir, prompts, tmp_path / "cut", max_steps=3, **kw))   # stops mid-round (2 epochs)
    resumed = train(config(tiny_model_dir, prompts, tmp_path / "cut", max_steps=6, **kw))
    strip = lambda ms: [{k: v for k, v in m.items() if k not in TIMING} for m in ms if m["step"] > 3]  # noqa: E731
    assert strip(resumed) == strip(whole)
    assert whole[-1]["kl_coef"] != 0.1                   # the adaptive coefficient moved and was restored
    for name in ("final/model.safetensors", "checkpoints/step-00000006/model.safetensors"):
        with safe_open(str(tmp_path / "whole" / name), "pt") as a, safe_open(str(tmp_path / "cut" / name), "pt") as b:
            assert set(a.keys()) == set(b.keys())
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    with safe_open(str(tmp_path / "whole/checkpoints/step-00000006/model.safetensors"), "pt") as f:
        assert "v_head.weight" in f.keys()


def test_lora_reference_is_the_base_and_final_is_the_adapter(tiny_model_dir, prompts, tmp_path):
    cfg = config(tiny_model_dir, prompts, tmp_path / "lora", max_steps=2, batch_size=4, max_new_tokens=4,
                 init_kl_coef=0.1, lora=LoraConfig(r=4, alpha=8))
    ms = train(cfg)
    assert ms[0]["kl"] == 0.0                            # adapter starts at zero: policy == reference
    final = tmp_path / "lora" / "final"
    assert (final / "adapter_config.json").exists()
    with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
        assert not any("v_head" in k for k in f.keys())


def test_cli_ppo_with_reward_model_and_judge(tiny_model_dir, prompts, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(rm)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(rm)
    out = tmp_path / "run"
    args = [f"model={tiny_model_dir}", f"data.train={prompts}", f"data.eval={prompts}", "data.max_eval_rows=4",
            f"reward_model={rm}", f"judge.model={tiny_model_dir}", "judge.weight=0.5", "missing_eos_penalty=1.0",
            f"output_dir={out}", "max_steps=2", "ppo_epochs=1", "batch_size=4", "max_new_tokens=4",
            "max_length=64", "report_to=[]", "threads=1"]
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "..", "src")}
    proc = subprocess.run([sys.executable, "-m", "posttrain", "ppo", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = [json.loads(line) for line in open(out / "metrics.jsonl")][-1]
    assert {"reward/reward_model/mean", "reward/judge/mean", "kl", "kl_coef", "eval/score"} <= set(last)
    with safe_open(str(out / "final" / "model.safetensors"), "pt") as f:
        assert not any("v_head" in k for k in f.keys())
    AutoModelForCausalLM.from_pretrained(out / "final")


def test_round_size_follows_the_batch_the_engine_derives():
    """`distributed.global_batch_size` sets batch_size after PPO was built: the round and the step's rows
    must follow (they were fixed at build time, so 2 processes took twice the global batch)."""
    cfg = PPOConfig(output_dir="unused", batch_size=8, num_mini_batches=2)
    algo = PPO(cfg)
    assert algo.prompts_per_round() == 16
    cfg.batch_size = 4  # what apply_global_batch sets for global 8 on 2 processes
    assert algo.rows_per_step == 4 and algo.prompts_per_round() == 8
