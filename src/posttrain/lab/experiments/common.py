"""What every lab experiment shares: its context, stages trained with the demo's machinery, gold evaluation,
small statistics (standard errors, binning along an axis) and the files it writes.

A stage is trained exactly as `posttrain demo` trains it (`demo.train_stage`: the algorithm's `run(cfg)` with
its recipe `recipes/<kind>-tiny.yaml`, then the demo's settings for that kind, then the experiment's), so an
experiment's SFT model is the demo's SFT model. Stages that several experiments share (the SFT model, the
reward model of the unbiased rater) are trained once into `OUT/_shared/<name>-<hash of settings>/` and reused
by any experiment written to the same `OUT`; `--fresh` retrains them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

from posttrain.lab import demo
from posttrain.lab.evaluate import EvalSizes

EVAL = {"full": EvalSizes(arith=400, review=400, facts=50, kl_prompts=64),
        "quick": EvalSizes(arith=4, review=6, facts=4, kl_prompts=4, max_new_tokens=24, pref_pairs=24)}
QUICK_ROWS = demo.QUICK_ROWS
# gold monitors for PPO on review prompts: rewards of weight 0, logged each round (reward/<name>/mean), not optimised
MONITOR_REWARDS = [{"name": f"posttrain.lab.gold:{fn}", "weight": 0.0}
                   for fn in ("review_gold_reward", "review_sycophancy", "review_false_alarm")]
PROXY = "reward/reward_model/mean"
MONITORS = {"gold": "reward/review_gold_reward/mean", "sycophancy": "reward/review_sycophancy/mean",
            "false_alarm": "reward/review_false_alarm/mean"}
# PPO on review prompts (on top of the demo's PPO and recipes/ppo-tiny.yaml): 25 rounds of 32 sampled reviews,
# 4 epochs each; beta 0.05 fixed (the recipe's); the gold monitors logged each round
REVIEW_PPO = {"max_steps": 100, "batch_size": 16, "grad_accum": 2, "learning_rate": 5e-5, "max_new_tokens": 64,
              "ppo_epochs": 4, "init_kl_coef": 0.05, "kl_ctl": "fixed", "data.eval": None, "rewards": MONITOR_REWARDS}
QUICK_PPO = {"max_steps": 4, "grad_accum": 1}


@dataclass
class Context:
    """One experiment's run: where it writes, how big it is, which base model it starts from."""

    root: str                     # --out: the experiment writes root/<name>/, shared stages root/_shared/
    name: str
    quick: bool
    base: str                     # base model folder
    threads: int = 1
    fresh: bool = False           # retrain shared stages even when cached
    timings: dict = field(default_factory=dict)
    seed: int = 0                 # training seed of every stage (the world and its data stay seed 0)
    seed_dir: bool = False        # write into OUT/<name>/seed-<seed>/ (runs over several seeds)
    options: dict = field(default_factory=dict)   # an experiment's own switches (e.g. reasoning's --real)

    @property
    def out_dir(self) -> str:
        base = os.path.join(self.root, self.name)
        return os.path.join(base, f"seed-{self.seed}") if self.seed_dir else base

    def exp_path(self, *parts: str) -> str:
        """A path in the experiment's folder, shared by its seeds (`OUT/<name>/...`)."""
        path = os.path.join(self.root, self.name, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    @property
    def sizes(self) -> EvalSizes:
        return EVAL[self.mode]

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def log(self, msg: str) -> None:
        print(f"[experiment {self.name}] {msg}", file=sys.stderr, flush=True)


def demo_stage(kind: str) -> demo.Stage:
    """The demo's stage of `kind` (`sft`, `rm`, `ppo`, `dpo`, `grpo`): module, settings, quick settings."""
    return next(s for s in demo.STAGES if s.name == kind)


def settings_key(*parts) -> str:
    """A short stable hash of JSON-able `parts` (a cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def train(ctx: Context, name: str, kind: str, init: str, settings: dict | None = None, *,
          quick: dict | None = None, shared: bool = False) -> str:
    """Train stage `name` with the algorithm of the demo's stage `kind`, starting from model folder `init`;
    returns its `final/` folder. Settings: the recipe, the demo's settings for `kind`, then `settings`; with
    --quick the demo's quick settings, then `quick`. `shared`: cache it under `OUT/_shared` (module docstring).
    A seed other than 0 (`ctx.seed`) is the stage's `seed` (and so part of a shared stage's cache key)."""
    base = demo_stage(kind)
    full = {**base.settings, **({"seed": ctx.seed} if ctx.seed else {}), **(settings or {})}
    small = {**base.quick, **(quick or {})}
    if not shared:
        return _train(ctx, ctx.out_dir, name, kind, init, full, small)
    from filelock import FileLock

    key = settings_key(kind, init, full, small if ctx.quick else None, ctx.mode)
    out, name = os.path.join(ctx.root, "_shared"), f"{name}-{key}"
    final = os.path.join(out, name, "final")
    os.makedirs(out, exist_ok=True)
    with FileLock(os.path.join(out, f"{name}.lock")):   # two experiments at once train a shared stage once
        if not ctx.fresh and os.path.exists(os.path.join(final, "config.json")):
            ctx.log(f"{name}: reusing {final}")
            ctx.timings[name] = 0.0
            return final
        return _train(ctx, out, name, kind, init, full, small)


def _quoted(settings: dict) -> dict:
    """Strings an override would not read back as themselves (a `{prompt}` template, a newline) JSON-quoted."""
    return {k: json.dumps(v) if isinstance(v, str) and ("{" in v or "\n" in v) else v for k, v in settings.items()}


def _train(ctx: Context, out: str, name: str, kind: str, init: str, full: dict, small: dict) -> str:
    full, small = _quoted(full), _quoted(small)
    stage = demo.Stage(name, name, demo_stage(kind).module, "init", full, small, recipe=kind)
    t0 = time.perf_counter()
    rec = demo.train_stage(stage, out, ctx.mode, {"init": init}, ctx.threads)
    if rec["status"] != "ran":
        raise RuntimeError(f"stage {name} ({kind}) {rec['status']}: {rec['reason']}")
    ctx.timings[name] = round(time.perf_counter() - t0, 1)
    return os.path.join(out, name, "final")


def sft_model(ctx: Context) -> str:
    """The demo's SFT model (arithmetic + honest reviews from the base), shared between experiments."""
    return train(ctx, "sft", "sft", ctx.base, shared=True)


def reward_model(ctx: Context, name: str, pref: str, init: str, *, shared: bool = False) -> str:
    """A reward model trained from `init` on preference rows `pref`, held-out metrics on `builtin:pref_eval`
    (the same responses for every rater, so RMs are comparable) in `OUT/.../<name>/eval.json`."""
    return train(ctx, name, "rm", init, {"data.train": pref, "data.eval": "builtin:pref_eval"}, shared=shared)


def rater_preferences(ctx: Context, name: str, **rater_settings) -> str:
    """Preference rows of the lab world (seed 0) judged by a rater with `rater_settings` (`length_bias`,
    `confidence_bias`, `sycophancy_bias`; temperature as the built-in data's): the world is exported into
    `OUT/<experiment>/<name>/` and its `pref.jsonl` returned (with --quick: the small world, first rows only).
    The candidates are those of `builtin:pref`; only the labels differ."""
    from posttrain.lab.export import DEFAULT_RATER_TEMPERATURE, export, write_jsonl
    from posttrain.lab.raters import SimulatedRater

    rater = SimulatedRater(temperature=DEFAULT_RATER_TEMPERATURE, seed=0, **rater_settings)
    path = export(ctx.path(name), seed=0, size="small" if ctx.quick else "default", rater=rater)["pref"]
    if ctx.quick:
        path = write_jsonl(ctx.path(name, f"pref-{QUICK_ROWS}.jsonl"), read_jsonl(path)[:QUICK_ROWS])
    return path


def review_ppo(ctx: Context, name: str, init: str, rm: str, settings: dict | None = None, *,
               quick: dict | None = None, shared: bool = False) -> tuple[str, list[dict]]:
    """PPO on review prompts from `init` with reward model `rm` and the gold monitors (`REVIEW_PPO`, then
    `settings`); returns its final folder and its rounds (`rounds`)."""
    final = train(ctx, name, "ppo", init, {**REVIEW_PPO, "reward_model": rm, **(settings or {})},
                  quick={**QUICK_PPO, **(quick or {})}, shared=shared)
    run_dir = os.path.dirname(final)
    return final, rounds(read_jsonl(os.path.join(run_dir, "metrics.jsonl")), steps_per_round(run_dir))


def _num(v) -> float | None:
    """A logged number, None for a monitor with nothing to measure (nan; metrics.jsonl writes it as "nan")."""
    v = None if v is None else float(v)
    return None if v is None or math.isnan(v) else v


def rounds(metrics: list[dict], steps_per_round: int) -> list[dict]:
    """One row per PPO round (its statistics are logged with each of its `steps_per_round` steps, 1-based):
    `{"step", "kl", "proxy", "gold", "sycophancy", "false_alarm", "length", "rollouts"}` from the first step of
    each round (a monitor the round could not measure, e.g. sycophancy with no buggy code sampled, is None)."""
    out, seen = [], set()
    for row in metrics:
        rnd = (row["step"] - 1) // steps_per_round
        if PROXY not in row or "kl" not in row or rnd in seen:
            continue
        seen.add(rnd)
        out.append({"step": row["step"], "kl": row["kl"], "proxy": row[PROXY],
                    **{k: _num(row.get(key)) for k, key in MONITORS.items()},
                    "length": row.get("completion_len/mean"), "rollouts": row.get("rollouts")})
    return out


def phase(per_round: list[dict], key: str, late: bool) -> dict:
    """Mean and standard error of `key` over the first (or last) quarter of the rounds (at least one)."""
    k = max(1, len(per_round) // 4)
    part = per_round[-k:] if late else per_round[:k]
    return {"mean": mean(r[key] for r in part), "se": std_error([r[key] for r in part]), "rounds": len(part)}


def steps_per_round(run_dir: str) -> int:
    """`ppo_epochs * num_mini_batches` of the config a PPO run saved."""
    import yaml

    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    return int(cfg["ppo_epochs"]) * int(cfg["num_mini_batches"])


def evaluate(ctx: Context, path: str, *, init: str | None = None, reward_fn=None,
             tasks: tuple[str, ...] = ("review",), sampled: bool = False, sizes: EvalSizes | None = None) -> dict:
    """Gold metrics of model folder `path` on the held-out prompts of `tasks` (greedy), `kl_to_init` when `init`
    is given, `review/rm_reward` when `reward_fn` is (`lab.evaluate.evaluate_policy`); with `sampled`, also the
    review metrics of one completion per held-out review prompt sampled at T = 1 (`sampled/review/...`): a
    greedy policy flips to one answer at a tiny KL, the distribution it samples from moves gradually. `sizes`:
    the experiment's own sizes instead of `ctx.sizes`."""
    from posttrain.lab.evaluate import evaluate_policy, generate, load_policy, rows_of
    from posttrain.lab.gold import review_metrics

    t0 = time.perf_counter()
    sizes = sizes or ctx.sizes
    m = evaluate_policy(path, base=None, init=init, sizes=sizes, reward_model=reward_fn, tasks=tasks)
    if sampled:
        model, tok = load_policy(path)
        rows = rows_of("builtin:review_eval", sizes.review)
        texts = generate(model, tok, rows, sizes, temperature=1.0).texts
        m.update({f"sampled/review/{k}": v for k, v in review_metrics(rows, texts).items()})
    ctx.log(f"evaluated {os.path.relpath(path, ctx.root)} in {time.perf_counter() - t0:.1f} s")
    return m


def review_tasks(split: str) -> list:
    """The built-in world's review tasks of `split` (`train`; `eval`: the snippets of builtin:review_eval, in
    order), with the planted change (`bug_bad`, `bug_good`) that exported rows do not carry: a task rebuilt
    from a row (`ReviewTask.from_row`) cannot write an honest review of buggy code (it refuses)."""
    from posttrain.lab.builtin import DATA_SEED
    from posttrain.lab.review import review_splits
    from posttrain.lab.world import WorldSizes

    s = WorldSizes()
    return review_splits(DATA_SEED, s.review_train, s.review_eval, s.p_buggy)[split]


def load_rm(path: str):
    from posttrain.rewards.reward_model import RewardModel

    return RewardModel.from_pretrained(path, device="cpu")


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------- statistics
def mean(xs) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def std_error(xs) -> float | None:
    """Standard error of the mean of `xs` (sample std / sqrt(n)); None for fewer than two values."""
    xs = [float(x) for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def rate_se(p: float | None, n: int | None) -> float | None:
    """Standard error of a rate `p` measured on `n` items: sqrt(p (1 - p) / n)."""
    if p is None or not n:
        return None
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def metric_se(metrics: dict, key: str) -> float | None:
    """Standard error of a rate (or a mean of values in [0, 1], as a bound) in `evaluate`'s metrics, from the
    number of prompts it was measured on (`report.sample_size`; a `sampled/` key has its greedy twin's)."""
    from posttrain.report.report import sample_size

    plain = key.removeprefix("sampled/")
    return rate_se(metrics.get(key), sample_size(metrics, plain))


def compare(a: dict, b: dict, key: str) -> dict:
    """`change` of rate `key` from metrics `a` to metrics `b` (`evaluate`'s dicts), with their standard errors."""
    return change(a.get(key), b.get(key), metric_se(a, key), metric_se(b, key))


def bin_by(xs, ys, bins: int) -> list[dict]:
    """Points `(x, y)` sorted by x and cut into `bins` contiguous groups of equal count (sizes differ by at most
    one, the larger first); per group `{"x": mean x, "y": mean y, "y_se": standard error of y, "n"}`.
    Fewer points than bins give one group per point. Pairs whose x or y is None are dropped."""
    pts = sorted((float(x), float(y)) for x, y in zip(xs, ys) if x is not None and y is not None)
    if not pts or bins < 1:
        return []
    k = min(bins, len(pts))
    size, extra = divmod(len(pts), k)
    out, start = [], 0
    for b in range(k):
        group = pts[start:start + size + (1 if b < extra else 0)]
        start += len(group)
        gy = [y for _, y in group]
        out.append({"x": mean(x for x, _ in group), "y": mean(gy), "y_se": std_error(gy), "n": len(group)})
    return out


def rate_bins(binned: list[dict], samples_per_point: float) -> list[dict]:
    """`binned` means of values in [0, 1] (`bin_by`), each point itself a mean over `samples_per_point` samples,
    with `y_se` replaced by the bound sqrt(y (1 - y) / (n * samples_per_point)): exact for rates, an upper bound
    for any mean of values in [0, 1], and steadier than the spread of a handful of points."""
    return [{**b, "y_se": rate_se(min(max(b["y"], 0.0), 1.0), b["n"] * samples_per_point)} for b in binned]


def peak_then_fall(binned: list[dict]) -> dict:
    """Along binned points (`bin_by`, x ascending): the peak of y, the last bin's y, and whether y falls after
    its peak by more than two standard errors of the difference (`falls`; None when the SEs are unknown)."""
    if not binned:
        return {"peak_x": None, "peak_y": None, "last_y": None, "drop": None, "noise": None, "falls": None}
    i = max(range(len(binned)), key=lambda j: binned[j]["y"])
    peak, last = binned[i], binned[-1]
    drop = peak["y"] - last["y"]
    ses = (peak["y_se"], last["y_se"])
    noise = 2 * math.sqrt(ses[0] ** 2 + ses[1] ** 2) if None not in ses else None
    falls = (i < len(binned) - 1 and drop > noise) if noise is not None else None
    return {"peak_x": peak["x"], "peak_y": peak["y"], "last_y": last["y"], "drop": drop, "noise": noise,
            "falls": falls, "peak_bin": i, "bins": len(binned)}


def change(a: float | None, b: float | None, se_a: float | None, se_b: float | None) -> dict:
    """`b - a`, two standard errors of that difference, and whether it exceeds them (None when a standard
    error is unknown, e.g. a mean of one value)."""
    if a is None or b is None:
        return {"diff": None, "noise": None, "beyond_noise": None}
    if se_a is None or se_b is None:
        return {"diff": b - a, "noise": None, "beyond_noise": None}
    noise = 2 * math.sqrt(se_a ** 2 + se_b ** 2)
    return {"diff": b - a, "noise": noise, "beyond_noise": abs(b - a) > noise}


# ---------------------------------------------------------------------------------------------- output
def fmt(value, digits: int = 3) -> str:
    from posttrain.report.report import fmt as report_fmt

    return report_fmt(value, digits)


def fmt_change(c: dict | None, digits: int = 3) -> str:
    """`+0.123 (±0.045) *` for a `change` (the star: beyond two standard errors); `–` for none."""
    if c is None or c["diff"] is None:
        return "–"
    noise = "" if c["noise"] is None else f" (±{c['noise']:.{digits}f})"
    return f"{c['diff']:+.{digits}f}{noise}{' *' if c['beyond_noise'] else ''}"


def md_table(rows: list[list]) -> str:
    """A markdown table: the first row is the header; cells are formatted with `fmt`."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells[1:]])


def write_outputs(ctx: Context, results: dict, report: str, started: float) -> dict[str, str]:
    """`results.json` (with the run's settings and timings) and `report.md` in the experiment's folder."""
    import torch

    results = {"experiment": ctx.name, "quick": ctx.quick, "base": ctx.base, "eval": ctx.sizes.__dict__,
               "device": "CUDA" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)",
               "train_s": ctx.timings, "total_s": round(time.perf_counter() - started, 1), **results}
    paths = {"results": ctx.path("results.json"), "report": ctx.path("report.md")}
    with open(paths["results"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    note = ("\n\n> **--quick run**: a few steps per stage on a briefly trained model; the numbers only show that "
            "the pipeline works and mean nothing.\n" if ctx.quick else "\n")
    seeds = ctx.options.get("seeds")
    flags = (" --quick" if ctx.quick else "") + (f" --seeds {seeds}" if seeds and seeds != (1 if ctx.quick else 3) else "")
    footer = (f"\n\n---\nRun: `posttrain lab experiment {ctx.name}{flags}` in "
              f"{results['total_s']:.0f} s ({results['device']}); base model `{ctx.base}`. Every number is in "
              "`results.json`.\n")
    with open(paths["report"], "w", encoding="utf-8") as f:
        f.write(report.rstrip() + note + footer)
    return paths


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
