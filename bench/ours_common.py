"""Shared plumbing of bench/ours_{dpo,reward,grpo}.py: the CLI (the harness's flags plus --fixture and --set),
the base config overrides every trainer gets, a timed step loop and the one JSON line, with the same fields as
the TRL harness's `common.run` (see bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import time

import torch


def cli(steps: int, batch: int, max_length: int, lr: float, doc: str | None = None) -> argparse.Namespace:
    """The harness's flags and defaults (`common.cli` of ../shared/bench), plus --fixture and --set."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", required=True, help="the harness's fixture folder (bench/.trl-harness/fixture)")
    ap.add_argument("--model", default="tiny-llama", help="folder under FIXTURE (tiny-llama, tiny-llama-l) or a path")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--max-length", type=int, default=max_length)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="steps excluded from the steady-state figures")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra posttrain config override (repeatable), e.g. --set logits_chunk=0; changes the work "
                         "or the speed, so say so when quoting a figure")
    a = ap.parse_args()
    a.model_path = a.model if os.path.isdir(a.model) else os.path.join(a.fixture, a.model)
    torch.set_num_threads(a.threads)
    return a


def base_overrides(a: argparse.Namespace, data_file: str, out: str) -> list[str]:
    """What the harness pins (`common.pinned`), in posttrain's config keys. The engine's AdamW is fused."""
    return [f"model={a.model_path}", f"data.train={os.path.join(a.fixture, 'data', data_file)}",
            f"output_dir={out}", f"max_steps={a.steps}", f"batch_size={a.batch}", "grad_accum=1",
            f"learning_rate={a.lr}", "lr_scheduler=constant", "warmup_steps=0", "weight_decay=0.0",
            "max_grad_norm=1.0", f"seed={a.seed}", "torch_dtype=float32",
            "gradient_checkpointing=false", "report_to=[]", f"threads={a.threads}", "resume=false",
            "data.packing=false"]


def out_dir(name: str) -> str:
    return os.path.join("/tmp", f"posttrain-bench-{name}-{os.getpid()}")


def cpu_clock() -> tuple[float, float]:
    """(machine-wide busy CPU seconds, this process's CPU seconds), as the harness's `common.cpu_clock`."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), r.ru_utime + r.ru_stime


LOAD = {}  # self_cores / other_cores of the last `train` call


def train(eng, steps: int, per_step) -> tuple[list[tuple[float, float]], list[dict]]:
    """Run `steps` optimizer steps, timing each `eng.train_step()` alone (begin, end) as the harness's
    StepTimer does; `per_step(metrics, eng)` -> dict of the step's counts, taken after the timed call.
    Also records the cores this process and everything else used meanwhile (`LOAD`)."""
    eng.model.train()
    stamps, rows = [], []
    c0, t0 = cpu_clock(), time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        m = eng.train_step()
        stamps.append((t, time.perf_counter()))
        rows.append(per_step(m, eng))
    c1, dt = cpu_clock(), time.perf_counter() - t0
    LOAD.update(self_cores=round((c1[1] - c0[1]) / dt, 2),
                other_cores=round(max(0.0, (c1[0] - c0[0]) - (c1[1] - c0[1])) / dt, 2))
    return stamps, rows


def train_counting(eng, steps: int, samples) -> tuple[list[tuple[float, float]], list[dict]]:
    """`train` with the harness's counts per step: the padded size of the step's batch and its samples
    (`samples(micro_batch)`: rows, pairs), read where the algorithm builds the batch."""
    build, seen = eng.algo.micro_batches, {}

    def micro_batches(step):
        micros = build(step)
        seen.update(padded=sum(b.input_ids.numel() for b in micros), samples=sum(samples(b) for b in micros))
        return micros

    eng.algo.micro_batches = micro_batches
    return train(eng, steps, lambda m, eng: {"tokens": m["tokens"], "padded_tokens": seen["padded"],
                                             "samples": seen["samples"], "loss": m["loss"]})


def report(name: str, a: argparse.Namespace, eng, stamps, rows, **extra) -> dict:
    """Print the JSON line. rows[i] has tokens, padded_tokens, samples, loss (+ whatever `extra` reads)."""
    w = a.warmup
    wall, steady = stamps[-1][1] - stamps[0][0], stamps[-1][1] - stamps[w][0]
    tok = lambda rs, k="tokens": sum(r[k] for r in rs)  # noqa: E731
    params = sum(p.numel() for p in eng.model.parameters())
    rep = dict(
        bench=name, model=os.path.basename(os.path.normpath(a.model_path)), params=params,
        params_no_embed=params - eng.model.get_input_embeddings().weight.numel(), threads=a.threads,
        steps=a.steps, batch=a.batch, max_length=a.max_length, train_s=round(wall, 3),
        tokens=int(tok(rows)), padded_tokens=int(tok(rows, "padded_tokens")),
        tokens_per_s=round(tok(rows) / wall, 1), steady_tokens_per_s=round(tok(rows[w:]) / steady, 1),
        samples_per_s=round(tok(rows, "samples") / wall, 3),
        median_step_s=round(statistics.median(e - b for b, e in stamps[w:]), 4),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        first_loss=float(f"{rows[0]['loss']:.6g}"), final_loss=float(f"{rows[-1]['loss']:.6g}"),
        mean_last10_loss=float(f"{sum(r['loss'] for r in rows[-10:]) / len(rows[-10:]):.6g}"),
        **LOAD, overrides=list(a.set))
    for k, v in extra.items():
        rep[k] = v(rows, wall) if callable(v) else v
    rep["torch"] = torch.__version__
    print(json.dumps(rep), flush=True)
    shutil.rmtree(eng.cfg.output_dir, ignore_errors=True)
    return rep
