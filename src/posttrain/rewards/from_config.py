"""The reward of an online algorithm's config: a trained reward model, an LLM judge and reward
functions by name, summed with their weights into one `CombinedReward`."""
from __future__ import annotations

from typing import Any

from .base import CombinedReward


def build_reward(specs: Any) -> CombinedReward:
    """A `CombinedReward` from a `rewards` list: each entry is a name (weight 1) or a mapping
    `{name, weight (default 1), ...options passed to the reward}`; a single entry may stand alone."""
    from posttrain.config import plain

    from .base import load_reward

    specs = plain(specs)
    if isinstance(specs, (str, dict)):
        specs = [specs]
    if not specs:
        raise ValueError("rewards: give at least one reward function, e.g. [{name: math, weight: 1.0}]")
    fns, weights = [], []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"rewards[{i}]: expected a name or a mapping with 'name', found {spec!r}")
        options = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        fns.append(load_reward(spec["name"], **options))
        weights.append(float(spec.get("weight", 1.0)))
    return CombinedReward(fns, weights)


def reward_from_config(cfg, device=None) -> CombinedReward:
    """`cfg.reward_model` (weight `reward_model_weight`), then `cfg.judge` (when `judge.model` or `judge.url` is set),
    then the `cfg.rewards` specs, in that order; a `ValueError` when the config names no reward."""
    from posttrain.config import plain

    fns, weights = [], []
    if getattr(cfg, "reward_model", None):
        from .reward_model import RewardModel

        fns.append(RewardModel.from_pretrained(cfg.reward_model, device=device))
        weights.append(cfg.reward_model_weight)
    judge = getattr(cfg, "judge", None)
    if judge is not None and (judge.model or judge.url):
        from .judge import build_judge

        fns.append(build_judge(judge, device=device))
        weights.append(judge.weight)
    if plain(getattr(cfg, "rewards", None)):
        specs = build_reward(cfg.rewards)
        fns, weights = fns + specs.functions, weights + specs.weights
    if not fns:
        raise ValueError("no reward: set reward_model, judge.model or rewards")
    return CombinedReward(fns, weights)
