"""Pretraining the lab's tiny base model: the first stage of the recipe, in minutes on 2 CPU cores.

A byte-level BPE tokenizer is trained on the world's "web" text (honest, vague and sycophantic reviews
alike, arithmetic, facts), a tiny Llama is initialised at random, and it learns next-token prediction
on that web text: SFT's machinery with the loss on every token and padding-free packing, which is what
pretraining is. The result is cached under the world's version (`builtin:tiny`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

PRETRAIN_DEFAULTS = {
    "max_steps": 500, "batch_size": 32, "grad_accum": 1, "max_length": 256, "learning_rate": 3e-3,
    "lr_scheduler": "cosine", "warmup_steps": 30, "weight_decay": 0.01, "save_steps": 100, "seed": 0,
}


def base_dir() -> str:
    from posttrain.lab.builtin import _version, cache_dir

    return cache_dir("models", f"tiny-{_version()}")


def pretrain(out_dir: str, *, overrides: list[str] = (), quiet: bool = False) -> str:
    """Pretrain from `builtin:tiny-random` on `builtin:web`; the model ends in `out_dir` (atomically)."""
    from posttrain.algorithms.sft import SFTConfig, run
    from posttrain.lab.builtin import resolve_config, resolve_data, resolve_model
    from posttrain.config import load_config

    work = out_dir + ".run"
    base = [f"{k}={v}" for k, v in PRETRAIN_DEFAULTS.items()]
    base += [f"model={resolve_model('tiny-random')}", f"data.train={resolve_data('builtin:web')}",
             "data.completion_only_loss=false", "data.packing=true", f"output_dir={work}", "report_to=[]"]
    cfg = resolve_config(load_config(SFTConfig, None, base + list(overrides)))
    if not quiet:
        print(f"[posttrain] pretraining the lab base model ({cfg.max_steps} steps) -> {out_dir}", file=sys.stderr)
    run(cfg)
    final = os.path.join(work, "final")
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.replace(final, out_dir)
    for name in ("metrics.jsonl", "config.yaml"):
        if os.path.exists(os.path.join(work, name)):
            shutil.copy(os.path.join(work, name), os.path.join(out_dir, f"pretrain-{name}"))
    from posttrain.report.report import pretrain_plot

    pretrain_plot(out_dir, os.path.join(out_dir, "pretrain-loss.png"))  # titled as pretraining, not as the run folder
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def ensure_built(out: str, marker: str, build) -> str:
    """`out`, built by `build(out)` unless its `marker` file exists; one process at a time builds it (a
    file lock beside it), the others wait and then use it."""
    from filelock import FileLock

    if os.path.exists(os.path.join(out, marker)):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with FileLock(out + ".lock"):
        if not os.path.exists(os.path.join(out, marker)):
            build(out)
    return out


def ensure_base() -> str:
    """The cached base model folder, pretrained on first use."""
    return ensure_built(base_dir(), "config.json", pretrain)


def main(argv: list[str]) -> int:
    """`posttrain lab pretrain [--size tiny|small] [--out DIR] [--force] [key=value ...]` (keys of `posttrain sft`)."""
    ap = argparse.ArgumentParser(prog="posttrain lab pretrain", description=main.__doc__)
    ap.add_argument("--size", choices=("tiny", "small"), default="tiny",
                    help="tiny: builtin:tiny (default); small: builtin:small, measured (greedy, pass@16 by level)")
    ap.add_argument("--out", default=None, help="output folder (default: the builtin:<size> cache folder)")
    ap.add_argument("--force", action="store_true", help="retrain even if the cached model exists")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pretraining run")
    a = ap.parse_args(argv)
    if a.size == "small":
        return _main_small(a)
    out = a.out or base_dir()
    if os.path.exists(os.path.join(out, "config.json")) and not a.force and not a.overrides:
        print(f"base model already built: {out} (use --force to retrain)")
        return 0
    pretrain(out, overrides=a.overrides)
    print(f"base model: {out}\n  curve: {out}/pretrain-loss.png")
    return 0


def _main_small(a) -> int:
    """Build (unless cached) and print the measured properties of builtin:small."""
    from posttrain.lab.math_eval import table
    from posttrain.lab.small import measured, pretrain_small, small_dir

    out = a.out or small_dir()
    m = measured(out)
    if m is not None and not a.force and not a.overrides:
        print(f"base model already built: {out} (use --force to retrain)")
    else:
        overrides = dict(kv.split("=", 1) for kv in a.overrides)
        m = pretrain_small(out, overrides=overrides)
    print(f"base model: {out}\n  curve: {out}/pretrain-loss.png\n  measured ({out}/base_eval.json):")
    print(table(m))
    return 0
