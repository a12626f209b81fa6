"""`posttrain demo [--out DIR] [--quick] [--base DIR]`: the main job, end to end, on a laptop CPU.

    base (builtin:tiny, pretrained on the lab's web text; cached)
      └─ SFT on demonstrations (builtin:sft)
           ├─ reward model from the simulated raters (builtin:pref; held out: builtin:pref_eval)
           │    └─ PPO-RLHF on review prompts, rewarded by that reward model
           ├─ DPO on the same preferences
           └─ GRPO on arithmetic with the exact-answer reward

Each stage trains with its algorithm's own `run(cfg)` into `OUT/<stage>/` (the trainer's output_dir:
metrics.jsonl, loss.png, config.yaml, final/); its config is its packaged recipe `<name>-tiny`
(`posttrain recipes`), then the demo's settings below (only keys the algorithm's config has). A missing
recipe stops the demo before anything trains; a stage that cannot run (its module missing, or it failed)
is a failure: the demo exits 1. Then every policy
(base, SFT, PPO, DPO, GRPO) is scored by the world's gold truth (`lab.evaluate`) and the report
(`report.report`) is written to `OUT/report.md` and `OUT/report.html`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

from posttrain.lab.evaluate import EvalSizes
from posttrain.report.claims import fmt



@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    module: str
    init: str                                  # the stage whose final model it starts from
    settings: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)  # what --quick changes
    needs: tuple[str, ...] = ()                # other stages whose outputs it uses
    recipe: str | None = None                  # packaged recipe <recipe>-tiny; None = the stage's name


QUICK_DATA = {"batch_size": 4, "max_length": 192}
STAGES = (
    Stage("sft", "SFT on demonstrations", "posttrain.algorithms.sft", "base",
          {"max_steps": 300, "data.train": "builtin:sft", "data.eval": None, "batch_size": 16, "learning_rate": 1e-3,
           "warmup_steps": 10, "max_length": 256, "loss": "nll"}, {"max_steps": 4, **QUICK_DATA}),
    Stage("rm", "reward model from the simulated raters", "posttrain.algorithms.reward_model", "sft",
          {"max_steps": 120, "data.train": "builtin:pref", "data.eval": "builtin:pref_eval", "batch_size": 16,
           "learning_rate": 5e-4, "warmup_steps": 5, "max_length": 256}, {"max_steps": 3, **QUICK_DATA}),
    Stage("ppo", "PPO-RLHF on review prompts with the reward model", "posttrain.algorithms.ppo", "sft",
          {"max_steps": 40, "data.train": "builtin:review_prompts", "data.eval": None, "batch_size": 16,
           "max_new_tokens": 48, "learning_rate": 2e-5},
          {"max_steps": 2, "max_new_tokens": 12, "ppo_epochs": 1, **QUICK_DATA},
          needs=("rm",)),
    Stage("dpo", "DPO on the same preferences", "posttrain.algorithms.dpo", "sft",
          {"max_steps": 80, "data.train": "builtin:pref", "data.eval": None, "batch_size": 16, "learning_rate": 5e-5,
           "warmup_steps": 5, "max_length": 256, "beta": 0.1, "precompute_ref": True},
          {"max_steps": 3, **QUICK_DATA}),
    Stage("grpo", "GRPO on arithmetic with the exact-answer reward", "posttrain.algorithms.grpo", "sft",
          {"max_steps": 60, "data.train": "builtin:arith_train", "data.eval": None, "prompt_template": None,
           "rewards": [{"name": "exact_match", "weight": 1.0}], "num_generations": 8, "batch_size": 32,
           "max_length": 192, "max_new_tokens": 48, "learning_rate": 1e-4},
          {"max_steps": 2, "num_generations": 2, "max_new_tokens": 12, **QUICK_DATA}),
)
QUICK_ROWS = 24      # --quick trains and evaluates on the first rows of each data set only
EVAL = {"full": EvalSizes(arith=400, review=400),
        "quick": EvalSizes(arith=6, review=6, facts=4, kl_prompts=4, max_new_tokens=24, pref_pairs=24)}
QUICK_PRETRAIN = ["max_steps=8", "batch_size=8", "warmup_steps=2", "save_steps=0"]


def log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def algorithm(stage: Stage):
    """`(config class, run)` of the stage's algorithm (ImportError when its module is missing)."""
    mod = importlib.import_module(stage.module)
    cls = getattr(mod, "CONFIG", None) or getattr(mod, "SFTConfig", None)
    if cls is None or not hasattr(mod, "run"):
        raise AttributeError(f"{stage.module} defines no CONFIG dataclass and run(cfg)")
    return cls, mod.run


def recipe(stage: Stage) -> str:
    """The stage's packaged recipe file; a ConfigError when it is missing (never a silent fallback)."""
    from posttrain.config import recipe_path

    return recipe_path(f"{stage.recipe or stage.name}-tiny")


def subset(spec: str, n: int, out_dir: str) -> str:
    """The first `n` rows of data set `spec` (`builtin:NAME`) written to `out_dir/data/NAME-n.jsonl`."""
    from posttrain.lab.evaluate import rows_of
    from posttrain.lab.export import write_jsonl

    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)
    return write_jsonl(os.path.join(out_dir, "data", f"{spec.split(':', 1)[1]}-{n}.jsonl"), rows_of(spec, n))


def stage_settings(stage: Stage, mode: str, model: str, out_dir: str, outputs: dict, threads: int) -> dict:
    """Every setting the demo gives the stage (before checking which keys its config has)."""
    settings = {"model": model, "output_dir": os.path.join(out_dir, stage.name), "report_to": [], "save_steps": 0,
                "eval_steps": 0, "resume": False, "seed": 0, "threads": threads, **stage.settings}
    if mode == "quick":
        settings.update(stage.quick)
        for key, value in settings.items():
            if key.startswith("data.") and isinstance(value, str) and value.startswith("builtin:"):
                settings[key] = subset(value, QUICK_ROWS, out_dir)
    if "rm" in stage.needs:
        settings["reward_model"] = outputs["rm"]
    return settings


def overrides(cls, settings: dict) -> tuple[list[str], list[str]]:
    """`key=value` overrides of `settings` that `cls` has a key for, and the names of those it has not."""
    from posttrain.config import describe

    keys = {k for k, _, _ in describe(cls)}
    applied, dropped = [], []
    for k, v in settings.items():
        if k not in keys:
            dropped.append(k)
        else:
            applied.append(f"{k}={json.dumps(v) if isinstance(v, (list, dict, type(None))) else v}")
    return applied, dropped


def train_stage(stage: Stage, out_dir: str, mode: str, outputs: dict, threads: int) -> dict:
    """Train one stage; returns its record (status ran / skipped / failed, times, output). A stage whose
    module cannot be imported failed; one whose inputs did not run is skipped (the run failed already)."""
    rec = {"name": stage.name, "title": stage.title, "init": stage.init, "status": "failed", "reason": "",
           "output_dir": os.path.join(out_dir, stage.name), "steps": None, "train_s": None, "eval_s": None}
    missing = [n for n in (stage.init, *stage.needs) if n not in outputs]
    try:
        algo = algorithm(stage)
    except (ImportError, AttributeError) as e:
        traceback.print_exc()
        rec["reason"] = f"cannot load {stage.module}: {type(e).__name__}: {e}".split("\n")[0][:300]
        return rec
    if missing:
        rec.update(status="skipped", reason=f"needs {', '.join(missing)}, which did not run")
        return rec
    from posttrain.config import load_config
    from posttrain.lab.builtin import resolve_config

    cls, run = algo
    path = recipe(stage)
    t0 = time.perf_counter()
    try:
        ov, dropped = overrides(cls, stage_settings(stage, mode, outputs[stage.init], out_dir, outputs, threads))
        if "reward_model" in dropped:
            raise KeyError(f"{cls.__name__} has no key 'reward_model' to name the reward model")
        shutil.rmtree(rec["output_dir"], ignore_errors=True)
        cfg = resolve_config(load_config(cls, path, ov))
        log(f"{stage.name}: {stage.title} — {cfg.max_steps} steps from {stage.init}"
            + f" (recipe {os.path.basename(path)})"
            + (f"; its config has no key for: {', '.join(dropped)}" if dropped else ""))
        run(cfg)
    except Exception as e:  # a stage's failure is reported; the stages that do not need it still run
        traceback.print_exc()
        rec.update(status="failed", reason=f"{type(e).__name__}: {e}".split("\n")[0][:300],
                   train_s=time.perf_counter() - t0)
        return rec
    rec.update(status="ran", steps=cfg.max_steps, train_s=time.perf_counter() - t0, recipe=path)
    outputs[stage.name] = os.path.join(rec["output_dir"], "final")
    log(f"{stage.name}: trained in {rec['train_s']:.1f} s -> {outputs[stage.name]}")
    return rec


def make_base(args, out_dir: str, mode: str) -> tuple[str, float]:
    """The base model folder: --base, else a briefly pretrained one (--quick), else builtin:tiny (cached)."""
    from posttrain.lab.builtin import resolve_model
    from posttrain.lab.pretrain import pretrain

    t0 = time.perf_counter()
    if args.base:
        base = os.path.abspath(args.base)
    elif mode == "quick":
        base = pretrain(os.path.join(out_dir, "base"), overrides=QUICK_PRETRAIN)
    else:
        base = resolve_model("tiny")
    return base, time.perf_counter() - t0


def evaluate_all(records: list[dict], outputs: dict, sizes: EvalSizes) -> dict | None:
    """Gold metrics of every policy that trained (and the base), and the reward model's held-out accuracy."""
    from posttrain.lab.evaluate import evaluate_policy, reward_model_accuracy, rows_of

    rm_fn, rm_stats = None, None
    if "rm" in outputs:
        from posttrain.rewards.reward_model import RewardModel

        t0 = time.perf_counter()
        rm_fn = RewardModel.from_pretrained(outputs["rm"], device="cpu")
        rm_stats = reward_model_accuracy(rm_fn, rows_of("builtin:pref_eval", sizes.pref_pairs))
        rec = next(r for r in records if r["name"] == "rm")
        rec["eval_s"] = time.perf_counter() - t0
        log(f"rm: held-out honest-vs-sycophantic accuracy {fmt(rm_stats['rm/honest_vs_sycophantic'])} "
            f"({rm_stats['rm/n_honest_vs_sycophantic']} pairs)")
    for rec in records:
        if rec["status"] != "ran" or rec["name"] == "rm":
            continue
        t0 = time.perf_counter()
        samples = os.path.join(rec["output_dir"], "samples.jsonl")
        os.makedirs(rec["output_dir"], exist_ok=True)
        init = outputs.get(rec["init"]) if rec["init"] not in (None, "base") else None
        rec["metrics"] = evaluate_policy(outputs[rec["name"]], base=outputs["base"], init=init, sizes=sizes,
                                         reward_model=rm_fn, samples_path=samples)
        rec["samples"] = samples
        rec["eval_s"] = time.perf_counter() - t0
        m = rec["metrics"]
        log(f"{rec['name']}: gold arith acc {fmt(m['arith/accuracy'])}, review gold {fmt(m['review/gold_reward'])}, "
            f"honest {fmt(m['review/honest_rate'])}, "
            f"sycophancy {fmt(m['review/sycophancy_rate'])}, KL {m.get('kl_to_base', 0.0):.2f} "
            f"({rec['eval_s']:.1f} s)")
    return rm_stats


def parse(argv: list[str]):
    ap = argparse.ArgumentParser(prog="posttrain demo", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke-test sizes: a few steps per stage, a briefly pretrained base, few eval prompts")
    ap.add_argument("--base", default=None, help="start from this base model folder instead of builtin:tiny")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: a tiny model gains nothing from more, and on a busy "
                         "machine several threads wait on each other)")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the demo; exit status 1 unless every stage ran."""
    import torch

    args = parse(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return run_demo(args)
    finally:
        torch.set_num_threads(threads)


def run_demo(args) -> int:
    import torch

    from posttrain.report.report import write_report

    mode = "quick" if args.quick else "full"
    for stage in STAGES:  # a missing recipe is an error before anything trains, never a silent fallback
        recipe(stage)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    base, base_s = make_base(args, out_dir, mode)
    log(f"base model: {base} ({base_s:.1f} s)")
    outputs = {"base": base}
    records = [{"name": "base", "title": "pretrained base model", "init": None, "status": "ran",
                "reason": "" if mode == "full" or args.base else "pretrained briefly (--quick)",
                "output_dir": base, "steps": None, "train_s": base_s, "eval_s": None}]
    records += [train_stage(s, out_dir, mode, outputs, args.threads) for s in STAGES]
    sizes = EVAL[mode]
    rm_stats = evaluate_all(records, outputs, sizes)
    device = "CUDA" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    results = {"stages": records, "reward_model": rm_stats, "total_s": time.perf_counter() - t_start,
               "quick": args.quick, "base": base, "eval": asdict(sizes), "device": device}
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    paths = write_report(out_dir, results)
    print(summary(records, results, paths))
    return 0 if all(r["status"] == "ran" for r in records) else 1


def summary(records: list[dict], results: dict, paths: dict) -> str:
    lines = ["", "stage   status   train s  eval s  note"]
    for r in records:
        t = f"{r['train_s']:.1f}" if r["train_s"] is not None else "-"
        e = f"{r['eval_s']:.1f}" if r["eval_s"] is not None else "-"
        lines.append(f"{r['name']:<7} {r['status']:<8} {t:>7}  {e:>6}  {r['reason']}")
    lines += [f"total {results['total_s']:.1f} s", f"report: {paths['md']}", f"        {paths['html']}",
              "plots:  " + "\n        ".join(paths["plots"])]
    return "\n".join(lines)
