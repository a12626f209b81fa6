"""posttrain SFT on the shared TRL-bench fixture, the same work as ../shared/bench/trl_sft.py:
tiny-llama, sft.jsonl (messages), batch 8, max_length 256, full-sequence loss, lr 1e-4 constant,
AdamW (fused), clip 1.0, seed 42, fp32, 2 threads. Prints one JSON line with the harness's fields.

  python bench/ours_sft.py --fixture bench/.trl-harness/fixture [--packing] [--steps 150]
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--packing", action="store_true", help="padding-free packing (same tokens, no pad compute)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from posttrain.algorithms.sft import SFT, SFTConfig
    from posttrain.config import load_config
    from posttrain.core.engine import Engine

    out = os.path.join("/tmp", f"posttrain-bench-sft-{os.getpid()}")
    cfg = load_config(SFTConfig, None, [
        f"model={os.path.join(a.fixture, a.model)}", f"data.train={os.path.join(a.fixture, 'data', 'sft.jsonl')}",
        f"output_dir={out}", f"max_steps={a.steps}", f"batch_size={a.batch}", "grad_accum=1",
        f"max_length={a.max_length}", "learning_rate=1e-4", "lr_scheduler=constant", "warmup_steps=0",
        "weight_decay=0.0", "max_grad_norm=1.0", "seed=42", "report_to=[]", f"threads={a.threads}",
        "data.completion_only_loss=false", f"data.packing={str(a.packing).lower()}", "resume=false"])
    eng = Engine(cfg, SFT(cfg))
    eng.model.train()
    stamps, tokens, losses = [], [], []
    for _ in range(a.steps):
        t = time.perf_counter()
        m = eng.train_step()
        stamps.append((t, time.perf_counter()))
        tokens.append(m["tokens"])
        losses.append(m["loss"])
    w = a.warmup
    wall, steady = stamps[-1][1] - stamps[0][0], stamps[-1][1] - stamps[w][0]
    params = sum(p.numel() for p in eng.model.parameters())
    print(json.dumps(dict(
        bench="posttrain_sft" + ("_packed" if a.packing else ""), model=a.model, params=params, threads=a.threads,
        steps=a.steps, batch=a.batch, max_length=a.max_length, train_s=round(wall, 3), tokens=int(sum(tokens)),
        tokens_per_s=round(sum(tokens) / wall, 1), steady_tokens_per_s=round(sum(tokens[w:]) / steady, 1),
        samples_per_s=round(a.steps * a.batch / wall, 3),
        median_step_s=round(statistics.median(e - b for b, e in stamps[w:]), 4),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        first_loss=float(f"{losses[0]:.6g}"), final_loss=float(f"{losses[-1]:.6g}"),
        mean_last10_loss=float(f"{sum(losses[-10:]) / 10:.6g}"), torch=torch.__version__)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
