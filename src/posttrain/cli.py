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
    from posttrain.api import TrainResult
    from posttrain.config import load_config
    from posttrain.console import closing, summary
    from posttrain.names import resolve_config

    cfg_cls, run = load_trainer(name)
    config, overrides, want_help = _split_args(argv)
    if want_help:
        print_keys(name, cfg_cls)
        return 0
    cfg = load_config(cfg_cls, config, overrides)
    if _is_main_process():
        print(summary(name, cfg), file=sys.stderr)
    cfg = resolve_config(cfg)  # builtin:NAME -> local paths, once, here
    last = run(cfg) or {}
    if _is_main_process():
        print(closing(TrainResult(os.path.abspath(cfg.output_dir), last, cfg)))
    return 0


def _inspect_config(config: str | None, overrides: list[str], algo: str | None):
    """(algorithm, config) for `data inspect`: the named algorithm, else the one the recipe's comments run
    (`# posttrain grpo --config recipes/dapo-tiny.yaml`), else the recipe's name prefix
    (`dpo-tiny.yaml` -> dpo, `online-dpo-tiny.yaml` -> online_dpo), else the first trainer whose keys the
    config fits (sft first)."""
    from posttrain.config import ConfigError, load_config

    if algo is None and config:
        from posttrain.core.model_source import recipe_command

        command = recipe_command(config)
        algo = command if command in TRAINERS else None
    if algo is None and config:  # online-dpo-tiny.yaml -> online_dpo_tiny, online_dpo, online
        parts = os.path.basename(config).split(".")[0].replace("-", "_").split("_")
        algo = next((n for n in ("_".join(parts[:k]) for k in range(len(parts), 0, -1)) if n in TRAINERS), None)
    if algo is not None:
        if algo not in TRAINERS:
            raise ConfigError(f"data inspect: unknown algorithm '{algo}'; expected one of {', '.join(sorted(TRAINERS))}")
        return algo, load_config(load_trainer(algo)[0], config, overrides)
    first = None
    for name in ["sft"] + sorted(n for n in TRAINERS if n != "sft"):
        try:
            return name, load_config(load_trainer(name)[0], config, overrides)
        except ConfigError as e:
            first = first or e
    raise first


def data_command(argv: list[str]) -> int:
    if not argv or argv[0] != "inspect":
        print("usage: posttrain data inspect [ALGORITHM] --config FILE [key=value ...] [n=3]")
        return 2
    from posttrain.core.models import load_tokenizer
    from posttrain.names import resolve_config
    from posttrain.data.formats import load_rows

    rest = argv[1:]
    algo = rest.pop(0) if rest and not rest[0].startswith("-") and "=" not in rest[0] else None
    config, overrides, want_help = _split_args(rest)
    n = 3
    for o in list(overrides):
        if o.startswith("n="):
            n = int(o[2:])
            overrides.remove(o)
    if want_help:
        print_keys("data inspect", load_trainer(algo or "sft")[0])
        return 0
    algo, cfg = _inspect_config(config, overrides, algo)
    shown, cfg = cfg.data.train, resolve_config(cfg)
    tok = load_tokenizer(cfg)
    if hasattr(cfg, "desirable_weight"):  # KTO: unpaired rows with a label
        from posttrain.data.inspect_kinds import inspect_unpaired

        text = inspect_unpaired(load_rows(cfg.data.train, split="train"), tok, max_length=cfg.max_length, n=n)
    elif hasattr(cfg, "max_new_tokens"):  # GRPO, PPO: prompts only
        from posttrain.data.inspect_kinds import inspect_prompts

        rows = load_rows(cfg.data.train, split="train", kind="prompt")
        text = inspect_prompts(rows, tok, budget=cfg.max_length - cfg.max_new_tokens,
                               template=getattr(cfg, "prompt_template", None), n=n)
    elif hasattr(cfg, "drop_truncated"):  # reward model, DPO: preference pairs and rankings
        from posttrain.data.inspect_kinds import inspect_preference

        rows = load_rows(cfg.data.train, split="train", kind="preference")
        text = inspect_preference(rows, tok, max_length=cfg.max_length, drop_truncated=cfg.drop_truncated, n=n)
    else:  # SFT (also unpaired rows: `label: false` / `rejected` are unlikelihood's negatives)
        from posttrain.data.inspect import inspect_rows

        rows = load_rows(cfg.data.train, split="train")
        text = inspect_rows(rows, tok, max_length=cfg.max_length,
                            completion_only_loss=cfg.data.completion_only_loss, n=n)
    print(f"# data inspect: {algo} on {shown}\n{text}")
    return 0


def judge_command(argv: list[str]) -> int:
    if not argv or argv[0] != "label":
        print("usage: posttrain judge label --config FILE [key=value ...]   (--help lists the keys)")
        return 2
    from posttrain.config import load_config
    from posttrain.judge_label import LabelConfig, describe, label
    from posttrain.names import resolve_config

    config, overrides, want_help = _split_args(argv[1:])
    if want_help:
        print_keys("judge label", LabelConfig)
        return 0
    print(describe(label(resolve_config(load_config(LabelConfig, config, overrides)))), file=sys.stderr)
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
            "       posttrain data inspect [ALGORITHM] --config FILE [key=value ...] [n=3]\n"
            "       posttrain recipes          (the packaged recipes: --config NAME loads one)\n"
            "       posttrain lab {export|pretrain} ...\n"
            "       posttrain demo [--out DIR]\n"
            "       posttrain serve MODEL [--port 8000]\n"
            "       posttrain judge label --config FILE [key=value ...]\n"
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
    if cmd == "serve":
        from posttrain.serve import main as serve_main

        return serve_main(rest)
    if cmd == "judge":
        return judge_command(rest)
    if cmd == "demo":
        from posttrain.lab.demo import main as demo_main

        return demo_main(rest)
    print(f"error: unknown command '{cmd}'\n{usage()}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from posttrain.console import quiet_libraries
    from posttrain.errors import closed_stdout, run_guarded

    quiet_libraries()
    try:
        status = run_guarded(dispatch, sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, so a reader that left (`| head`) is seen inside the try
        return status
    except BrokenPipeError:
        return closed_stdout()


if __name__ == "__main__":
    sys.exit(main())
