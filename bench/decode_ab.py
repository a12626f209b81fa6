"""In-process A/B of the GRPO bench's generate: this tree's `posttrain.rollout` against the one of a git revision,
alternated call by call in one process on one model, so that the host's slow and fast minutes fall on both sides.
The work is `decode_cpu.py`'s (the first 2 prompts of grpo.jsonl x 8 samples, at most 128 new tokens, T=1, per-prompt
seeds). Prints whether both sides gave the same tokens and log-probs, the two medians and the median of the per-pair
ratios (base / this tree: above 1 is faster here).

  PYTHONPATH=src python bench/decode_ab.py --fixture bench/.trl-harness/fixture --base ff9cbed [--pairs 20]

The revision's `rollout/*.py` files are copied into a temporary package (`git show`); their imports of the rest of
posttrain (`posttrain.core...`) resolve to this tree's, so a base whose rollout needs an older core does not load.
"""
import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

PACKAGE = "base_rollout"


def base_rollout(rev: str, root: str):
    """`posttrain.rollout` of git revision `rev`, imported as the package `base_rollout` from a temporary folder."""
    tmp = tempfile.mkdtemp(prefix="decode-ab-")
    os.mkdir(os.path.join(tmp, PACKAGE))
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:src/posttrain/rollout"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in (n for n in names if n.endswith(".py")):
        text = subprocess.run(["git", "show", f"{rev}:src/posttrain/rollout/{name}"], cwd=root, check=True,
                              capture_output=True, text=True).stdout
        with open(os.path.join(tmp, PACKAGE, name), "w") as f:
            f.write(text)
    sys.path.insert(0, tmp)
    return importlib.import_module(f"{PACKAGE}.hf"), importlib.import_module(f"{PACKAGE}.base")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", default="bench/.trl-harness/fixture")
    ap.add_argument("--base", required=True, help="the git revision to compare against (e.g. a commit of main)")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="tiny-llama")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from decode_cpu import bench_work, generate_with

    from posttrain.rollout import base, hf

    work = bench_work(a.fixture, a.model)
    sides = {"base": generate_with(*base_rollout(a.base, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                   *work),
             "here": generate_with(hf, base, *work)}
    x, y = sides["base"](), sides["here"]()
    same = x.completion_ids == y.completion_ids and x.completion_logps == y.completion_logps
    times = {"base": [], "here": []}
    for i in range(a.pairs):
        for name in (("base", "here") if i % 2 == 0 else ("here", "base")):
            t = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t)
    ratios = [b / h for b, h in zip(times["base"], times["here"])]
    print(f"same tokens and log-probs: {same}; generate wall ms, medians of {a.pairs}: base ({a.base}) "
          f"{1e3 * statistics.median(times['base']):.0f}, here {1e3 * statistics.median(times['here']):.0f}; "
          f"per-pair ratio base/here median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})")


if __name__ == "__main__":
    with torch.no_grad():
        main()
