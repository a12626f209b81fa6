"""Resume only a run whose settings are the ones asked for now.

A checkpoint keeps the resolved config it was trained with (`config.yaml`). Resuming it with other
settings would silently train a mix of old and new (new `max_steps`, old learning rate...). So the two
configs are compared key by key; keys that only change how long the run goes on, how often it logs,
evaluates and saves, or where it reports (`RESUMABLE_KEYS`) may differ. Any other difference is an
error naming the keys, both values and the ways out.
"""
from __future__ import annotations

import os

import yaml

from posttrain.config import ConfigError, to_yaml

RESUMABLE_KEYS = ("max_steps", "logging_steps", "eval_steps", "save_steps", "save_total_limit", "report_to",
                  "threads", "resume", "resume_force", "output_dir", "max_consecutive_skips",
                  "max_skipped_fraction", "min_skipped_steps", "max_weight_growth", "data.max_eval_rows", "sample_steps",
                  # where the work runs, not what is computed (a sharded run may resume on one process):
                  "distributed.strategy", "distributed.cpu_offload", "distributed.reshard_after_forward",
                  "distributed.zero_stage", "gradient_checkpointing")


def flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved_yaml: str, cfg) -> list[tuple[str, object, object]]:
    """(key, value in the checkpoint, value now) for every non-resumable key that differs. Keys present
    on one side only (a newer or older posttrain) are not compared."""
    old, new = flatten(yaml.safe_load(saved_yaml)), flatten(yaml.safe_load(to_yaml(cfg)))
    skip = set(RESUMABLE_KEYS)
    g = "distributed.global_batch_size"
    if old.get(g) and old.get(g) == new.get(g):
        skip.add("batch_size")  # derived from the global batch and the number of processes
    return [(k, old[k], new[k]) for k in sorted(old.keys() & new.keys()) if k not in skip and old[k] != new[k]]


def check_resume_config(ckpt_path: str, cfg) -> None:
    """Raise ConfigError when `cfg` differs from the checkpoint's config in a non-resumable key
    (unless `cfg.resume_force`)."""
    path = os.path.join(ckpt_path, "config.yaml")
    if getattr(cfg, "resume_force", False) or not os.path.exists(path):
        return
    with open(path) as f:
        diffs = config_differences(f.read(), cfg)
    if not diffs:
        return
    listed = ", ".join(f"{k} (checkpoint {_short(a)}, now {_short(b)})" for k, a, b in diffs)
    out = cfg.output_dir
    raise ConfigError(
        f"{out} holds a run ({os.path.basename(ckpt_path)}) trained with other settings: {listed}. "
        f"Rerunning there would resume it with a mix of old and new settings. Either choose a new "
        f"output_dir, or resume=false to start over in {out} (its checkpoints are replaced), or "
        f"resume_force=true to resume anyway with the new values. May change on resume: {', '.join(RESUMABLE_KEYS)}")


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
