"""Reward model (seed 001): what a reward model learns from comparisons, and how many it needs.

    the unbiased rater's review pairs (builtin:pref)   -> reward model on the first n pairs, n = 100 ... all
    the same rater ranks K reviews of a snippet        -> reward model on rankings, K = 4, 6, 9,
                                                          at the rater effort of the n = E / 2 pairs
    each reward model: held-out pairs (builtin:pref_eval) and held-out buggy code (builtin:review_eval)

Every reward model starts from the lab's SFT model with the demo's settings (lr 5e-4, 16 pairs a step) for
max(120, one epoch) steps: 120 (the demo's) up to 1920 pairs, one epoch beyond. Rater effort is the number of
reviews a rater reads: a pair costs 2, a ranking of K costs K, so E reviews buy E / 2 pairs or E / K rankings.
A ranking also yields K(K-1)/2 implied pairs (all trained on, each weighted 2 / (K(K-1)) so a ranking counts
as one example) and costs about log2(K!) comparisons to sort; both are reported beside. The trainer encodes
each implied pair's two reviews (a ranking of K costs K(K-1) sequences), so a ranking step holds
round(16 / (K(K-1)/2)) rankings (at least one): about the 16 pairs of a pair step (K = 4: 3, K = 6 and 9:
1). K > 4 repeats styles (the world has 4: honest, vague, sycophantic, false alarm) with fresh texts.
Measured per reward model: held-out accuracy against gold and against the rater (the label it learns),
expected calibration error of sigma(r_chosen - r_rejected) against the rater's labels, and the correlation of
reward with length (`diagnostics/preference_eval.py`, the trainer's `eval.json`). Scores: the reward model
trained on all pairs scores the honest, vague, sycophantic and false-alarm review of each held-out buggy
snippet; each score is shown sigma-scaled as sigma(r - m), m the mean score of that snippet's four reviews: the Bradley-Terry probability that the review beats an average
review of the same code (seed 001 quotes honest 0.94, sycophantic 0.24).
"""
from __future__ import annotations

import json
import math
import os
import random

from posttrain.lab.experiments.common import (
    Context, change, fmt, fmt_change, load_rm, md_table, mean, pyplot, rate_se, review_tasks, save_figure, sft_model,
    std_error, train)

SIZES = {"full": {"curve": [100, 300, 1000, 4000], "effort": 600, "ks": [4, 6, 9], "snippets": 186},
         "quick": {"curve": [8, 16], "effort": 16, "ks": [5], "snippets": 3}}
STYLE_ORDER = ("honest", "vague", "sycophantic", "false_alarm")


def rm_settings(n_examples: int, batch: int = 16) -> dict:
    """max(120, one epoch) steps of `batch` rows, held-out metrics on builtin:pref_eval."""
    return {"max_steps": max(120, math.ceil(n_examples / batch)), "batch_size": batch,
            "data.eval": "builtin:pref_eval"}


def rankings(n: int, k: int, seed: int = 0) -> list[dict]:
    """`n` rankings of `k` distinct reviews of the world's training snippets, ranked by the unbiased rater of
    builtin:pref (`SimulatedRater.ranking_row`): every style once, then styles drawn at random."""
    from posttrain.lab.export import DEFAULT_RATER_TEMPERATURE
    from posttrain.lab.raters import SimulatedRater
    from posttrain.lab.review_styles import STYLES, review_response

    tasks = review_tasks("train")
    rater = SimulatedRater(temperature=DEFAULT_RATER_TEMPERATURE, seed=seed)
    rng = random.Random(f"rankings-{k}-{seed}")
    rows = []
    for _ in range(n):
        task = tasks[rng.randrange(len(tasks))]
        texts: dict[str, str] = {}
        for i in range(20 * k):
            if len(texts) == k:
                break
            style = STYLES[i] if i < len(STYLES) else rng.choice(STYLES)
            texts.setdefault(review_response(task, style, rng), style)
        row = rater.ranking_row(task, list(texts))
        row["styles"] = [texts[r[0]["content"]] for r in row["responses"]]
        rows.append(row)
    return rows


def write_rows(ctx: Context, name: str, rows: list[dict]) -> str:
    from posttrain.lab.export import write_jsonl

    os.makedirs(ctx.path("data"), exist_ok=True)
    return write_jsonl(ctx.path("data", name), rows)


def measure(ctx: Context, final: str, data: dict) -> dict:
    """The trainer's held-out metrics (`eval.json`) and gold accuracy (`evaluate.reward_model_accuracy`)."""
    from posttrain.lab.evaluate import reward_model_accuracy, rows_of

    with open(os.path.join(os.path.dirname(final), "eval.json"), encoding="utf-8") as f:
        ev = json.load(f)
    gold = reward_model_accuracy(load_rm(final), rows_of("builtin:pref_eval", ctx.sizes.pref_pairs))
    return {**data, "model": final, "rater_accuracy": ev["accuracy"], "ece": ev["ece"],
            "length_spearman": ev["length_spearman"], "length_pearson": ev["length_pearson"], "margin": ev["margin"],
            "gold_accuracy": gold["rm/gold_accuracy"], "honest_vs_sycophantic": gold["rm/honest_vs_sycophantic"],
            "eval_pairs": gold["rm/n_pairs"]}


def style_scores(reward_fn, n: int) -> dict:
    """Scores of each style's review of the first `n` held-out buggy snippets: raw and sigma(r - m) (module
    docstring), mean and standard deviation per style; `honest_over_sycophantic`: share of snippets whose honest
    review outscores the sycophantic one, and the mean Bradley-Terry P(honest beats sycophantic)."""
    from posttrain.lab.review import review_response

    rng = random.Random(0)
    tasks = [t for t in review_tasks("eval") if t.buggy][:n]
    prompts = [t.prompt_messages() for t in tasks]
    raw = {s: reward_fn(prompts, [review_response(t, s, rng) for t in tasks]) for s in STYLE_ORDER}
    centre = [mean(raw[s][i] for s in STYLE_ORDER) for i in range(len(tasks))]
    sig = {s: [1 / (1 + math.exp(-(r - c))) for r, c in zip(raw[s], centre)] for s in STYLE_ORDER}
    out = {s: {"raw": mean(raw[s]), "sigma": mean(sig[s]), "sigma_sd": _sd(sig[s]), "sigma_se": std_error(sig[s])}
           for s in STYLE_ORDER}
    h, y = raw["honest"], raw["sycophantic"]
    out["honest_over_sycophantic"] = mean(float(a > b) for a, b in zip(h, y))
    out["p_honest_beats_sycophantic"] = mean(1 / (1 + math.exp(-(a - b))) for a, b in zip(h, y))
    out["snippets"] = len(tasks)
    return out


def _sd(xs: list[float]) -> float | None:
    se = std_error(xs)
    return None if se is None else se * math.sqrt(len(xs))


def run(ctx: Context) -> dict:
    from posttrain.lab.evaluate import rows_of

    size = SIZES[ctx.mode]
    sft = sft_model(ctx)
    pairs = rows_of("builtin:pref")
    curve = []
    for n in size["curve"]:
        n = min(n, len(pairs))
        path = write_rows(ctx, f"pairs-{n}.jsonl", pairs[:n])
        final = train(ctx, f"rm_pairs_{n}", "rm", sft, {"data.train": path, **rm_settings(n)})
        curve.append(measure(ctx, final, {"pairs": n, "effort": 2 * n, "implied_pairs": n}))
    ranked = []
    for k in size["ks"]:
        n = max(1, size["effort"] // k)
        batch = max(1, round(16 / (k * (k - 1) / 2)))      # about the 16 pairs (32 sequences) of a pair step
        path = write_rows(ctx, f"rank-{k}x{n}.jsonl", rankings(n, k))
        final = train(ctx, f"rm_rank_{k}", "rm", sft, {"data.train": path, **rm_settings(n, batch)})
        ranked.append(measure(ctx, final, {"k": k, "rankings": n, "effort": k * n,
                                           "implied_pairs": n * k * (k - 1) // 2,
                                           "sort_comparisons": n * math.ceil(math.log2(math.factorial(k)))}))
    scores = style_scores(load_rm(curve[-1]["model"]), size["snippets"])
    results = {"sizes": size, "sft": sft, "curve": curve, "rankings": ranked, "scores": scores}
    results["verdict"] = verdict(results)
    results["plots"] = [plot(ctx, results)]
    return results


def verdict(results: dict) -> dict:
    """Honest minus sycophantic sigma-scaled score; gold accuracy from the smallest to the largest pair set;
    each K-wise ranking model's gold accuracy against the pair model at the same effort."""
    sc, curve = results["scores"], results["curve"]
    n_eval = curve[-1]["eval_pairs"]

    def acc(m):
        return m["gold_accuracy"], rate_se(m["gold_accuracy"], n_eval)

    (a, se_a), (b, se_b) = acc(curve[0]), acc(curve[-1])
    out = {"scores": {"sigma_honest_minus_sycophantic": change(
        sc["sycophantic"]["sigma"], sc["honest"]["sigma"], sc["sycophantic"]["sigma_se"], sc["honest"]["sigma_se"])},
        "curve": {f"gold_accuracy_{curve[-1]['pairs']}_minus_{curve[0]['pairs']}": change(a, b, se_a, se_b)}}
    same = next((m for m in curve if m["effort"] == results["sizes"]["effort"]), None)
    if same is not None:
        out["rankings_vs_pairs_same_effort"] = {
            f"K{m['k']}_gold_accuracy_minus_pairs": change(same["gold_accuracy"], m["gold_accuracy"], acc(same)[1],
                                                           acc(m)[1]) for m in results["rankings"]}
    return out


def plot(ctx: Context, results: dict) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    curve, ranked, sc = results["curve"], results["rankings"], results["scores"]
    xs = [m["pairs"] for m in curve]
    for key, label in (("gold_accuracy", "vs gold"), ("rater_accuracy", "vs rater")):
        axes[0].plot(xs, [m[key] for m in curve], marker="o", label=f"pairs, {label}")
        axes[0].plot([m["effort"] / 2 for m in ranked], [m[key] for m in ranked], ls="", marker="s",
                     label=f"K-wise rankings at equal effort, {label}")
    for m in ranked:
        axes[0].annotate(f"K={m['k']}", (m["effort"] / 2, m["gold_accuracy"]), fontsize=7)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("comparisons (pairs; rankings: at the same reviews read)")
    axes[0].set_title("held-out accuracy", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].plot(xs, [m["ece"] for m in curve], marker="o", label="ECE (vs rater)")
    axes[1].plot(xs, [m["length_spearman"] for m in curve], marker="o", label="reward~length Spearman")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("pairs trained on")
    axes[1].set_title("calibration and length along the curve", fontsize=10)
    axes[1].legend(fontsize=8)
    axes[2].bar(STYLE_ORDER, [sc[s]["sigma"] for s in STYLE_ORDER],
                yerr=[sc[s]["sigma_sd"] or 0 for s in STYLE_ORDER], capsize=3, color="tab:blue")
    axes[2].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[2].set_title("sigma(r - snippet mean), held-out buggy code (± 1 sd)", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, ctx.path("plots", "reward_model.png"))


def report(results: dict) -> str:
    sc = results["scores"]
    scores = [["review of buggy code", "raw score", "sigma-scaled (mean)", "sd"]] + [
        [s, sc[s]["raw"], sc[s]["sigma"], sc[s]["sigma_sd"]] for s in STYLE_ORDER]
    head = ["reward model", "reviews read (effort)", "pairs (implied)", "gold accuracy", "rater accuracy", "ECE",
            "reward~length Spearman", "honest > sycophantic"]
    rows = [head] + [[f"{m['pairs']} pairs", m["effort"], m["implied_pairs"], *_cells(m)] for m in results["curve"]]
    rows += [[f"{m['rankings']} rankings of K={m['k']} (~{m['sort_comparisons']} sort comparisons)", m["effort"],
              m["implied_pairs"], *_cells(m)] for m in results["rankings"]]
    verdict = [f"- **{g}** {k}: {fmt_change(c)}" for g, v in results["verdict"].items() for k, c in v.items()]
    return "\n\n".join([
        "# Reward model: scores by review style, learning curve, pairs vs K-wise rankings",
        "```\n" + __doc__.split("\n\n")[1] + "\n```", __doc__.split("\n\n", 2)[2].strip(),
        f"## Scores of the reward model trained on all pairs ({sc['snippets']} held-out buggy snippets)\n\n"
        + md_table(scores) + f"\n\nHonest outscores sycophantic on {fmt(sc['honest_over_sycophantic'])} of snippets; "
        f"mean Bradley-Terry P(honest beats sycophantic) {fmt(sc['p_honest_beats_sycophantic'])}.",
        f"## Accuracy, calibration and length (held-out, {results['curve'][-1]['eval_pairs']} pairs)\n\n"
        + md_table(rows), "## Verdict (b - a ± 2 SE; `*` beyond)\n\n" + "\n".join(verdict),
        "![reward model](plots/reward_model.png)"])


def _cells(m: dict) -> list:
    return [m["gold_accuracy"], m["rater_accuracy"], m["ece"], m["length_spearman"], m["honest_vs_sycophantic"]]
