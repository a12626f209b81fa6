"""Rewards from an online algorithm's config: specs by name with weights, and a clear error for none."""
from dataclasses import dataclass, field

import pytest

from posttrain.rewards.from_config import build_reward, reward_from_config
from posttrain.rewards.judge import JudgeConfig


@dataclass
class _Cfg:
    rewards: list = field(default_factory=list)
    reward_model: str | None = None
    reward_model_weight: float = 1.0
    judge: JudgeConfig = field(default_factory=JudgeConfig)


def test_specs_names_weights_and_options():
    r = build_reward(["exact_match", {"name": "length_penalty", "weight": 0.5, "max_length": 10, "buffer": 5}])
    assert r.weights == [1.0, 0.5] and r.names == ["exact_match", "length_penalty"]
    assert build_reward({"name": "format"}).names == ["format"]
    with pytest.raises(ValueError, match="rewards\\[0\\]: expected a name or a mapping with 'name'"):
        build_reward([{"weight": 1.0}])


def test_config_without_any_reward_is_an_error():
    with pytest.raises(ValueError, match="no reward: set reward_model, judge.model or rewards"):
        reward_from_config(_Cfg())
    assert reward_from_config(_Cfg(rewards=[{"name": "exact_match", "weight": 2.0}])).weights == [2.0]
