"""Algorithms: each says how to build a batch and compute its loss; the engine does the rest.

Every trainer of the command line (`posttrain NAME`) is one row of `TRAINERS`: its name and the module
that defines its config dataclass `CONFIG` and `run(cfg)`. A new trainer is one module and one row.
"""
from __future__ import annotations

import importlib

TRAINERS: dict[str, str] = {
    "sft": "posttrain.algorithms.sft",
    "rm": "posttrain.algorithms.reward_model",
    "dpo": "posttrain.algorithms.dpo",
    "kto": "posttrain.algorithms.kto",
    "orpo": "posttrain.algorithms.orpo",
    "grpo": "posttrain.algorithms.grpo",
    "ppo": "posttrain.algorithms.ppo",
    "online_dpo": "posttrain.algorithms.online_dpo",
    "gkd": "posttrain.algorithms.gkd",
}


def load_trainer(name: str):
    """`(config dataclass, run)` of trainer `name` (imported on first use)."""
    if name not in TRAINERS:
        raise KeyError(f"unknown trainer {name!r}; choose one of {sorted(TRAINERS)}")
    module = importlib.import_module(TRAINERS[name])
    return module.CONFIG, module.run
