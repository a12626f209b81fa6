"""The Python API: train from a notebook or a script with the same configs as the command line.

    import posttrain
    result = posttrain.train("sft", "recipes/sft-tiny.yaml", max_steps=20, output_dir="runs/nb")
    result.output_dir, result.metrics["loss"], result.final_dir

`config` is a recipe path, a dict, or a config object (`posttrain.config_class("dpo")()`, or one
returned by `posttrain.make_config`); keyword overrides follow it (nested keys as `data={"train": ...}`
or `**{"data.train": ...}`). Errors are raised as exceptions (`posttrain.errors.USER_ERRORS` are the
user's mistakes); resume, checkpoints and outputs behave exactly as on the command line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, is_dataclass
from typing import Any


@dataclass
class TrainResult:
    output_dir: str   # absolute path of the run's folder
    metrics: dict     # the last logged step's metrics (with `already_finished: True` if nothing was left to do)
    config: Any       # the resolved config object the run used

    @property
    def final_dir(self) -> str:
        return os.path.join(self.output_dir, "final")


def trainer(algorithm: str):
    """(config class, run function) of `algorithm`, from the command line's registry."""
    from posttrain.algorithms import TRAINERS, load_trainer

    if algorithm not in TRAINERS:
        raise ValueError(f"unknown algorithm '{algorithm}'; expected one of {', '.join(sorted(TRAINERS))}")
    return load_trainer(algorithm)


def config_class(algorithm: str) -> type:
    """The config dataclass of `algorithm` ('sft', 'rm', 'dpo', 'grpo', 'ppo', ...)."""
    return trainer(algorithm)[0]


def _plain(v):
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def make_config(algorithm: str, config: Any = None, **overrides) -> Any:
    """The resolved config object of `algorithm`: `config` (path, dict or config object) then `overrides`."""
    from posttrain.config import load_config

    cls = config_class(algorithm)
    path, base, layer = None, None, {}
    if config is None:
        pass
    elif isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
    elif isinstance(config, dict):
        layer = _plain(config)
    elif is_dataclass(config) and not isinstance(config, type):
        if not isinstance(config, cls):
            raise ValueError(f"config is a {type(config).__name__}; {algorithm} takes a {cls.__name__}")
        base = config
    else:
        raise ValueError(f"config: expected a path, a dict or a {cls.__name__}, found {type(config).__name__}")
    if layer:
        base = load_config(cls, None, layer, base=base)
    return load_config(cls, path, _plain(overrides), base=base)


def train(algorithm: str, config: Any = None, **overrides) -> TrainResult:
    """Train `algorithm` ('sft', 'rm', 'dpo', 'grpo', 'ppo'); returns the output folder and final metrics."""
    from posttrain.console import quiet_libraries
    from posttrain.names import resolve_config

    quiet_libraries()
    cfg = resolve_config(make_config(algorithm, config, **overrides))  # builtin:NAME -> local paths
    run = trainer(algorithm)[1]
    metrics = run(cfg) or {}
    return TrainResult(os.path.abspath(cfg.output_dir), dict(metrics), cfg)
