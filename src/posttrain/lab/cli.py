"""`posttrain lab <subcommand> ...`: the lab's command line.

The top-level CLI hands everything after `lab` to `main(argv)`. Each subcommand is a function
`(argv: list[str]) -> int` (exit status) in `SUBCOMMANDS`; a new one (e.g. `pretrain`) is one entry there.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .export import DEFAULT_RATER_TEMPERATURE, export
from .raters import SimulatedRater
from .world import SIZES


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="posttrain lab export",
                                description="Write the lab world's data sets as TRL-format JSONL files.")
    p.add_argument("--out", required=True, help="folder to write the files into (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--size", choices=sorted(SIZES), default="default", help="size preset (default: default)")
    p.add_argument("--length-bias", type=float, default=0.0, help="rater's preference for longer reviews")
    p.add_argument("--confidence-bias", type=float, default=0.0, help="rater's preference for confident tone")
    p.add_argument("--sycophancy-bias", type=float, default=0.0, help="rater's preference for praise")
    p.add_argument("--rater-temperature", type=float, default=DEFAULT_RATER_TEMPERATURE,
                   help=f"rater noise, Bradley-Terry temperature (default {DEFAULT_RATER_TEMPERATURE})")
    p.add_argument("--web-format", choices=("plain", "chatml"), default="plain",
                   help="format of web.jsonl documents (default plain)")
    args = p.parse_args(argv)
    rater = SimulatedRater(length_bias=args.length_bias, confidence_bias=args.confidence_bias,
                           sycophancy_bias=args.sycophancy_bias, temperature=args.rater_temperature, seed=args.seed)
    paths = export(args.out, seed=args.seed, size=args.size, rater=rater, web_chat=args.web_format == "chatml")
    with open(paths["manifest"], encoding="utf-8") as f:
        counts = json.load(f)["rows"]
    for name, path in paths.items():
        print(f"{name:15s} {counts.get(name, ''):>6} {path}")
    return 0


def _pretrain(argv: list[str]) -> int:
    from .pretrain import main as pretrain_main

    return pretrain_main(argv)


def _experiment(argv: list[str]) -> int:
    from .experiments import main as experiment_main

    return experiment_main(argv)


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "export": _export,
    "pretrain": _pretrain,
    "experiment": _experiment,
}


def _usage() -> str:
    return "usage: posttrain lab {" + ",".join(SUBCOMMANDS) + "} [options]   (`posttrain lab SUBCOMMAND -h` for help)"


def main(argv: list[str] | None = None) -> int:
    """Dispatch `argv` (the words after `posttrain lab`) to a subcommand; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"posttrain lab: unknown subcommand {name!r}; expected one of {sorted(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    try:
        return SUBCOMMANDS[name](rest)
    except SystemExit as e:  # argparse exits on --help (0) and on bad arguments (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
