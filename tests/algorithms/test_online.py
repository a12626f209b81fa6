"""The online core carries a new algorithm: a toy REINFORCE written here in a few lines (its config,
`prompts_per_round`, `round_of`, `collect`, `loss`) trains, logs round and eval metrics, and resumes."""
import json
import os

import torch

from posttrain.algorithms.online import OnlineAlgorithm, OnlineConfig
from posttrain.algorithms.online.buffer import collate_rows
from posttrain.algorithms.online.metrics import summarise
from posttrain.config import DataConfig
from posttrain.core.engine import Engine
from posttrain.core.logprobs import token_logps
from posttrain.losses.reduce import masked_sum


def digits(prompts, completions, **columns):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


class Reinforce(OnlineAlgorithm):
    name = "reinforce"

    def prompts_per_round(self):
        return self.cfg.batch_size

    def round_of(self, step):
        return step

    def collect(self, rnd):
        idx, ro = self.generate(rnd)
        scores = self.score(self.prompts, idx, ro)
        total = torch.tensor(scores.total)
        self.batches = [collate_rows(ro.prompt_ids, ro.completion_ids, ro.completion_logps, total - total.mean(),
                                     self.engine.tokenizer.pad_token_id, self.engine.device)]
        self.round_metrics = summarise(scores, ro, self.reward.names)

    def loss(self, model, batch, norm):
        logps = token_logps(model, batch.input_ids, batch.attention_mask)
        return -masked_sum(logps * batch.advantages, batch.mask) / norm.num_tokens, {}


def _run(model_dir, prompts, out, max_steps):
    cfg = OnlineConfig(model=model_dir, output_dir=str(out), max_steps=max_steps, batch_size=4, max_length=48,
                       max_new_tokens=6, report_to=[], threads=1, seed=1, save_steps=1,
                       data=DataConfig(train=prompts, eval=prompts, max_eval_rows=2))
    Engine(cfg, Reinforce(cfg, reward=digits)).train()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_a_new_algorithm_on_the_core_trains_evaluates_and_resumes(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Count to {i}:"}) + "\n" for i in range(8)))
    whole = _run(tiny_model_dir, str(prompts), tmp_path / "whole", 3)
    assert len(whole) == 3 and {"loss", "reward/total/mean", "completion_len/mean"} <= set(whole[0])
    assert "eval/reward/total/mean" in whole[-1]
    _run(tiny_model_dir, str(prompts), tmp_path / "cut", 2)
    resumed = _run(tiny_model_dir, str(prompts), tmp_path / "cut", 3)
    keep = ("loss", "reward/total/mean", "grad_norm")
    assert [resumed[-1][k] for k in keep] == [whole[-1][k] for k in keep]
