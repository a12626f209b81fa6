"""GRPO with verifiable rewards (Shao et al. 2024, "DeepSeekMath", sec. 4) and its variants.

One round (`online.core`): `batch_size * grad_accum / num_generations` prompts per process,
`num_generations` (G) samples each from the rollout backend (prefill once per prompt, KV cache shared
by the group), scored by the configured rewards (weighted sum; None = could not score: left out and
counted). Advantages are group-relative (`advantage: group`, std scaling with `scale_rewards`) or
leave-one-out (`rloo`), one per sequence, broadcast over its tokens (`online.groups`). A round feeds
`num_iterations` optimizer steps (mu of the paper): the PPO clipped surrogate with the asymmetric
range [1 - epsilon_low, 1 + epsilon_high] (DAPO's clip-higher), plus `beta * k3` KL to a frozen
reference when beta > 0 (no reference is built otherwise). Token losses are reduced by `loss_type`,
one of `losses.policy.AGGREGATIONS`, chosen once:
  grpo     per-sequence token mean, then mean over sequences (the paper)
  dr_grpo  token sum / (sequences * max_new_tokens) (Dr. GRPO; use with scale_rewards: false)
  dapo     token sum / tokens of the whole step (DAPO; TRL's default)
  bnpo     token mean per micro-batch (TRL's bnpo)
All of them divide by the step's GLOBAL counts: the `Normaliser` the engine builds for every step
(all micro-batches, all processes; `max_len` = max_new_tokens).

`padding_free` (default): each micro-batch's forward runs on one packed row, the G completions of a
prompt as branches of that prompt (`online.buffer.pack_rows`, attention per sequence by
`core.varlen_attention`), so the prompt is computed once per group, no padding is computed and the
head runs at completion tokens only; the log-probs land in the padded layout the loss reads.

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

Starting from a base model (R1-Zero): set `prompt_template` (e.g. "Question: {prompt}\\nAnswer:"),
which replaces the chat template; from an SFT model leave it null.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from posttrain.algorithms import grpo_variants as vx
from posttrain.algorithms.online import OnlineAlgorithm, OnlineConfig
from posttrain.algorithms.online.buffer import collate_rows, packed_token_logps, split_even
from posttrain.algorithms.online.groups import grouped_advantages, kept_rows
from posttrain.algorithms.online.metrics import summarise, write_samples
from posttrain.config import ConfigError, opt
from posttrain.core.logprobs import token_logps
from posttrain.losses.advantages import group_advantages, leave_one_out

ESTIMATORS = {"group": group_advantages, "rloo": leave_one_out, "reinforce_pp": group_advantages,
              "reinforce_pp_baseline": functools.partial(group_advantages, scale_std=False)}


@dataclass
class GRPOConfig(OnlineConfig):
    rewards: Any = opt([{"name": "math", "weight": 1.0}],
                       "reward functions: a list of {name, weight, ...options}; name is a built-in (math, format, "
                       "exact_match, length_penalty, code), module:function or a .py file path")
    num_generations: int = opt(8, "samples per prompt (the group size G); batch_size * grad_accum must be a "
                                  "multiple (batch_size counts completions)")
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
    padding_free: bool = opt(True, "train on each micro-batch packed in one row without padding, each group's prompt "
                                   "computed once (attention per sequence: sdpa_varlen); off or unsupported "
                                   "attention: right-padded rows")
    sample_steps: int = opt(10, "write OUT/samples/step-N.jsonl (prompt, completion, reward) every N steps; 0 = off")


CONFIG = GRPOConfig


def check_config(c: GRPOConfig) -> None:
    """Raise `ConfigError` naming the first bad GRPO setting (the shared ones: `online.check_online_config`)."""
    rows = c.batch_size * c.grad_accum
    checks = vx.config_checks(c) + [
        (c.advantage in ESTIMATORS, f"advantage: expected one of {sorted(ESTIMATORS)}, found '{c.advantage}'"),
        (c.num_generations >= 2, f"num_generations must be >= 2 (a group compares samples), got {c.num_generations}"),
        (rows % c.num_generations == 0, f"batch_size * grad_accum ({rows}) must be a multiple of num_generations "
                                        f"({c.num_generations}): batch_size counts completions"),
        (c.num_iterations >= 1, f"num_iterations must be >= 1, got {c.num_iterations}"),
        (c.epsilon_low >= 0 and c.epsilon_high >= 0, "epsilon_low and epsilon_high must be >= 0"),
        (c.beta >= 0, f"beta must be >= 0, got {c.beta}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


class GRPO(OnlineAlgorithm):
    name = "grpo"
    plot_keys = ("reward/total/mean", "eval/reward/total/mean", "loss", "kl", "entropy", "clip_frac",
                 "frac_zero_std_groups", "completion_len/mean", "gen_s", "train_s")

    def __init__(self, cfg: GRPOConfig, reward=None):
        check_config(cfg)
        super().__init__(cfg, reward)
        self.samples_per_prompt = cfg.num_generations
        self.policy_loss = vx.PolicyLoss(cfg)
        est = ESTIMATORS[cfg.advantage]
        self.estimator = functools.partial(est, scale_std=cfg.scale_rewards) if cfg.advantage == "group" else est
        self.ref, self.packed = None, False

    def setup(self, engine) -> None:
        from posttrain.core.varlen_attention import use_varlen

        check_config(self.cfg)  # again: the engine may have set batch_size from distributed.global_batch_size
        self.packed = self.cfg.padding_free and use_varlen(engine.model)   # before the reference copy is made
        super().setup(engine)
        if self.cfg.beta > 0:
            self.ref = engine.reference()

    def prompts_per_round(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum // self.cfg.num_generations

    def round_of(self, step: int) -> int:
        return step // self.cfg.num_iterations

    # ----------------------------------------------------------------- rollouts
    def _sample(self, idx: list[int], rnd: int, attempt: int = 0):
        """G completions of the prompts `idx`, scored (totals shaped by the overlong penalty, itself logged
        as the `overlong` component). Returns (rollouts, scores, per-row prompt texts)."""
        rollouts = self.generate(rnd, idx, attempt)[1]
        t1 = time.perf_counter()
        scores = self.score(self.prompts, idx, rollouts)
        shaped, _ = vx.add_overlong_penalty(scores.total, rollouts, self.cfg)
        if shaped is not scores.total:
            scores.components["overlong"] = [s - t if t is not None else None for s, t in zip(shaped, scores.total)]
            scores.total = shaped
        self._reward_s += time.perf_counter() - t1
        return rollouts, scores, [self.prompts.texts[i] for i in idx for _ in range(self.cfg.num_generations)]

    def collect(self, rnd: int) -> None:
        """Generate, score and batch round `rnd`; sets `batches` and `round_metrics`."""
        c, eng, g = self.cfg, self.engine, self.cfg.num_generations
        idx = self.sampler.micro_indices(rnd)[0]
        t0, self._reward_s = time.perf_counter(), 0.0
        if c.dynamic_sampling:
            draw = functools.partial(vx.extra_prompts, len(self.prompts), len(idx), c.seed, rnd, rank=eng.rank)
            rollouts, scores, rep, tries, zero, seen = vx.dynamic_round(
                lambda i, a: self._sample(i, rnd, a), idx, draw, g, c.dynamic_sampling_max_tries, self.estimator)
        else:
            (rollouts, scores, rep), tries, zero, seen = self._sample(idx, rnd), 1, None, None
        adv, scored, zero_std = grouped_advantages(scores.total, g, self.estimator)
        if c.advantage == "reinforce_pp":
            adv = vx.raw_rewards(scores.total)
        keep = kept_rows(scored, zero_std, g, c.filter_zero_std_groups)
        self.batches = self._batches(rollouts, adv, keep)
        names = self.reward.names + (["overlong"] if "overlong" in scores.components else [])
        zero, seen = (float(zero_std.sum()), float(len(zero_std))) if zero is None else (zero, seen)
        m = summarise(scores, rollouts, names, {"rows_trained": float(len(keep)), "_zero": float(zero),
                                                "_groups": float(seen), "_tries": float(tries)})
        m["frac_zero_std_groups"] = m.pop("_zero") / max(m.pop("_groups"), 1.0)
        m["generations_per_round"] = m.pop("_tries") / eng.world
        gen_s = time.perf_counter() - t0 - self._reward_s
        self.round_metrics = {**m, "reward_s": self._reward_s, "gen_s": gen_s}
        first, last = rnd * c.num_iterations + 1, (rnd + 1) * c.num_iterations
        due = [s for s in range(first, last + 1) if c.sample_steps > 0 and (s % c.sample_steps == 0 or s == 1)]
        if due and eng.is_main:
            write_samples(os.path.join(c.output_dir, "samples", f"step-{due[0]:06d}.jsonl"), due[0], rep,
                          rollouts, scores, adv)

    def _batches(self, rollouts, advantages, keep: list[int]):
        """The kept rows in `grad_accum` micro-batches, with reference log-probs when beta > 0; truncated
        rows masked out and REINFORCE++ token advantages when configured."""
        c, pad, device = self.cfg, self.engine.tokenizer.pad_token_id, self.engine.device
        parts = split_even(keep, c.grad_accum)
        batches = [collate_rows([rollouts.prompt_ids[i] for i in part], [rollouts.completion_ids[i] for i in part],
                                [rollouts.completion_logps[i] for i in part], advantages[part], pad, device,
                                packed=self.packed) for part in parts]
        if c.mask_truncated_completions:
            vx.mask_truncated(batches, parts, rollouts.truncated)
        if self.ref is not None:
            with torch.no_grad(), self.ref.model() as ref:
                for b in batches:
                    lp = self._logps(ref, b)[0]
                    b.ref_logps = torch.where(b.mask != 0, lp, torch.zeros_like(lp))
        if c.advantage in vx.REINFORCE_PP:
            vx.reinforce_pp_advantages(batches, c.beta)
        return batches

    # ----------------------------------------------------------------- loss
    def _logps(self, model, batch):
        """(logps, entropy) [B, T] of a micro-batch (policy or reference: a copy made after `use_varlen`, or
        the policy itself): from its packed layout when it has one and this run packs, else its padded rows."""
        c = self.cfg
        if batch.packed_ids is not None and self.packed:
            return packed_token_logps(model, batch, chunk_size=c.logits_chunk, temperature=c.temperature)
        return token_logps(model, batch.input_ids, batch.attention_mask, chunk_size=c.logits_chunk,
                           temperature=c.temperature, with_entropy=True)

    def loss(self, model, batch, norm):
        logps, entropy = self._logps(model, batch)
        metrics = self.policy_loss.first_pass(batch, logps) if batch.fresh else {}
        loss, pm = self.policy_loss(batch, logps, entropy, norm)
        return loss, {**metrics, **pm}

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Adds the round's metrics and the step's times: generation and reward scoring (0 on reused
        rounds) and training."""
        super().on_step_end(step, metrics)
        if not self.fresh_round:
            metrics.update(gen_s=0.0, reward_s=0.0)
        metrics["train_s"] = time.perf_counter() - self.t_ready


def run(cfg: GRPOConfig) -> dict:
    """Train GRPO with `cfg`; returns the last step's metrics. Output in `cfg.output_dir`."""
    from posttrain.core.engine import Engine

    return Engine(cfg, GRPO(cfg)).train()
