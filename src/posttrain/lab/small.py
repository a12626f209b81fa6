"""`builtin:small`: a base model with latent arithmetic ability, pretrained on the math web (`math_web`).

A Llama of `SMALL_SIZE` (hidden 192, 4 layers, 6 heads of 32 with 6 KV heads, MLP 512, untied head: 2.2M
parameters with its 1024-token digit-split BPE tokenizer), pretrained from random weights on `WEB_DOCS` documents
of the math web with the SFT trainer (loss on every token, padding-free packing: a step is 32 documents, ~1.7k
tokens; 2 000 steps ~ 1.6 epochs, ~11 CPU-minutes in all on one core), then measured (`base_eval.json` in its
folder): greedy accuracy and pass@16 at T = 1 on held-out problems of levels 1, 2 and 3 (`math_eval`), and
under `pretrain` what the build cost (steps, this process's CPU seconds, wall seconds).

Built once per world version under a file lock (like `builtin:tiny`) into the cache:
`posttrain lab pretrain --size small` builds it (or prints where it is) and prints the measured table.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

from posttrain.core.tiny import TinySize

SMALL_VERSION = "3"
SMALL_SIZE = TinySize(hidden=192, layers=4, heads=6, kv_heads=6, intermediate=512, max_positions=512)
WEB_DOCS = 40000
PRETRAIN = {"max_steps": 2000, "batch_size": 32, "grad_accum": 1, "max_length": 192, "learning_rate": 3e-3,
            "lr_scheduler": "cosine", "warmup_steps": 66, "weight_decay": 0.01, "save_steps": 0, "seed": 0,
            "threads": 1, "logging_steps": 20}
QUICK = {"docs": 400, "overrides": {"max_steps": 6, "batch_size": 8, "warmup_steps": 1}, "size": "nano",
         "eval_n": 4, "eval_k": 2}
MEASURE = {"n": 50, "k": 16}


def small_dir() -> str:
    from posttrain.lab.builtin import _version, cache_dir

    return cache_dir("models", f"small-w{_version()}-v{SMALL_VERSION}")


def write_web(out_dir: str, n_docs: int) -> str:
    """The math web as `text` rows in `out_dir/web_small.jsonl`."""
    from .export import write_jsonl
    from .math_web import math_web_texts
    from .world import World

    os.makedirs(out_dir, exist_ok=True)
    return write_jsonl(os.path.join(out_dir, "web_small.jsonl"),
                       [{"text": t} for t in math_web_texts(World(0), n_docs)])


def pretrain_small(out_dir: str, *, quick: bool = False, overrides: dict | None = None, log=None) -> dict:
    """Tokenizer + random Llama + pretraining + measurement into `out_dir` (atomically); returns the measured
    properties (`base_eval.json`)."""
    from posttrain.algorithms.sft import SFTConfig, run
    from posttrain.config import load_config
    from posttrain.core.tiny import build_tiny

    from .math_eval import measure_base

    started = time.perf_counter(), time.process_time()
    work = out_dir + f".run{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    web = write_web(work, QUICK["docs"] if quick else WEB_DOCS)
    with open(web, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    init = build_tiny(os.path.join(work, "init"), texts,
                      size=QUICK["size"] if quick else SMALL_SIZE, vocab_size=1024)
    settings = {**PRETRAIN, **(QUICK["overrides"] if quick else {}), **(overrides or {})}
    ov = [f"{k}={v}" for k, v in settings.items()]
    ov += [f"model={init}", f"data.train={web}", "data.completion_only_loss=false", "data.packing=true",
           f"output_dir={os.path.join(work, 'run')}", "report_to=[]"]
    cfg = load_config(SFTConfig, None, ov)
    (log or _log)(f"pretraining builtin:small ({cfg.max_steps} steps of {cfg.batch_size} x {cfg.max_length} "
                  f"tokens) -> {out_dir}")
    run(cfg)
    final = os.path.join(work, "run", "final")
    for name in ("metrics.jsonl", "loss.png", "config.yaml"):
        if os.path.exists(os.path.join(work, "run", name)):
            shutil.copy(os.path.join(work, "run", name), os.path.join(final, f"pretrain-{name}"))
    cost = {"steps": cfg.max_steps, "cpu_s": round(time.process_time() - started[1], 1),
            "wall_s": round(time.perf_counter() - started[0], 1)}
    measured = measure_base(final, n=QUICK["eval_n"] if quick else MEASURE["n"],
                            k=QUICK["eval_k"] if quick else MEASURE["k"])
    measured["pretrain"] = cost      # web + tokenizer + training, this process's CPU time (all its threads)
    with open(os.path.join(final, "base_eval.json"), "w", encoding="utf-8") as f:
        json.dump(measured, f, indent=2)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.replace(final, out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return measured


def ensure_small() -> str:
    """The cached `builtin:small` folder, pretrained and measured on first use (one process builds it)."""
    from posttrain.lab.pretrain import ensure_built

    return ensure_built(small_dir(), "base_eval.json", pretrain_small)


def measured(folder: str) -> dict | None:
    path = os.path.join(folder, "base_eval.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _log(msg: str) -> None:
    print(f"[posttrain] {msg}", file=sys.stderr, flush=True)
