"""Reward model on K-wise rankings: time per step of the all-pairs expansion (`score_once=false`: K(K-1)/2
pairs, 2 sequences each) against scoring each response once (`score_once=true`), same rows, same model.

    PYTHONPATH=src python bench/rm_rank.py --k 9 --rows 8 --steps 4 --repeats 2 [--padded]

Builds the 'nano' tiny Llama locally (no download), writes `--rows` K-rankings (a shared prompt, K
responses of 4-12 words), and times forward + backward of one step's micro-batches
(`Engine._backward_step`; no optimizer update, so both runs see the same weights) for steps 1..steps
(step 0 is warm-up), alternating the two layouts per repeat. Prints one JSON line per run and the median
seconds per step of each. CPU, one thread unless --threads.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path


def write_rankings(path: Path, rows: int, k: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "tidy clean bug slow fast clear messy crash good bad loop value test name".split()
    with open(path, "w") as f:
        for i in range(rows):
            prompt = [{"role": "user", "content": f"Review this function {i}: def f(x): return x * {i} + 1"}]
            responses = [[{"role": "assistant", "content": " ".join(rng.choice(words)
                                                                    for _ in range(rng.randint(4, 12)))}]
                         for _ in range(k)]
            f.write(json.dumps({"prompt": prompt, "responses": responses}) + "\n")
    return str(path)


def time_run(model_dir, data, out, score_once: bool, a) -> dict:
    from posttrain.algorithms.reward_model import RewardModelConfig, make_engine
    from posttrain.config import load_config

    cfg = load_config(RewardModelConfig, None, [
        f"model={model_dir}", f"data.train={data}", f"output_dir={out}", f"batch_size={a.rows}", "report_to=[]",
        "max_length=256", f"max_steps={a.steps + 1}", f"padding_free={str(not a.padded).lower()}",
        f"score_once={str(score_once).lower()}", f"threads={a.threads}"])
    eng = make_engine(cfg)
    times = []
    for step in range(a.steps + 1):
        batches = eng.algo.micro_batches(step)
        t = time.perf_counter()
        eng.model.zero_grad(set_to_none=True)
        m = eng._backward_step(batches)
        times.append(time.perf_counter() - t)
    seqs = sum(b.num_sequences for b in batches)
    return {"score_once": score_once, "padded": a.padded, "k": a.k, "rows": a.rows, "sequences_per_step": seqs,
            "tokens_per_step": int(m["tokens"]), "loss_step_last": round(float(m["loss"]), 6),
            "s_per_step": statistics.median(times[1:])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=9)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--padded", action="store_true", help="padding_free=false: right-padded rows, both layouts")
    a = p.parse_args()
    from posttrain.core.tiny import build_tiny, default_corpus

    tmp = Path(tempfile.mkdtemp(prefix="rm_rank_"))
    model_dir = str(build_tiny(str(tmp / "nano"), default_corpus(1500), size="nano", vocab_size=512))
    data = write_rankings(tmp / "rank.jsonl", a.rows, a.k)
    res = {True: [], False: []}
    for r in range(a.repeats):
        for once in (False, True):
            row = time_run(model_dir, data, tmp / f"out{r}{once}", once, a)
            print(json.dumps(row), flush=True)
            res[once].append(row["s_per_step"])
    before, after = statistics.median(res[False]), statistics.median(res[True])
    print(json.dumps({"summary": {"all_pairs_s_per_step": round(before, 4), "score_once_s_per_step": round(after, 4),
                                  "speedup": round(before / after, 2)}}))


if __name__ == "__main__":
    main()
