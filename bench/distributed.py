"""Peak RSS per process and tokens/s of SFT on N CPU processes under each distributed strategy.

  python bench/distributed.py --fixture F [--model tiny-llama-l] [--steps 12] [--nproc 2]
         [--runs ddp,fsdp2,fsdp2-offload] [--replicated-src /path/to/old/src]

Each run: `torchrun --nproc_per_node N bench/dist_rank.py ... sft` on FIXTURE/data/sft.jsonl, batch 8 rows per
process, max_length 256, fp32, 1 thread per process, constant lr 1e-4, no checkpoints but the last.
`replicated` is the engine before distributed.strategy existed (every process held the whole model and
summed gradients with a hand-written all-reduce): pass a checkout's `src` of that version with
--replicated-src. tokens/s = median over the steps after the first 2 of (all processes' non-padding
tokens of the step / step time), from metrics.jsonl. Peak RSS = each process's ru_maxrss at exit (it
includes the process's Python, torch and transformers, ~0.5 GB, besides the model). Prints one JSON line
per run and a summary; on a shared machine say so when quoting (the figures move with the load).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
RUNS = {"replicated": [], "ddp": ["distributed.strategy=ddp"], "fsdp2": ["distributed.strategy=fsdp2"],
        "fsdp2-offload": ["distributed.strategy=fsdp2", "distributed.cpu_offload=true"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(a, name: str) -> dict:
    out = os.path.join("/tmp", f"posttrain-bench-dist-{name}-{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    src = a.replicated_src if name == "replicated" else SRC
    if name == "replicated" and not src:
        raise SystemExit("error: the replicated run needs --replicated-src (a checkout's src of the old engine)")
    args = [f"model={os.path.join(a.fixture, a.model)}", f"data.train={os.path.join(a.fixture, 'data', 'sft.jsonl')}",
            f"output_dir={out}", f"max_steps={a.steps}", "batch_size=8", "max_length=256", "learning_rate=1e-4",
            "lr_scheduler=constant", "torch_dtype=float32", "threads=1", "report_to=[]", "resume=false",
            "save_steps=0", "data.completion_only_loss=false", "seed=42"] + RUNS[name]
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), os.path.join(HERE, "dist_rank.py"), out, "sft", *args]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"error: run {name} failed:\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rss = []
    for k in range(a.nproc):
        with open(f"{out}.rank{k}.json") as f:
            rss.append(round(json.load(f)["peak_rss_mb"], 1))
    banner = next((line for line in r.stderr.splitlines() if "world size" in line), "")
    res = {"run": name, "model": a.model, "nproc": a.nproc, "steps": a.steps,
           "tokens_per_s": round(statistics.median(m["tokens_per_s"] for m in rows[2:]), 1),
           "step_s": round(statistics.median(m["step_s"] for m in rows[2:]), 3),
           "peak_rss_mb_per_rank": rss, "final_loss": rows[-1]["loss"], "wall_s": round(time.time() - t0, 1),
           "banner": banner.replace("[posttrain] ", "")}
    shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--model", default="tiny-llama-l")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--runs", default="ddp,fsdp2,fsdp2-offload")
    ap.add_argument("--replicated-src", default=None)
    a = ap.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    results = []
    for name in a.runs.split(","):
        res = one(a, name)
        results.append(res)
        print(json.dumps(res), flush=True)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    print(json.dumps({"summary": {r["run"]: {"tokens_per_s": r["tokens_per_s"], "peak_rss_mb_per_rank":
                                             r["peak_rss_mb_per_rank"]} for r in results},
                      "loadavg_before": load, "loadavg_after": load_after, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
