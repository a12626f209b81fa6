"""`posttrain <command> --config FILE [key=value ...]` (also `python -m posttrain`).

Commands: the trainers (`posttrain.algorithms.TRAINERS`, one row each), `data inspect`, `lab ...`, `demo`.
`posttrain <trainer> --help` lists every config key with its meaning and default.
"""
from __future__ import annotations

import os
import sys

from posttrain.algorithms import TRAINERS, load_trainer


def _is_main_process() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def _split_args(argv: list[str]) -> tuple[str | None, list[str], bool]:
    config, overrides, want_help = None, [], False
    it = iter(argv)
    for a in it:
        if a in ("-h", "--help"):
            want_help = True
        elif a in ("-c", "--config"):
            config = next(it, None)
            if config is None:
                raise SystemExit("error: --config needs a file")
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        elif a.startswith("-"):
            raise SystemExit(f"error: unknown option '{a}' (overrides are key=value, without dashes)")
        else:
            overrides.append(a)
    return config, overrides, want_help


def print_keys(name: str, cls) -> None:
    from posttrain.config import describe

    print(f"usage: posttrain {name} --config FILE [key=value ...]\n\nconfig keys (default, meaning):")
    rows = describe(cls)
    width = max(len(k) for k, _, _ in rows)
    for key, default, meaning in rows:
        print(f"  {key:<{width}}  {default:<14} {meaning}")


def run_trainer(name: str, argv: list[str]) -> int:
    from posttrain.config import load_config, to_yaml
    from posttrain.lab.builtin import resolve_config

    cfg_cls, run = load_trainer(name)
    config, overrides, want_help = _split_args(argv)
    if want_help:
        print_keys(name, cfg_cls)
        return 0
    cfg = resolve_config(load_config(cfg_cls, config, overrides))  # builtin:NAME -> local paths, once, here
    if _is_main_process():
        print(f"# posttrain {name}: resolved config (saved to {cfg.output_dir}/config.yaml)\n{to_yaml(cfg)}",
              file=sys.stderr)
    last = run(cfg)
    if _is_main_process():
        out = os.path.abspath(cfg.output_dir)
        skipped = int(last.get("skipped_steps", 0))
        print(f"done: loss {last.get('loss', float('nan')):.4f}, {skipped} of {cfg.max_steps} steps skipped (non-finite)"
              f"\n  metrics   {out}/metrics.jsonl\n"
              f"  plot      {out}/loss.png\n  model     {out}/final\n  checkpoints {out}/checkpoints")
    return 0


def data_command(argv: list[str]) -> int:
    if not argv or argv[0] != "inspect":
        print("usage: posttrain data inspect --config FILE [key=value ...] [n=3]")
        return 2
    from posttrain.algorithms.sft import SFTConfig
    from posttrain.config import load_config
    from posttrain.lab.builtin import resolve_config
    from posttrain.core.models import load_tokenizer
    from posttrain.data.formats import load_rows
    from posttrain.data.inspect import inspect_rows

    config, overrides, want_help = _split_args(argv[1:])
    n = 3
    for o in list(overrides):
        if o.startswith("n="):
            n = int(o[2:])
            overrides.remove(o)
    if want_help:
        print_keys("data inspect", SFTConfig)
        return 0
    cfg = resolve_config(load_config(SFTConfig, config, overrides))
    rows = load_rows(cfg.data.train, split="train")
    print(inspect_rows(rows, load_tokenizer(cfg), max_length=cfg.max_length,
                       completion_only_loss=cfg.data.completion_only_loss, n=n))
    return 0


def recipes_command(argv: list[str]) -> int:
    """`posttrain recipes`: each packaged recipe, what its first comment line says, and its file."""
    from posttrain.config import recipe_names, recipe_path

    if argv:
        print("usage: posttrain recipes   (then: posttrain <trainer> --config NAME)", file=sys.stderr)
        return 2
    names = recipe_names()
    width = max(len(n) for n in names)
    for name in names:
        with open(recipe_path(name), encoding="utf-8") as f:
            first = f.readline().lstrip("# ").strip()
        print(f"{name:<{width}}  {first}\n{'':<{width}}  {recipe_path(name)}")
    return 0


def usage() -> str:
    names = "|".join(sorted(TRAINERS))
    return (f"usage: posttrain {{{names}}} --config FILE [key=value ...]\n"
            "       posttrain data inspect --config FILE [key=value ...]\n"
            "       posttrain recipes          (the packaged recipes: --config NAME loads one)\n"
            "       posttrain lab {export|pretrain} ...\n"
            "       posttrain demo [--out DIR]\n"
            "Add --help after a trainer's name to list every config key.")


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in TRAINERS:
        return run_trainer(cmd, rest)
    if cmd == "data":
        return data_command(rest)
    if cmd == "recipes":
        return recipes_command(rest)
    if cmd == "lab":
        from posttrain.lab.cli import main as lab_main

        return lab_main(rest)
    if cmd == "demo":
        from posttrain.lab.demo import main as demo_main

        return demo_main(rest)
    print(f"error: unknown command '{cmd}'\n{usage()}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from posttrain.errors import USER_ERRORS

    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
