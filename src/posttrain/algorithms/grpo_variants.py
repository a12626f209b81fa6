"""GRPO's 2025 options, assembled from the config once (the maths lives in `losses/`):

- `PolicyLoss`: the surrogate of `loss_type` (PPO clip, CISPO, SAPO) at `importance_sampling_level`
  (token, or GSPO's sequence ratio), times the rollout importance-sampling weights (`rollout_is_mode`),
  restricted to the top-entropy tokens (`top_entropy_quantile`), plus `beta * k3` KL (except for
  REINFORCE++, whose KL sits in the reward), reduced by the loss type's aggregation, minus the entropy
  bonus (`entropy_coef`).
- round-level shaping: DAPO's soft overlong penalty added to the reward (`overlong_cache`), the
  truncated completions' tokens masked out (`mask_truncated_completions`), REINFORCE++ token advantages.
- `select_groups`: DAPO's dynamic sampling, the groups with reward spread kept until the round is full.
"""
from __future__ import annotations

import functools

import torch

from posttrain.core.distributed import all_reduce
from posttrain.core.engine import TrainingAborted
from posttrain.losses.advantages import reinforce_pp_returns, whiten
from posttrain.losses.entropy import entropy_bonus, top_entropy_mask
from posttrain.losses.policy import kl_k1, kl_k3
from posttrain.losses.policy_variants import IS_LEVELS, LOSS_TYPES, SURROGATES
from posttrain.losses.reduce import masked_mean
from posttrain.losses.rollout_correction import IS_MODES, rollout_is_weights
from posttrain.losses.shaping import overlong_penalty

REINFORCE_PP = ("reinforce_pp", "reinforce_pp_baseline")


def config_checks(c) -> list[tuple[bool, str]]:
    """(ok, message) pairs for the options of this module."""
    return [
        (c.loss_type in LOSS_TYPES, f"loss_type: expected one of {sorted(LOSS_TYPES)}, found '{c.loss_type}'"),
        (c.importance_sampling_level in IS_LEVELS, f"importance_sampling_level: expected one of {list(IS_LEVELS)}, "
                                                   f"found '{c.importance_sampling_level}'"),
        (c.rollout_is_mode in ("none", *IS_MODES), f"rollout_is_mode: expected none or one of {list(IS_MODES)}, "
                                                   f"found '{c.rollout_is_mode}'"),
        (0.0 <= c.top_entropy_quantile <= 1.0, f"top_entropy_quantile must be in [0, 1], got {c.top_entropy_quantile}"),
        (0 <= c.overlong_cache <= c.max_new_tokens, f"overlong_cache must be in [0, max_new_tokens={c.max_new_tokens}]"
                                                    f", got {c.overlong_cache}"),
        (c.cispo_max_weight > 0, f"cispo_max_weight must be > 0, got {c.cispo_max_weight}"),
        (c.sapo_tau_pos > 0 and c.sapo_tau_neg > 0, "sapo_tau_pos and sapo_tau_neg must be > 0"),
        (c.dynamic_sampling_max_tries >= 1, f"dynamic_sampling_max_tries must be >= 1, got "
                                            f"{c.dynamic_sampling_max_tries}"),
    ]


class PolicyLoss:
    """The per-micro-batch policy loss of GRPO, bound once from the config."""

    def __init__(self, c):
        name, self.aggregate = LOSS_TYPES[c.loss_type]
        kw = {"clip": dict(eps_low=c.epsilon_low, eps_high=c.epsilon_high), "cispo": dict(max_weight=c.cispo_max_weight),
              "sapo": dict(tau_pos=c.sapo_tau_pos, tau_neg=c.sapo_tau_neg)}[name]
        self.surrogate = functools.partial(SURROGATES[name], level=c.importance_sampling_level, **kw)
        self.c = c
        self.kl_in_loss = c.beta > 0 and c.advantage not in REINFORCE_PP

    def first_pass(self, batch, logps) -> dict:
        """First optimisation pass over a micro-batch: the sampler-vs-trainer gap, the rollout IS weights
        (against the sampler's log-probs), then the trainer's own log-probs become the old policy."""
        c, lp = self.c, logps.detach()
        metrics = {"logp_mismatch": masked_mean((lp - batch.old_logps).abs(), batch.mask)}
        if c.rollout_is_mode != "none":
            w, m = rollout_is_weights(lp, batch.old_logps, batch.mask, mode=c.rollout_is_mode, clip_min=c.rollout_is_min,
                                      clip_max=c.rollout_is_max)
            batch.is_weights = w.expand_as(batch.mask).contiguous()
            metrics.update(m)
        batch.old_logps, batch.fresh = lp, False
        return metrics

    def __call__(self, batch, logps, entropy, norm):
        c, mask = self.c, batch.mask
        token_loss, pm = self.surrogate(logps, batch.old_logps, batch.advantages, mask)
        metrics = {"clip_frac": pm["clip_frac"], "ratio_mean": pm["ratio_mean"],
                   "entropy": masked_mean(entropy.detach(), mask)}
        if batch.is_weights is not None:
            token_loss = token_loss * batch.is_weights
        if c.top_entropy_quantile < 1.0:
            keep = top_entropy_mask(entropy, mask, c.top_entropy_quantile)
            token_loss = token_loss * keep
            metrics["entropy_mask_frac"] = masked_mean(keep, mask)
        if self.kl_in_loss and batch.ref_logps is not None:
            kl = kl_k3(torch.where(mask != 0, logps, torch.zeros_like(logps)), batch.ref_logps)
            token_loss = token_loss + c.beta * kl
            metrics["kl"] = masked_mean(kl.detach(), mask)
        loss = self.aggregate(token_loss, mask, norm)
        if c.entropy_coef:
            loss = loss + entropy_bonus(entropy, mask, norm, c.entropy_coef)
        return loss, metrics


# ----------------------------------------------------------------- round-level shaping
def add_overlong_penalty(totals: list, rollouts, c) -> tuple[list, float | None]:
    """Totals with DAPO's soft overlong penalty added (None stays None), and the mean penalty."""
    if c.overlong_cache <= 0:
        return totals, None
    lengths = torch.tensor([len(ids) for ids in rollouts.completion_ids])
    pen = overlong_penalty(lengths, max_len=c.max_new_tokens, cache=c.overlong_cache).tolist()
    shaped = [None if t is None else t + p for t, p in zip(totals, pen)]
    return shaped, sum(pen) / max(len(pen), 1)


def raw_rewards(totals: list) -> torch.Tensor:
    """REINFORCE++'s sequence signal: the reward itself (unscored rows 0; they are not trained)."""
    return torch.tensor([0.0 if t is None else float(t) for t in totals], dtype=torch.float32)


def mask_truncated(batches, parts: list[list[int]], truncated: list[bool]) -> None:
    """Zero the loss mask of truncated completions (TRL's `mask_truncated_completions`, DAPO's overlong
    filtering): they stay in their group's advantages but carry no gradient."""
    for b, rows in zip(batches, parts):
        for j, r in enumerate(rows):
            if truncated[r]:
                b.mask[j] = 0.0
                b.advantages[j] = 0.0


def reinforce_pp_advantages(batches, beta: float) -> None:
    """Token advantages of REINFORCE++ for the whole round: returns-to-go of the row's reward (already in
    `advantages`, broadcast) minus beta * k1 KL to the reference, whitened over every token of the round
    on every process (unchanged when they hold fewer than 2 tokens in all)."""
    pieces, width = [], max(b.mask.shape[1] for b in batches)
    for b in batches:
        seq = masked_mean(b.advantages, b.mask, dim=-1)
        kl = kl_k1(b.old_logps, b.ref_logps) if (beta and b.ref_logps is not None) else None
        pieces.append(reinforce_pp_returns(seq, b.mask, kl, beta=beta))
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
    masks = torch.cat([pad(b.mask) for b in batches])
    adv = whiten(torch.cat([pad(p) for p in pieces]), masks, reduce=all_reduce)  # over every process's tokens
    start = 0
    for b in batches:
        b.advantages = adv[start:start + b.mask.shape[0], : b.mask.shape[1]].contiguous()
        start += b.mask.shape[0]


# ----------------------------------------------------------------- dynamic sampling
def select_groups(zero_std: torch.Tensor, wanted: int, have: int) -> list[int]:
    """Indices of the groups (with reward spread) to add from one generation, so that at most `wanted`
    groups are held in all; `have` are held already."""
    spread = (~zero_std).nonzero().flatten().tolist()
    return spread[: max(0, wanted - have)]


def extra_prompts(num_prompts: int, count: int, seed: int, round_index: int, attempt: int, rank: int) -> list[int]:
    """`count` prompt indices for a further generation of a round: a function of (seed, round, attempt,
    rank) only, so a resumed run draws the same ones."""
    g = torch.Generator().manual_seed(((seed * 1_000_003 + round_index) * 131 + attempt) * 1_009 + rank)
    return torch.randint(num_prompts, (count,), generator=g).tolist()


def unfilled(have: int, wanted: int, tries: int) -> TrainingAborted:
    return TrainingAborted(
        f"dynamic_sampling: only {have} of {wanted} prompt groups had different rewards after {tries} generations "
        f"(dynamic_sampling_max_tries: {tries}); the prompts are too easy or too hard for the model. Raise "
        "dynamic_sampling_max_tries, use other prompts, or set dynamic_sampling: false")


def merge_groups(picks: list[tuple[object, object, list[str], list[int]]], g: int):
    """(rollouts, scores, prompts) holding the picked groups of several generations, in order.
    `picks`: (rollouts, scores, per-row prompts, group indices) per generation."""
    from posttrain.rewards.base import RewardOutput
    from posttrain.rollout.base import Rollouts

    rows = [(ro, sc, rep, r) for ro, sc, rep, groups in picks for k in groups for r in range(k * g, (k + 1) * g)]
    merged = Rollouts(prompt_ids=[ro.prompt_ids[r] for ro, _, _, r in rows],
                      completion_ids=[ro.completion_ids[r] for ro, _, _, r in rows],
                      completion_logps=[ro.completion_logps[r] for ro, _, _, r in rows],
                      texts=[ro.texts[r] for ro, _, _, r in rows], truncated=[ro.truncated[r] for ro, _, _, r in rows],
                      n=g)
    names = list(picks[0][1].components)
    scores = RewardOutput([sc.total[r] for _, sc, _, r in rows],
                          {k: [sc.components[k][r] for _, sc, _, r in rows] for k in names}, dict(picks[0][1].weights))
    return merged, scores, [rep[r] for _, _, rep, r in rows]


def dynamic_round(sample, first_idx: list[int], draw, g: int, max_tries: int, estimator):
    """DAPO's dynamic sampling (Yu et al. 2025, sec. 3.2): generate, keep the groups whose rewards differ,
    generate again for more prompts until `len(first_idx)` such groups are held, at most `max_tries`
    generations; then raise `TrainingAborted` (never loops forever).

    `sample(idx, attempt) -> (rollouts, scores, per-row prompts)`; `draw(attempt) -> prompt indices`.
    Returns (rollouts, scores, prompts, generations, zero-std groups seen, groups seen)."""
    from posttrain.algorithms.online.groups import grouped_advantages

    wanted, picks, have, zero, seen = len(first_idx), [], 0, 0, 0
    idx = first_idx
    for attempt in range(max_tries):
        rollouts, scores, rep = sample(idx, attempt)
        _, _, zero_std = grouped_advantages(scores.total, g, estimator)
        zero, seen = zero + int(zero_std.sum()), seen + len(zero_std)
        groups = select_groups(zero_std, wanted, have)
        picks.append((rollouts, scores, rep, groups))
        have += len(groups)
        if have >= wanted:
            return (*merge_groups(picks, g), attempt + 1, zero, seen)
        idx = draw(attempt + 1)
    raise unfilled(have, wanted, max_tries)
