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


def test_two_processes_sample_the_prompts_and_seeds_of_one():
    """Round r on processes 0 and 1 of 2 asks the backend for exactly the prompts and per-prompt seeds that
    one process asks for (in order), so the hf backend samples the same completions (its per-prompt streams:
    tests/rollout/test_rollout_hf.py); evaluation seeds by the held-out row, on any number of processes.
    The 2-process runs themselves: tests/distributed/test_matrix.py (slow)."""
    from types import SimpleNamespace

    from posttrain.core.algorithm import StepSampler

    class Recorder:
        def generate(self, prompts, n, params):
            self.calls.append((prompts, params.seeds))

        def sync_weights(self, model):
            pass

    def asked(rank, world, rnd, per_process, evaluate=False):
        algo = Reinforce(OnlineConfig(seed=3, output_dir="unused"))
        algo.engine = SimpleNamespace(rank=rank, world=world, model=None)
        algo.prompts = algo.eval_prompts = SimpleNamespace(texts=[f"p{i}" for i in range(10)])
        algo.sampler = StepSampler(10, per_process, 1, 3, rank, world)
        algo.backend = Recorder()
        algo.backend.calls = []
        if evaluate:
            mine = list(range(rank, 10, world))
            algo.backend.generate([algo.eval_prompts.texts[i] for i in mine], 1,
                                  algo.sampling(-1, 0.0, seeds=algo.prompt_seeds(-1, mine)))
        else:
            algo.generate(rnd)
        return algo.backend.calls[0]

    for rnd in (0, 3):  # round 3 wraps into the second epoch of the 10 prompts
        one = asked(0, 1, rnd, 6)
        halves = [asked(r, 2, rnd, 3) for r in (0, 1)]
        assert halves[0][0] + halves[1][0] == one[0] and halves[0][1] + halves[1][1] == one[1]
        assert len(set(one[1])) == 6  # every prompt of the round has its own stream
    assert asked(0, 1, 1, 6)[1] != asked(0, 1, 0, 6)[1]  # another round, other seeds
    ev1, ev2 = asked(0, 1, 0, 6, True), [asked(r, 2, 0, 3, True) for r in (0, 1)]
    assert dict(zip(*ev1)) == {**dict(zip(*ev2[0])), **dict(zip(*ev2[1]))}
