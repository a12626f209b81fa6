"""`posttrain lab experiment NAME [--out DIR] [--quick]`: the seed documents' failure modes, measured.

Each experiment is one module here with `run(ctx) -> results` and `report(results) -> markdown`; it writes
`OUT/<name>/report.md`, `OUT/<name>/results.json` and `OUT/<name>/plots/*.png` (docs/EXPERIMENTS.md has the
numbers of a full run and what they show).

| name                | question                                                                            |
|---------------------|-------------------------------------------------------------------------------------|
| `goodhart`          | does PPO hack a proxy reward model, and does the KL penalty stop it?                |
| `length_bias`       | does a rater's taste for long answers pass through the reward model into the policy? |
| `sycophancy`        | do raters who like confident praise make RLHF more sycophantic on buggy code?       |
| `negative_feedback` | does SFT without negatives answer "least favourite" with the favourite (seed 000)?  |
| `judges`            | how gold-aligned, position-biased and injectable is an LLM judge (seed 002)?       |
"""
from __future__ import annotations

import argparse
import importlib
import os
import time

EXPERIMENTS = {
    "goodhart": "posttrain.lab.experiments.goodhart",
    "length_bias": "posttrain.lab.experiments.length_bias",
    "sycophancy": "posttrain.lab.experiments.sycophancy",
    "negative_feedback": "posttrain.lab.experiments.negative_feedback",
    "judges": "posttrain.lab.experiments.judges",
}


def parse(argv: list[str]):
    ap = argparse.ArgumentParser(prog="posttrain lab experiment", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(line for line in __doc__.split("\n") if line.startswith("| ")))
    ap.add_argument("name", choices=sorted(EXPERIMENTS), help="which experiment")
    ap.add_argument("--out", default="runs/experiments",
                    help="output root (default runs/experiments): writes OUT/NAME/, shares stages in OUT/_shared/")
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes, seconds; the numbers mean nothing")
    ap.add_argument("--base", default=None, help="start from this base model folder instead of builtin:tiny")
    ap.add_argument("--fresh", action="store_true", help="retrain the shared stages (SFT, unbiased reward model)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the demo)")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run one experiment; prints where its report is. Exit status 0, or an exception's traceback."""
    import torch

    from posttrain.lab import demo
    from posttrain.lab.experiments.common import Context, write_outputs

    args = parse(argv)
    module = importlib.import_module(EXPERIMENTS[args.name])
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        started = time.perf_counter()
        root = os.path.abspath(args.out)
        os.makedirs(os.path.join(root, args.name), exist_ok=True)
        base, _ = demo.make_base(args, os.path.join(root, "_shared"), "quick" if args.quick else "full")
        ctx = Context(root, args.name, args.quick, base, args.threads, args.fresh)
        results = module.run(ctx)
        paths = write_outputs(ctx, results, module.report(results), started)
    finally:
        torch.set_num_threads(threads)
    print(f"report:  {paths['report']}\nresults: {paths['results']}\nplots:   "
          + "\n         ".join(results.get("plots", [])))
    return 0
