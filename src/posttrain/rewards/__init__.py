"""Rewards for online RL: the ``RewardFn`` interface, combination, loading, and built-ins.

Built-ins (``load_reward(name, **kwargs)``): ``math`` and ``exact_match`` (``math.py``), ``format``
and ``length_penalty`` (``format.py``), ``code`` (``code.py``, running in ``sandbox.py``).
Importing this package is cheap: built-ins load on first use.
"""
from posttrain.rewards.base import (
    BUILTIN_REWARDS,
    CombinedReward,
    FunctionReward,
    RewardFn,
    RewardOutput,
    check_scores,
    load_reward,
)

__all__ = ["BUILTIN_REWARDS", "CombinedReward", "FunctionReward", "RewardFn", "RewardOutput", "check_scores",
           "load_reward", "RewardModel", "Judge"]


def __getattr__(name: str):
    """`RewardModel` and `Judge` import torch and transformers, so they load on first use."""
    if name == "RewardModel":
        from posttrain.rewards.reward_model import RewardModel

        return RewardModel
    if name == "Judge":
        from posttrain.rewards.judge import Judge

        return Judge
    raise AttributeError(f"module 'posttrain.rewards' has no attribute {name!r}")
