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

The 2025 options (`grpo_variants`, maths in `losses/`): `importance_sampling_level: sequence` (GSPO),
`loss_type: cispo | sapo`, `advantage: reinforce_pp | reinforce_pp_baseline` (KL in the reward instead
of the loss), `dynamic_sampling` (DAPO: regenerate until the round holds enough groups with reward
spread, at most `dynamic_sampling_max_tries` generations, then stop with a message), `overlong_cache`
(DAPO's soft overlong penalty), `mask_truncated_completions`, `rollout_is_mode` (truncated or masked
importance sampling against the sampler's log-probs, with the mismatch logged as `is/...`),
`top_entropy_quantile` and `entropy_coef`.

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

from posttrain.algorithms import grpo_variants as vx
from posttrain.algorithms import rollout_buffer as rb
from posttrain.config import TrainConfig, opt
from posttrain.core.algorithm import Algorithm, StepSampler
from posttrain.core.logprobs import token_logps
from posttrain.losses.advantages import group_advantages, leave_one_out

ESTIMATORS = {"group": group_advantages, "rloo": leave_one_out, "reinforce_pp": group_advantages,
              "reinforce_pp_baseline": functools.partial(group_advantages, scale_std=False)}


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
    loss_type: str = opt("dapo", "grpo, dr_grpo, dapo, bnpo (PPO clip, by aggregation); cispo (capped IS weight, "
                                 "every token keeps its gradient; token mean); sapo (soft gate; sequence mean)")
    importance_sampling_level: str = opt("token", "ratio per token, or sequence (GSPO: the length-normalised "
                                                  "sequence ratio, one clip per completion; use loss_type grpo)")
    cispo_max_weight: float = opt(5.0, "cispo: cap of the importance weight (ScaleRL's eps_max)")
    sapo_tau_pos: float = opt(1.0, "sapo: gate temperature where the advantage is > 0")
    sapo_tau_neg: float = opt(1.05, "sapo: gate temperature where the advantage is <= 0")
    advantage: str = opt("group", "group (GRPO), rloo (leave-one-out), reinforce_pp (raw reward, KL in the reward, "
                                  "global normalisation), reinforce_pp_baseline (group mean subtracted first)")
    scale_rewards: bool = opt(True, "divide group advantages by the group's std (group only; Dr. GRPO: false)")
    filter_zero_std_groups: bool = opt(False, "drop groups whose rewards are all equal from the step")
    dynamic_sampling: bool = opt(False, "DAPO: generate more groups until the round holds enough with differing "
                                        "rewards (zero-spread groups dropped)")
    dynamic_sampling_max_tries: int = opt(4, "generations per round at most; then the run stops with a message")
    overlong_cache: int = opt(0, "DAPO soft overlong penalty: 0 to -1 added to the reward over the last N tokens "
                                 "before max_new_tokens; 0 = off")
    mask_truncated_completions: bool = opt(False, "completions cut at max_new_tokens carry no loss (they still "
                                                  "count in their group's advantages)")
    rollout_is_mode: str = opt("none", "rollout importance-sampling correction against the sampler's log-probs: "
                                       "none, token_truncate, token_mask, sequence_truncate, sequence_mask")
    rollout_is_min: Any = opt(None, "lower bound of the IS ratio (null = none)")
    rollout_is_max: Any = opt(3.0, "upper bound of the IS ratio (null = none)")
    top_entropy_quantile: float = opt(1.0, "train only on this top share of tokens by entropy (0.2 in 'Beyond the "
                                           "80/20 rule'); 1.0 = all")
    entropy_coef: float = opt(0.0, "entropy bonus: minus coef times the mean token entropy is added to the loss")
    rollout_backend: str = opt("hf", "generation backend: hf (transformers) or vllm")
    generation_batch_size: int = opt(64, "sequences decoded together (hf backend)")
    eval_temperature: float = opt(0.0, "evaluation sampling temperature on data.eval (0 = greedy)")
    sample_steps: int = opt(10, "write OUT/samples/step-N.jsonl (prompt, completion, reward) every N steps; 0 = off")
    logits_chunk: int = opt(0, "positions per chunk of the output head; 0 = auto (<= 32M logits a chunk)")


CONFIG = GRPOConfig


def check_config(c: GRPOConfig) -> None:
    """Raise ValueError naming the first bad GRPO setting."""
    rows = c.batch_size * c.grad_accum
    checks = vx.config_checks(c) + [
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
        self.policy_loss = vx.PolicyLoss(cfg)
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

    def sampling(self, round_index: int, temperature: float | None = None, attempt: int = 0):
        from posttrain.rollout import SamplingParams

        c, rank = self.cfg, self.engine.rank
        seed = ((c.seed * 1_000_003 + round_index) * 1_009 + rank + 7_919 * attempt) % (2 ** 62)
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

    def _sample(self, idx: list[int], round_index: int, attempt: int = 0):
        """Generate G completions for the prompts `idx` and score them (totals shaped by the overlong
        penalty, itself logged as the `overlong` component). Returns (rollouts, scores, per-row prompts)."""
        from posttrain.algorithms.grpo_data import columns_for

        g = self.cfg.num_generations
        prompts = [self.prompts[i] for i in idx]
        rollouts = self.backend.generate(prompts, g, self.sampling(round_index, attempt=attempt))
        t1 = time.perf_counter()
        rep = [p for p in prompts for _ in range(g)]
        scores = self.reward.score(rep, rollouts.texts,
                                   **columns_for([self.columns[i] for i in idx], g, rollouts.completion_ids))
        shaped, _ = vx.add_overlong_penalty(scores.total, rollouts, self.cfg)
        if shaped is not scores.total:
            scores.components["overlong"] = [s - t if t is not None else None for s, t in zip(shaped, scores.total)]
            scores.total = shaped
        self._reward_s += time.perf_counter() - t1
        return rollouts, scores, rep

    def collect(self, round_index: int) -> None:
        """Generate, score and batch round `round_index`; sets `batches` and `round_metrics`."""
        from posttrain.algorithms.grpo_data import summarise, write_samples

        c, eng, g = self.cfg, self.engine, self.cfg.num_generations
        idx = self.sampler.micro_indices(round_index)[0]
        t0, self._reward_s = time.perf_counter(), 0.0
        self.backend.sync_weights(eng.model)  # no-op for hf (it samples from the policy itself)
        if c.dynamic_sampling:
            draw = functools.partial(vx.extra_prompts, len(self.prompts), len(idx), c.seed, round_index, rank=eng.rank)
            rollouts, scores, rep, tries, zero, seen = vx.dynamic_round(
                lambda i, a: self._sample(i, round_index, a), idx, lambda a: draw(a), g,
                c.dynamic_sampling_max_tries, self.estimator)
        else:
            (rollouts, scores, rep), tries, zero, seen = self._sample(idx, round_index), 1, None, None
        adv, scored, zero_std = rb.grouped_advantages(scores.total, g, self.estimator)
        if c.advantage == "reinforce_pp":
            adv = vx.raw_rewards(scores.total)
        keep = rb.kept_rows(scored, zero_std, g, c.filter_zero_std_groups)
        self.batches = self._batches(rollouts, adv, keep)
        names = self.reward.names + (["overlong"] if "overlong" in scores.components else [])
        zero, seen = (float(zero_std.sum()), float(len(zero_std))) if zero is None else (zero, seen)
        m = summarise(scores, rollouts, names,
                      {"_tokens": sum(float(b.mask.sum()) for b in self.batches), "rows_trained": float(len(keep)),
                       "_zero": float(zero), "_groups": float(seen), "_tries": float(tries)})
        m["frac_zero_std_groups"] = m.pop("_zero") / max(m.pop("_groups"), 1.0)
        m["generations_per_round"] = m.pop("_tries") / eng.world
        rb.with_norm(self.batches, m.pop("_tokens"), m["rows_trained"], c.max_new_tokens)
        gen_s = time.perf_counter() - t0 - self._reward_s
        self.round, self.round_metrics = round_index, {**m, "reward_s": self._reward_s, "gen_s": gen_s}
        first, last = round_index * c.num_iterations + 1, (round_index + 1) * c.num_iterations
        due = [s for s in range(first, last + 1) if c.sample_steps > 0 and (s % c.sample_steps == 0 or s == 1)]
        if due and eng.is_main:
            write_samples(os.path.join(c.output_dir, "samples", f"step-{due[0]:06d}.jsonl"), due[0], rep, rollouts,
                          scores, adv)

    def _batches(self, rollouts, advantages, keep: list[int]) -> list[rb.GRPOBatch]:
        """The kept rows in `grad_accum` micro-batches, with reference log-probs when beta > 0; truncated
        rows masked out and REINFORCE++ token advantages when configured."""
        c, pad, device = self.cfg, self.engine.tokenizer.pad_token_id, self.engine.device
        parts = rb.split_even(keep, c.grad_accum)
        batches = [rb.collate_rows([rollouts.prompt_ids[i] for i in part], [rollouts.completion_ids[i] for i in part],
                                   [rollouts.completion_logps[i] for i in part], advantages[part], pad, device)
                   for part in parts]
        if c.mask_truncated_completions:
            vx.mask_truncated(batches, parts, rollouts.truncated)
        if self.ref is not None:
            with torch.no_grad(), self.ref.model() as ref:
                for b in batches:
                    lp = token_logps(ref, b.input_ids, b.attention_mask, chunk_size=c.logits_chunk,
                                     temperature=c.temperature)
                    b.ref_logps = torch.where(b.mask != 0, lp, torch.zeros_like(lp))
        if c.advantage in vx.REINFORCE_PP:
            vx.reinforce_pp_advantages(batches, c.beta)
        return batches

    # ----------------------------------------------------------------- loss
    def num_items(self, batch) -> float:
        """Rows (only for the engine's bookkeeping: the loss divides by `batch.norm`)."""
        return float(batch.mask.shape[0])

    def loss(self, model, batch, num_items: float):
        c = self.cfg
        logps, entropy = token_logps(model, batch.input_ids, batch.attention_mask, chunk_size=c.logits_chunk,
                                     temperature=c.temperature, with_entropy=True)
        metrics = self.policy_loss.first_pass(batch, logps) if batch.fresh else {}
        loss, pm = self.policy_loss(batch, logps, entropy)
        return loss, {**metrics, **pm}

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
