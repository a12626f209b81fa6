"""GRPO with verifiable rewards (Shao et al. 2024, "DeepSeekMath", sec. 4) and its variants.

One round: `batch_size * grad_accum / num_generations` prompts per process, `num_generations` (G)
samples each from the rollout backend (prefill once per prompt, KV cache shared by the group), scored
by the configured reward functions (weighted sum; None = could not score: left out and counted).
Advantages are group-relative (`advantage: group`, std scaling with `scale_rewards`) or leave-one-out
(`rloo`), one per sequence, broadcast over its tokens (`rollout_buffer`). A round feeds
`num_iterations` optimizer steps (mu of the paper): the PPO clipped surrogate with the asymmetric
range [1 - epsilon_low, 1 + epsilon_high] (DAPO's clip-higher), plus `beta * k3` KL to a frozen
reference when beta > 0 (no reference is built otherwise). Token losses are reduced by `loss_type`,
one of `losses.policy.AGGREGATIONS`, chosen once:
  grpo     per-sequence token mean, then mean over sequences (the paper)
  dr_grpo  token sum / (sequences * max_new_tokens) (Dr. GRPO; use with scale_rewards: false)
  dapo     token sum / tokens of the whole step (DAPO; TRL's default)
  bnpo     token mean per micro-batch (TRL's bnpo)
All of them divide by the step's GLOBAL counts (`Normaliser` on each micro-batch, summed over every
micro-batch and process when the round is built), so the engine's own `num_items` is not used.

Importance ratios: the first pass over a round uses the trainer's own log-probs (detached) as the old
policy, so its ratio is exactly 1, and keeps them for the later passes: the ratio is always against
the policy that sampled, at the sampling temperature, and never against the sampler's numerics (the
sampler-vs-trainer gap is logged as `logp_mismatch`). No extra forward pass is spent on old log-probs.

Exact resume: round r's prompts and sampling seed are functions of (seed, r, rank) alone, and the
round being trained (rollouts, advantages, old log-probs, metrics) is part of the checkpoint.
Starting from a base model (R1-Zero): set `prompt_template` (e.g. "Question: {prompt}\\nAnswer:"),
which replaces the chat template; from an SFT model leave it null.
Prompts, reward loading, reward columns, metrics and sample tables: `grpo_data`; the round's batches,
advantages and checkpoint form: `rollout_buffer`.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from posttrain.algorithms import rollout_buffer as rb
from posttrain.config import TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import token_logps
from posttrain.losses.advantages import group_advantages, leave_one_out
from posttrain.losses.policy import AGGREGATIONS, kl_k3, ppo_clip_loss
from posttrain.losses.reduce import masked_mean

ESTIMATORS = {"group": group_advantages, "rloo": leave_one_out}


@dataclass
class GRPOConfig(TrainConfig):
    rewards: Any = opt([{"name": "math", "weight": 1.0}],
                       "reward functions: a list of {name, weight, ...options}; name is a built-in (math, format, "
                       "exact_match, length_penalty, code), module:function or a .py file path")
    num_generations: int = opt(8, "samples per prompt (the group size G); batch_size * grad_accum must be a "
                                  "multiple (batch_size counts completions)")
    max_new_tokens: int = opt(64, "completion budget in tokens; prompts longer than max_length - max_new_tokens "
                                  "are dropped")
    temperature: float = opt(1.0, "sampling temperature (> 0); log-probs and entropy are taken at it")
    top_p: float = opt(1.0, "nucleus sampling (1.0 = off)")
    top_k: int = opt(0, "top-k sampling (0 = off)")
    stop: Any = opt([], "strings that end a completion (besides EOS)")
    prompt_template: Any = opt(None, "format string with {prompt} (the last user message) used INSTEAD of the chat "
                                     "template, e.g. for a base model; null = the tokenizer's chat template")
    num_iterations: int = opt(1, "optimizer steps on each round of rollouts (mu); > 1 makes the clip act")
    epsilon_low: float = opt(0.2, "clip range below: ratio >= 1 - epsilon_low")
    epsilon_high: float = opt(0.2, "clip range above: ratio <= 1 + epsilon_high (DAPO clip-higher: 0.28)")
    beta: float = opt(0.0, "weight of the k3 KL to the initial model; 0 = no KL and no reference model loaded")
    loss_type: str = opt("dapo", "token-loss aggregation: grpo, dr_grpo, dapo or bnpo")
    advantage: str = opt("group", "baseline: group (GRPO, mean of the group) or rloo (leave-one-out)")
    scale_rewards: bool = opt(True, "divide group advantages by the group's std (group only; Dr. GRPO: false)")
    filter_zero_std_groups: bool = opt(False, "drop groups whose rewards are all equal from the step")
    rollout_backend: str = opt("hf", "generation backend: hf (transformers) or vllm")
    generation_batch_size: int = opt(64, "sequences decoded together (hf backend)")
    eval_temperature: float = opt(0.0, "evaluation sampling temperature on data.eval (0 = greedy)")
    sample_steps: int = opt(10, "write OUT/samples/step-N.jsonl (prompt, completion, reward) every N steps; 0 = off")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = GRPOConfig


def check_config(c: GRPOConfig) -> None:
    """Raise ValueError naming the first bad GRPO setting."""
    rows = c.batch_size * c.grad_accum
    checks = [
        (c.loss_type in AGGREGATIONS, f"loss_type: expected one of {sorted(AGGREGATIONS)}, found '{c.loss_type}'"),
        (c.advantage in ESTIMATORS, f"advantage: expected one of {sorted(ESTIMATORS)}, found '{c.advantage}'"),
        (c.num_generations >= 2, f"num_generations must be >= 2 (a group compares samples), got {c.num_generations}"),
        (rows % c.num_generations == 0, f"batch_size * grad_accum ({rows}) must be a multiple of num_generations "
                                        f"({c.num_generations}): batch_size counts completions"),
        (c.temperature > 0, f"temperature must be > 0 for training rollouts, got {c.temperature}"),
        (c.num_iterations >= 1, f"num_iterations must be >= 1, got {c.num_iterations}"),
        (c.epsilon_low >= 0 and c.epsilon_high >= 0, "epsilon_low and epsilon_high must be >= 0"),
        (c.beta >= 0, f"beta must be >= 0, got {c.beta}"),
        (c.max_length > c.max_new_tokens, f"max_length ({c.max_length}) must exceed max_new_tokens "
                                          f"({c.max_new_tokens}): it bounds prompt + completion"),
        (not c.data.packing, "data.packing: not used by GRPO (rollouts are right-padded); set it false"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


class GRPO(Algorithm):
    name = "grpo"
    dropout = False  # later passes over a round need exact importance ratios
    plot_keys = ("reward/total/mean", "eval/reward/total/mean", "loss", "kl", "entropy", "clip_frac",
                 "frac_zero_std_groups", "completion_len/mean", "gen_s", "train_s")

    def __init__(self, cfg: GRPOConfig, reward=None):
        """`reward`: a `rewards.CombinedReward` to use instead of building one from `cfg.rewards` (tests)."""
        check_config(cfg)
        self.cfg = cfg
        self.aggregate = AGGREGATIONS[cfg.loss_type]
        est = ESTIMATORS[cfg.advantage]
        self.estimator = functools.partial(est, scale_std=cfg.scale_rewards) if cfg.advantage == "group" else est
        self.reward = reward
        self.ref = None
        self.round, self.batches, self.round_metrics = -1, [], {}
        self.eval_prompts, self.eval_columns = [], []
        self._generated, self._t_ready = False, 0.0

    # ----------------------------------------------------------------- set-up
    def setup(self, engine) -> None:
        from posttrain.algorithms.grpo_data import build_reward, load_prompts
        from posttrain.core.models import Reference
        from posttrain.rollout import make_backend

        c = self.cfg
        self.engine = engine
        self.reward = self.reward or build_reward(c.rewards)
        budget = c.max_length - c.max_new_tokens
        self.prompts, self.columns, dropped = load_prompts(c.data.train, engine.tokenizer, c.prompt_template, budget)
        engine.say(f"train prompts: kept {len(self.prompts)}, dropped {dropped} longer than {budget} tokens")
        if c.data.eval:
            self.eval_prompts, self.eval_columns, _ = load_prompts(c.data.eval, engine.tokenizer, c.prompt_template,
                                                                   budget, max_rows=c.data.max_eval_rows)
        if c.beta > 0:
            self.ref = Reference(engine.model).to(engine.device)
        kw = {"batch_size": c.generation_batch_size} if c.rollout_backend == "hf" else {"max_model_len": c.max_length}
        self.backend = make_backend(c.rollout_backend, engine.model, engine.tokenizer, **kw)
        per_process = c.batch_size * c.grad_accum // c.num_generations
        self.sampler = StepSampler(len(self.prompts), per_process, 1, c.seed, engine.rank, engine.world)

    def sampling(self, round_index: int, temperature: float | None = None):
        from posttrain.rollout import SamplingParams

        c, rank = self.cfg, self.engine.rank
        seed = ((c.seed * 1_000_003 + round_index) * 1_009 + rank) % (2 ** 62)
        t = c.temperature if temperature is None else temperature
        return SamplingParams(max_new_tokens=c.max_new_tokens, temperature=t, top_p=c.top_p, top_k=c.top_k,
                              stop=tuple(c.stop or ()), seed=seed)

    # ----------------------------------------------------------------- rollouts
    def micro_batches(self, step: int):
        round_index = step // self.cfg.num_iterations
        self._generated = round_index != self.round
        if self._generated:
            self.collect(round_index)
        self._t_ready = time.perf_counter()
        return self.batches

    def collect(self, round_index: int) -> None:
        """Generate, score and batch round `round_index`; sets `batches` and `round_metrics`."""
        from posttrain.algorithms.grpo_data import columns_for, summarise, write_samples

        c, eng, g = self.cfg, self.engine, self.cfg.num_generations
        idx = self.sampler.micro_indices(round_index)[0]
        prompts = [self.prompts[i] for i in idx]
        t0 = time.perf_counter()
        self.backend.sync_weights(eng.model)  # no-op for hf (it samples from the policy itself)
        rollouts = self.backend.generate(prompts, g, self.sampling(round_index))
        t1 = time.perf_counter()
        rep = [p for p in prompts for _ in range(g)]
        columns = columns_for([self.columns[i] for i in idx], g, rollouts.completion_ids)
        scores = self.reward.score(rep, rollouts.texts, **columns)
        t2 = time.perf_counter()
        adv, scored, zero_std = rb.grouped_advantages(scores.total, g, self.estimator)
        keep = rb.kept_rows(scored, zero_std, g, c.filter_zero_std_groups)
        self.batches = self._batches(rollouts, adv, keep)
        m = summarise(scores, rollouts, self.reward.names,
                      {"_tokens": sum(float(b.mask.sum()) for b in self.batches), "rows_trained": float(len(keep)),
                       "_zero": float(zero_std.sum()), "_groups": float(len(zero_std))})
        m["frac_zero_std_groups"] = m.pop("_zero") / max(m.pop("_groups"), 1.0)
        rb.with_norm(self.batches, m.pop("_tokens"), m["rows_trained"], c.max_new_tokens)
        self.round, self.round_metrics = round_index, {**m, "reward_s": t2 - t1, "gen_s": t1 - t0}
        first, last = round_index * c.num_iterations + 1, (round_index + 1) * c.num_iterations
        due = [s for s in range(first, last + 1) if c.sample_steps > 0 and (s % c.sample_steps == 0 or s == 1)]
        if due and eng.is_main:
            write_samples(os.path.join(c.output_dir, "samples", f"step-{due[0]:06d}.jsonl"), due[0], rep, rollouts,
                          scores, adv)

    def _batches(self, rollouts, advantages, keep: list[int]) -> list[rb.GRPOBatch]:
        """The kept rows in `grad_accum` micro-batches, with reference log-probs when beta > 0."""
        pad, device = self.engine.tokenizer.pad_token_id, self.engine.device
        batches = [rb.collate_rows([rollouts.prompt_ids[i] for i in part], [rollouts.completion_ids[i] for i in part],
                                   [rollouts.completion_logps[i] for i in part], advantages[part], pad, device)
                   for part in rb.split_even(keep, self.cfg.grad_accum)]
        if self.ref is not None:
            with torch.no_grad(), self.ref.model() as ref:
                for b in batches:
                    lp = token_logps(ref, b.input_ids, b.attention_mask, chunk_size=self.cfg.logits_chunk,
                                     temperature=self.cfg.temperature)
                    b.ref_logps = torch.where(b.mask != 0, lp, torch.zeros_like(lp))
        return batches

    # ----------------------------------------------------------------- loss
    def num_items(self, batch) -> float:
        """Rows (only for the engine's bookkeeping: the loss divides by `batch.norm`)."""
        return float(batch.mask.shape[0])

    def loss(self, model, batch, num_items: float):
        c = self.cfg
        logps, entropy = token_logps(model, batch.input_ids, batch.attention_mask, chunk_size=c.logits_chunk,
                                     temperature=c.temperature, with_entropy=True)
        metrics = {}
        if batch.fresh:  # first pass: the old policy is this very policy (ratio 1 exactly)
            metrics["logp_mismatch"] = masked_mean((logps.detach() - batch.old_logps).abs(), batch.mask)
            batch.old_logps, batch.fresh = logps.detach(), False
        token_loss, pm = ppo_clip_loss(logps, batch.old_logps, batch.advantages, batch.mask,
                                       eps_low=c.epsilon_low, eps_high=c.epsilon_high)
        if batch.ref_logps is not None:
            kl = kl_k3(torch.where(batch.mask != 0, logps, torch.zeros_like(logps)), batch.ref_logps)
            token_loss = token_loss + c.beta * kl
            metrics["kl"] = masked_mean(kl.detach(), batch.mask)
        loss = self.aggregate(token_loss, batch.mask, batch.norm)
        metrics.update(clip_frac=pm["clip_frac"], ratio_mean=pm["ratio_mean"],
                       entropy=masked_mean(entropy.detach(), batch.mask))
        return loss, metrics

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Adds the round's metrics (rewards, lengths, zero-std groups; the same on every step of a round)
        and the step's times: generation and reward scoring (0 on reused rounds) and training."""
        metrics.update(self.round_metrics)
        if not self._generated:
            metrics.update(gen_s=0.0, reward_s=0.0)
        metrics["train_s"] = time.perf_counter() - self._t_ready

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"round": self.round, "batches": rb.to_state(self.batches), "metrics": dict(self.round_metrics)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.round = int(state["round"])
        self.batches = rb.from_state(state["batches"], self.engine.device)
        self.round_metrics = {k: float(v) for k, v in state["metrics"].items()}

    # ----------------------------------------------------------------- evaluation
    def has_eval(self) -> bool:
        return bool(self.eval_prompts)

    def evaluate(self, model) -> dict[str, float]:
        """Mean reward (= accuracy for a 0/1 verifier) of one completion per held-out prompt, at
        `eval_temperature` (greedy by default); prompts are shared out over the processes."""
        from posttrain.algorithms.grpo_data import columns_for, summarise

        eng = self.engine
        mine = list(range(eng.rank, len(self.eval_prompts), eng.world))
        if not mine:
            return summarise(None, None, self.reward.names)
        prompts = [self.eval_prompts[i] for i in mine]
        rollouts = self.backend.generate(prompts, 1, self.sampling(-1, self.cfg.eval_temperature))
        columns = columns_for([self.eval_columns[i] for i in mine], 1, rollouts.completion_ids)
        return summarise(self.reward.score(prompts, rollouts.texts, **columns), rollouts, self.reward.names)


def run(cfg: GRPOConfig) -> dict:
    """Train GRPO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, GRPO(cfg)).train()
