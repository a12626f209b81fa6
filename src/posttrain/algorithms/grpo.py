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

from posttrain.algorithms.online import OnlineAlgorithm, OnlineConfig
from posttrain.algorithms.online.buffer import collate_rows, split_even
from posttrain.algorithms.online.groups import grouped_advantages, kept_rows
from posttrain.algorithms.online.metrics import summarise, write_samples
from posttrain.config import opt
from posttrain.core.logprobs import token_logps
from posttrain.losses.advantages import group_advantages, leave_one_out
from posttrain.losses.policy import AGGREGATIONS, kl_k3, ppo_clip_loss
from posttrain.losses.reduce import masked_mean

ESTIMATORS = {"group": group_advantages, "rloo": leave_one_out}


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
    loss_type: str = opt("dapo", "token-loss aggregation: grpo, dr_grpo, dapo or bnpo")
    advantage: str = opt("group", "baseline: group (GRPO, mean of the group) or rloo (leave-one-out)")
    scale_rewards: bool = opt(True, "divide group advantages by the group's std (group only; Dr. GRPO: false)")
    filter_zero_std_groups: bool = opt(False, "drop groups whose rewards are all equal from the step")
    sample_steps: int = opt(10, "write OUT/samples/step-N.jsonl (prompt, completion, reward) every N steps; 0 = off")


CONFIG = GRPOConfig


def check_config(c: GRPOConfig) -> None:
    """Raise ValueError naming the first bad GRPO setting (the shared ones: `online.check_online_config`)."""
    rows = c.batch_size * c.grad_accum
    checks = [
        (c.loss_type in AGGREGATIONS, f"loss_type: expected one of {sorted(AGGREGATIONS)}, found '{c.loss_type}'"),
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
            raise ValueError(msg)


class GRPO(OnlineAlgorithm):
    name = "grpo"
    plot_keys = ("reward/total/mean", "eval/reward/total/mean", "loss", "kl", "entropy", "clip_frac",
                 "frac_zero_std_groups", "completion_len/mean", "gen_s", "train_s")

    def __init__(self, cfg: GRPOConfig, reward=None):
        check_config(cfg)
        super().__init__(cfg, reward)
        self.samples_per_prompt = cfg.num_generations
        self.aggregate = AGGREGATIONS[cfg.loss_type]
        est = ESTIMATORS[cfg.advantage]
        self.estimator = functools.partial(est, scale_std=cfg.scale_rewards) if cfg.advantage == "group" else est
        self.ref = None

    def setup(self, engine) -> None:
        from posttrain.core.models import Reference

        super().setup(engine)
        if self.cfg.beta > 0:
            self.ref = Reference(engine.model).to(engine.device)

    def prompts_per_round(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum // self.cfg.num_generations

    def round_of(self, step: int) -> int:
        return step // self.cfg.num_iterations

    # ----------------------------------------------------------------- rollouts
    def collect(self, rnd: int) -> None:
        """Generate, score and batch round `rnd`; sets `batches` and `round_metrics`."""
        c, g = self.cfg, self.cfg.num_generations
        t0 = time.perf_counter()
        idx, rollouts = self.generate(rnd)
        t1 = time.perf_counter()
        scores = self.score(self.prompts, idx, rollouts)
        t2 = time.perf_counter()
        adv, scored, zero_std = grouped_advantages(scores.total, g, self.estimator)
        keep = kept_rows(scored, zero_std, g, c.filter_zero_std_groups)
        self.batches = self._batches(rollouts, adv, keep)
        m = summarise(scores, rollouts, self.reward.names, {"rows_trained": float(len(keep)),
                                                            "_zero": float(zero_std.sum()),
                                                            "_groups": float(len(zero_std))})
        m["frac_zero_std_groups"] = m.pop("_zero") / max(m.pop("_groups"), 1.0)
        self.round_metrics = {**m, "reward_s": t2 - t1, "gen_s": t1 - t0}
        first, last = rnd * c.num_iterations + 1, (rnd + 1) * c.num_iterations
        due = [s for s in range(first, last + 1) if c.sample_steps > 0 and (s % c.sample_steps == 0 or s == 1)]
        if due and self.engine.is_main:
            shown = [self.prompts.texts[i] for i in idx for _ in range(g)]
            write_samples(os.path.join(c.output_dir, "samples", f"step-{due[0]:06d}.jsonl"), due[0], shown,
                          rollouts, scores, adv)

    def _batches(self, rollouts, advantages, keep: list[int]):
        """The kept rows in `grad_accum` micro-batches, with reference log-probs when beta > 0."""
        pad, device = self.engine.tokenizer.pad_token_id, self.engine.device
        batches = [collate_rows([rollouts.prompt_ids[i] for i in part], [rollouts.completion_ids[i] for i in part],
                                [rollouts.completion_logps[i] for i in part], advantages[part], pad, device)
                   for part in split_even(keep, self.cfg.grad_accum)]
        if self.ref is not None:
            with torch.no_grad(), self.ref.model() as ref:
                for b in batches:
                    lp = token_logps(ref, b.input_ids, b.attention_mask, chunk_size=self.cfg.logits_chunk,
                                     temperature=self.cfg.temperature)
                    b.ref_logps = torch.where(b.mask != 0, lp, torch.zeros_like(lp))
        return batches

    # ----------------------------------------------------------------- loss
    def loss(self, model, batch, norm):
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
        loss = self.aggregate(token_loss, batch.mask, norm)
        metrics.update(clip_frac=pm["clip_frac"], ratio_mean=pm["ratio_mean"],
                       entropy=masked_mean(entropy.detach(), batch.mask))
        return loss, metrics

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
