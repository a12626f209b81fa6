"""Across training seeds: every `change` in an experiment's verdict (`common.change`: `diff`, `noise`,
`beyond_noise`), gathered over the seeds it ran with.

For each change: the mean of its `diff` over the seeds, the seed spread (`seed_noise`: two standard errors of
that mean, from the sample standard deviation across seeds), the evaluation noise (`eval_noise`: the mean of
the seeds' own two-standard-error bounds, from the number of held-out items; not divided by sqrt(seeds),
because every seed is evaluated on the same held-out items) and `holds`: the mean exceeds BOTH (None with one
seed, or when a noise is unknown). `same_sign`: every seed's diff has the sign of the mean.
"""
from __future__ import annotations

import math

from posttrain.lab.experiments.common import fmt, mean, std_error

_CHANGE = {"diff", "noise", "beyond_noise"}


def change_leaves(tree, prefix: str = "") -> dict[str, dict]:
    """`{"a/b/c": change}` for every `change` dict nested in `tree` (dicts only), keys joined with "/"."""
    if isinstance(tree, dict) and _CHANGE <= set(tree):
        return {prefix: tree}
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(change_leaves(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def aggregate(verdicts: dict[int, dict]) -> dict[str, dict]:
    """Per change path (in first-seen order): `mean`, `seed_se`, `seed_noise`, `eval_noise`, `holds`,
    `same_sign`, `diffs` (seed -> diff) — see the module docstring. `verdicts`: seed -> verdict."""
    leaves = {seed: change_leaves(v) for seed, v in verdicts.items()}
    paths = list(dict.fromkeys(p for per in leaves.values() for p in per))
    out = {}
    for path in paths:
        diffs = {s: per[path]["diff"] for s, per in leaves.items() if path in per and per[path]["diff"] is not None}
        noises = [per[path]["noise"] for per in leaves.values() if path in per and per[path]["noise"] is not None]
        m, se = mean(diffs.values()), std_error(diffs.values())
        seed_noise = None if se is None else 2 * se
        eval_noise = mean(noises)
        holds = (None if m is None or seed_noise is None or eval_noise is None
                 else abs(m) > seed_noise and abs(m) > eval_noise)
        same = None if m is None else all(math.copysign(1, d) == math.copysign(1, m) and d != 0 for d in diffs.values())
        out[path] = {"mean": m, "seed_se": se, "seed_noise": seed_noise, "eval_noise": eval_noise, "holds": holds,
                     "same_sign": same, "diffs": diffs}
    return out


def table(agg: dict[str, dict], digits: int = 3) -> str:
    """Markdown: one row per change (mean, ± seed spread, ± eval noise, per-seed diffs, holds)."""
    head = "| effect | mean over seeds | ± seeds (2 SE) | ± eval (2 SE) | per seed | holds |\n|---|---|---|---|---|---|"
    rows = []
    for path, a in agg.items():
        per = ", ".join(f"{d:+.{digits}f}" for d in a["diffs"].values())
        holds = {True: "**yes**", False: "no", None: "–"}[a["holds"]]
        m = "–" if a["mean"] is None else f"{a['mean']:+.{digits}f}"
        rows.append(f"| {path} | {m} | {fmt(a['seed_noise'], digits)} | {fmt(a['eval_noise'], digits)} | {per} "
                    f"| {holds} |")
    return "\n".join([head, *rows])


def plot(agg: dict[str, dict], path: str, title: str) -> str | None:
    """Horizontal bars: each change's mean over seeds, ±2 SE across seeds (black), the evaluation noise (grey
    band) and each seed's diff (dots)."""
    from posttrain.lab.experiments.common import pyplot, save_figure

    items = [(p, a) for p, a in agg.items() if a["mean"] is not None]
    if not items:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(items) + 1.4))
    for i, (p, a) in enumerate(items):
        if a["eval_noise"] is not None:
            ax.fill_betweenx([i - 0.4, i + 0.4], -a["eval_noise"], a["eval_noise"], color="0.88")
        color = "tab:green" if a["holds"] else "tab:grey"
        ax.barh(i, a["mean"], color=color, height=0.6, xerr=a["seed_noise"], capsize=3)
        ax.plot(list(a["diffs"].values()), [i] * len(a["diffs"]), "k.", ms=4)
    ax.set_yticks(range(len(items)), [p for p, _ in items], fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_title(f"{title}: effects over seeds (green: beyond seed spread and eval noise; grey band: eval noise)",
                 fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)
