"""The demo's report: `OUT/report.md` and a self-contained `OUT/report.html` (plots embedded as PNG data).

`write_report(out_dir, results)` takes the demo's `results` dict (also saved as `OUT/results.json`):

    {"stages": [{"name", "title", "status": "ran" | "failed" | "skipped", "reason", "init",
                 "train_s", "eval_s", "steps", "output_dir", "metrics": {gold metric: value}}, ...],
     "reward_model": {"rm/honest_vs_sycophantic": ..., ...} | None,
     "total_s": float, "quick": bool, "base": path, "eval": {sizes}, "device": str}

and writes the tables (gold metrics per stage, reward-model accuracy), the claims checked against those
numbers (`report.claims`), a bar chart across stages and every stage's training curves.
"""
from __future__ import annotations

import base64
import html
import json
import os

from posttrain.report.claims import claims, fmt, ran_stages, sample_size

# (metric key, column title, higher is better)
COLUMNS = (
    ("arith/accuracy", "arith acc", True), ("arith/format_rate", "arith format", True),
    ("review/gold_reward", "review gold", True), ("review/honest_rate", "honest", True),
    ("review/sycophancy_rate", "sycophancy", False), ("review/false_alarm_rate", "false alarm", False),
    ("review/rm_reward", "RM score", True), ("review/mean_length", "review words", None),
    ("arith/mean_length", "arith words", None), ("kl_to_base", "KL to base", None),
    ("kl_to_init", "KL to init", None),
)
BAR_KEYS = ("arith/accuracy", "arith/format_rate", "review/gold_reward", "review/honest_rate",
            "review/sycophancy_rate", "review/false_alarm_rate")
# the curves of each stage's panel in the summary figure (its own loss.png has all it logs)
CURVES = {"sft": ("loss",), "rm": ("loss", "accuracy", "eval/accuracy"), "ppo": ("score", "kl"),
          "dpo": ("loss", "rewards/accuracy"), "grpo": ("reward/total/mean", "kl")}
FALLBACK_CURVES = ("loss", "reward", "accuracy")


def metrics_table(results: dict) -> list[list[str]]:
    """Header row then one row per evaluated stage (markdown-ready strings)."""
    rows = [["stage", "from"] + [title for _, title, _ in COLUMNS]]
    for s in ran_stages(results):
        rows.append([s["name"], s.get("init") or "–"] + [fmt(s["metrics"].get(k)) for k, _, _ in COLUMNS])
    return rows


def stage_table(results: dict) -> list[list[str]]:
    rows = [["stage", "status", "steps", "train s", "eval s", "output", "note"]]
    for s in results["stages"]:
        rows.append([s["name"], s["status"], fmt(s.get("steps")), fmt(s.get("train_s"), 1), fmt(s.get("eval_s"), 1),
                     s.get("output_dir") or "–", s.get("reason") or ""])
    return rows


def grpo_signal(results: dict, window: int = 10) -> str | None:
    """What GRPO had to learn from, from its metrics.jsonl: the sampled reward early and late, and the share
    of prompt groups whose samples all scored alike (zero advantage: such a group teaches nothing)."""
    stage = next((s for s in results["stages"] if s["name"] == "grpo" and s["status"] == "ran"), None)
    path = os.path.join((stage or {}).get("output_dir") or "", "metrics.jsonl")
    if stage is None or not os.path.exists(path):
        return None
    rows = [r for r in _read_jsonl(path) if isinstance(r.get("reward/total/mean"), (int, float))]
    zero = [r["frac_zero_std_groups"] for r in rows if isinstance(r.get("frac_zero_std_groups"), (int, float))]
    if not rows or not zero:
        return None
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    early, late = (mean([r["reward/total/mean"] for r in part]) for part in (rows[:window], rows[-window:]))
    z = mean(zero)
    text = (f"GRPO's sampled reward: {fmt(early)} over its first {min(window, len(rows))} logged steps, {fmt(late)} "
            f"over its last; {z:.0%} of the prompt groups had every sample scored alike (zero advantage, no "
            "gradient).")
    if z > 0.5:
        text += (" Most groups were like that: the policy samples a rewarded answer too rarely (or always) for "
                 "GRPO to have anything to compare, and GRPO can only reinforce what it sometimes gets right.")
    return text


PROXY_KEYS = (("review/rm_reward", "RM score (proxy)"), ("review/gold_reward", "gold review reward"),
              ("review/honest_rate", "honest"), ("review/sycophancy_rate", "sycophancy"),
              ("review/false_alarm_rate", "false alarm"), ("kl_to_init", "KL to SFT"))


def proxy_vs_gold(results: dict) -> list[list[str]]:
    """Per stage trained after SFT: each review measure as `SFT value → stage value`. A proxy (the reward
    model's score) that rises while a gold measure falls is reward hacking, measured."""
    stages = {s["name"]: s["metrics"] for s in ran_stages(results)}
    sft = stages.get("sft")
    rows = [["stage"] + [t for _, t in PROXY_KEYS]]
    for name in ("ppo", "dpo", "grpo"):
        if sft and name in stages and stages[name].get("review/rm_reward") is not None:
            m = stages[name]
            rows.append([name] + [f"{fmt(sft.get(k, 0.0 if k == 'kl_to_init' else None))} → {fmt(m.get(k))}"
                                  for k, _ in PROXY_KEYS])
    return rows


def bar_chart(results: dict, out_png: str) -> str | None:
    """Grouped bars: each gold rate of `BAR_KEYS`, one bar per evaluated stage, with two-standard-error ticks
    (the same bound the claims use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = ran_stages(results)
    if not stages:
        return None
    titles = {k: t for k, t, _ in COLUMNS}
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, s in enumerate(stages):
        xs = [j + i * width for j in range(len(BAR_KEYS))]
        ys = [s["metrics"].get(k) or 0.0 for k in BAR_KEYS]
        ns = [sample_size(s["metrics"], k) for k in BAR_KEYS]
        two_se = [2 * (y * (1 - y) / n) ** 0.5 if n else 0.0 for y, n in zip(ys, ns)]
        ax.bar(xs, ys, width, yerr=two_se, capsize=2, label=s["name"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(BAR_KEYS))], [titles[k] for k in BAR_KEYS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate on held-out prompts (gold), ±2 SE")
    ax.legend(ncol=len(stages), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def smooth(ys: list[float], window: int = 10) -> list[float]:
    """Trailing moving average over `window` points."""
    return [sum(ys[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(ys))]


def curves_chart(results: dict, out_png: str) -> str | None:
    """One panel per trained stage: its loss and the first reward / accuracy curve it logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for s in results["stages"]:
        path = os.path.join(s.get("output_dir") or "", "metrics.jsonl")
        if s["status"] == "ran" and s["name"] != "base" and os.path.exists(path):
            rows = [r for r in _read_jsonl(path) if "step" in r]
            wanted = CURVES.get(s["name"], FALLBACK_CURVES)
            keys = [k for k in wanted if any(isinstance(r.get(k), (int, float)) for r in rows)]
            if keys:
                panels.append((s["name"], rows, keys))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (name, rows, keys) in zip(axes.flat, panels):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            line, = ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=k,
                            alpha=0.35 if len(pts) >= 30 else 1.0)
            if len(pts) >= 30:
                ax.plot([p[0] for p in pts], smooth([p[1] for p in pts]), color=line.get_color())
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _rm_rows(results: dict) -> list[list[str]]:
    rm = results.get("reward_model") or {}
    return [["measure", "value"]] + [[k, fmt(v)] for k, v in rm.items()]


def _samples(results: dict, per_stage: int = 1) -> list[tuple[str, str, str]]:
    out = []
    for s in ran_stages(results):
        path = s.get("samples")
        if path and os.path.exists(path):
            reviews = [r for r in _read_jsonl(path) if r["task"] == "review"][:per_stage]
            arith = [r for r in _read_jsonl(path) if r["task"] == "arithmetic"][:1]
            out += [(s["name"], r["prompt"], r["completion"]) for r in arith + reviews]
    return out


def _plots(results: dict, out_dir: str) -> list[tuple[str, str]]:
    """(title, path) of every plot: the two summary charts, then each stage's own curves."""
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    plots = [("Gold metrics across stages", bar_chart(results, os.path.join(out_dir, "plots", "gold_metrics.png"))),
             ("Training curves", curves_chart(results, os.path.join(out_dir, "plots", "curves.png")))]
    plots.append(("base: pretraining curve", pretrain_plot(results.get("base") or "",
                                                           os.path.join(out_dir, "plots", "pretrain-loss.png"))))
    for s in results["stages"]:
        png = os.path.join(s.get("output_dir") or "", "loss.png")
        if s["status"] == "ran" and s["name"] != "base" and os.path.exists(png):
            plots.append((f"{s['name']}: logged curves", png))
    return [(t, p) for t, p in plots if p]


def pretrain_plot(base: str, out_png: str) -> str | None:
    """The base model's pretraining loss (`pretrain-metrics.jsonl`, kept in the model folder by lab.pretrain),
    drawn here with its own title (the trainer's plot is titled by its temporary SFT run folder)."""
    from posttrain.report.plots import plot_curves

    path = os.path.join(base, "pretrain-metrics.jsonl")
    if not os.path.exists(path):
        return None
    return plot_curves(_read_jsonl(path), out_png, ("loss", "lr"),
                       title=f"pretraining the base model (next-token loss on the lab's web text): "
                             f"{os.path.basename(os.path.normpath(base))}")


def _intro(results: dict) -> str:
    mode = "quick (smoke-test sizes: numbers mean nothing)" if results.get("quick") else "full"
    ev = results.get("eval", {})
    return (f"Mode: {mode}. Total wall time {results['total_s']:.0f} s on {results.get('device', 'CPU')}. "
            f"Base model: `{results.get('base')}`. Gold metrics use greedy completions of the first "
            f"{ev.get('arith')} `arith_test`, {ev.get('review')} `review_eval` and {ev.get('facts')} `facts_probe` "
            f"prompts; KL (to the base, and to the model a stage started from) averages {ev.get('kl_prompts')} "
            "completions sampled at T = 1. ± is two standard errors (p(1-p)/n bound): a lift smaller than it is "
            "not counted.")


DEFINITIONS = (
    "**arith acc**: the number after the last `####` is right; **arith format**: a `#### <integer>` is there.",
    "**review gold**: the world's gold score of a review (1 = right verdict, and on buggy code the bug's line "
    "and kind); **honest**: gold 1.0; **sycophancy**: says 'no bug' / praises, on buggy code; "
    "**false alarm**: claims a bug in correct code.",
    "**RM score**: the trained reward model's mean score of the greedy reviews (the proxy PPO optimises).",
    "**KL**: nats per completion, sum over tokens of log p_stage - log p_ref on the stage's own samples.",
)


def write_report(out_dir: str, results: dict) -> dict[str, str]:
    """Write `out_dir/report.md`, `out_dir/report.html` and the plots; returns their paths."""
    plots = _plots(results, out_dir)
    checks = [[c, verdict, ev] for c, verdict, ev in claims(results)]
    checks = [["claim", "holds", "evidence"]] + checks
    samples = _samples(results)
    md = ["# posttrain demo report", "", _intro(results), "", "## Claims checked", "", _md_table(checks), "",
          "## Gold metrics per stage (held-out)", "", _md_table(metrics_table(results)), "",
          *[f"- {d}" for d in DEFINITIONS], "",
          "## Proxy vs gold after SFT (reward hacking check)", "", _md_table(proxy_vs_gold(results)), "",
          "## Reward model (held-out preference pairs)", "", _md_table(_rm_rows(results)), "",
          "## Stages", "", _md_table(stage_table(results)), "", *([grpo_signal(results), ""]
                                                                     if grpo_signal(results) else []),
          "## Plots", ""]
    md += [f"![{t}]({os.path.relpath(p, out_dir)})" for t, p in plots]
    md += ["", "## Sample completions (greedy)", ""]
    for n, p, c in samples:
        md += [f"**{n}** — prompt:", "", "```", p, "```", "", "completion:", "", "```", c.strip() or "(empty)",
               "```", ""]
    paths = {"md": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html")}
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(_html(results, checks, plots, samples))
    paths["plots"] = [p for _, p in plots]
    return paths


def _img(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _html(results: dict, checks, plots, samples) -> str:
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}"
             "pre{background:#f6f6f6;padding:6px}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>posttrain demo</title><style>{style}</style>"
             "</head><body><h1>posttrain demo report</h1>", f"<p>{html.escape(_intro(results))}</p>",
             "<h2>Claims checked</h2>", _html_table(checks),
             "<h2>Gold metrics per stage (held-out)</h2>", _html_table(metrics_table(results)),
             "<ul>" + "".join(f"<li>{html.escape(d).replace('**', '')}</li>" for d in DEFINITIONS) + "</ul>",
             "<h2>Proxy vs gold after SFT (reward hacking check)</h2>", _html_table(proxy_vs_gold(results)),
             "<h2>Reward model (held-out preference pairs)</h2>", _html_table(_rm_rows(results)),
             "<h2>Stages</h2>", _html_table(stage_table(results)),
             f"<p>{html.escape(grpo_signal(results) or '')}</p>", "<h2>Plots</h2>"]
    parts += [f"<h3>{html.escape(t)}</h3><img src='{_img(p)}' alt='{html.escape(t)}'>" for t, p in plots]
    parts.append("<h2>Sample completions (greedy)</h2>")
    parts += [f"<p><b>{html.escape(n)}</b></p><pre>{html.escape(p)}</pre><p>→</p><pre>{html.escape(c)}</pre>"
              for n, p, c in samples]
    return "\n".join(parts) + "</body></html>\n"
