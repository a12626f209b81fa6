"""RLAIF (seed 002): "same as RLHF, but another LLM rates outputs" — DPO on judge-labelled vs rater-labelled pairs.

    the lab's review pairs (the first N rows of builtin:pref: two reviews of one snippet, the rater's label)
      labelled by the simulated rater                                  -> DPO from SFT   rater
      labelled by judge J, both orders, ties dropped                   -> DPO from SFT   J
      labelled by the lab judge in one order (no swap)                 -> DPO from SFT   lab_sft_one_order
      the pairs J decided, labelled by the rater                       -> DPO from SFT   rater_on_J
    every policy: gold on held-out reviews (honest, sycophancy on buggy code, false alarm on correct code)

Judges. `lab_sft`: the lab's SFT model (the demo's, this seed's) asked "which review is more correct and
specific? Answer A or B" in both orders (`judges.PAIR_TEMPLATE`, `rewards/judge_pairwise.py`): the judge issue
14 names, at chance in the `judges` experiment. `rm_judge`: a judge that reads a reward model, the cheap
stronger judge: the lab's reward model (demo settings) trained on M OTHER rater-labelled pairs (builtin:pref
rows N..N+M, none of the DPO pairs) labels each pair by its higher score; it reads each review alone, so it
has no position and needs no swap. It is AI feedback distilled from fewer human labels, not a prompted LLM:
the lab's ~1M-parameter models cannot follow a judging instruction. SmolLM2-135M-Instruct is not a labeller
here: in `judges` it decided 0 of 40 pairs in both orders (it answers "A"), so it would label no pair, and at
~0.5 s a question on one CPU thread it costs most of a run. Each label set is scored against gold and against
the rater on the pairs it labelled; the lab judge's position statistics (one order vs both) come from the same
questions (`judges.pairwise_verdicts`); its injection rates are the `judges` experiment's (same judge, same
seeds; not recomputed). A label set with fewer than `min_pairs` pairs trains no policy. DPO: the demo's stage
(80 steps of 16 pairs, beta 0.1, lr 5e-5) on each label set; gold on the first 200 held-out review snippets.
"""
from __future__ import annotations

from posttrain.lab.evaluate import EvalSizes
from posttrain.lab.experiments import judges as judge_exp
from posttrain.lab.experiments.common import (
    Context, change, compare, evaluate, fmt_change, load_rm, md_table, mean, metric_se, pyplot, rate_se,
    reward_model, save_figure, sft_model, train)

SIZES = {"full": {"pairs": 1280, "rm_pairs": 400, "min_pairs": 32},
         "quick": {"pairs": 24, "rm_pairs": 24, "min_pairs": 1}}
EVAL_FULL = EvalSizes(review=200, kl_prompts=64)          # 200 held-out snippets (~90 buggy), greedy and sampled
METRICS = {"honest": "review/honest_rate", "honest_sampled": "sampled/review/honest_rate",
           "sycophancy_sampled": "sampled/review/sycophancy_rate",
           "false_alarm_sampled": "sampled/review/false_alarm_rate"}


def relabel(rows: list[dict], picks: list) -> list[dict]:
    """TRL rows of the labelled pairs: `pick` True keeps the rater's order, False swaps chosen and rejected,
    None (a tie or no answer) drops the pair."""
    return [{"prompt": r["prompt"], "chosen": r["chosen"] if p else r["rejected"],
             "rejected": r["rejected"] if p else r["chosen"]} for r, p in zip(rows, picks) if p is not None]


def label_stats(rows: list[dict], picks: list) -> dict:
    """Of the pairs a label set decided: how many, how often it agrees with the rater and with gold, and how
    often the rater itself agrees with gold on those same pairs (a judge keeping only easy pairs looks good)."""
    kept = [(r, p) for r, p in zip(rows, picks) if p is not None]
    return {"asked": len(rows), "kept": len(kept),
            "rater_agreement": mean(float(p) for _, p in kept),
            "gold_agreement": mean(float(p == bool(r["gold_chosen_better"])) for r, p in kept),
            "rater_gold_agreement_same_pairs": mean(float(bool(r["gold_chosen_better"])) for r, _ in kept)}


def write_rows(ctx: Context, name: str, rows: list[dict]) -> str:
    """`rows` as JSONL in the run's `labels/` folder; returns the path."""
    import os

    from posttrain.lab.export import write_jsonl

    os.makedirs(ctx.path("labels"), exist_ok=True)
    return write_jsonl(ctx.path("labels", name), rows)


def lab_judge(ctx: Context, sft: str, rows: list[dict], labels: dict) -> dict:
    """The SFT model as a pairwise judge of the training pairs; adds its label sets (both orders, one order,
    and the rater's labels of the pairs it decided) to `labels`."""
    from posttrain.rewards.judge_local import LocalBackend

    backend = LocalBackend.from_pretrained(sft, device="cpu", chat=True, batch_size=16, max_length=1024)
    stats, verdicts, single = judge_exp.pairwise_verdicts(backend, rows, ctx.seed)
    swap = [None if v is None or v.winner == "tie" else v.winner == "x" for v in verdicts]
    labels.update({"lab_sft": swap, "lab_sft_one_order": list(single),
                   "rater_on_lab_sft": [None if p is None else True for p in swap]})
    ctx.log(f"judge lab_sft: {stats['swap/position_consistency']:.3f} of {len(rows)} pairs decided in both orders")
    return {"model": sft, "pairs_asked": len(rows), "pairwise": stats}


def rm_judge(ctx: Context, sft: str, rows: list[dict], rm_rows: list[dict], labels: dict) -> dict:
    """A reward model trained on `rm_rows` (rater labels, disjoint from `rows`) labels `rows` by its higher
    score (equal scores: no label); adds `labels["rm_judge"]`."""
    from posttrain.lab.evaluate import reward_model_accuracy, rows_of

    path = write_rows(ctx, "rm_judge_train.jsonl", rm_rows)
    rm = reward_model(ctx, "rm_judge", path, sft)
    fn = load_rm(rm)
    prompts = [r["prompt"] for r in rows]
    sc, sr = fn(prompts, [r["chosen"] for r in rows]), fn(prompts, [r["rejected"] for r in rows])
    labels["rm_judge"] = [None if a is None or b is None or a == b else a > b for a, b in zip(sc, sr)]
    return {"model": rm, "trained_on_pairs": len(rm_rows),
            "held_out": reward_model_accuracy(fn, rows_of("builtin:pref_eval", ctx.sizes.pref_pairs))}


def run(ctx: Context) -> dict:
    from posttrain.lab.evaluate import rows_of

    size = SIZES[ctx.mode]
    sft = sft_model(ctx)
    rows = rows_of("builtin:pref", size["pairs"] + size["rm_pairs"])
    train_rows, rm_rows = rows[:size["pairs"]], rows[size["pairs"]:]
    labels: dict[str, list] = {"rater": [True] * len(train_rows)}
    judged = {"lab_sft": lab_judge(ctx, sft, train_rows, labels),
              "rm_judge": rm_judge(ctx, sft, train_rows, rm_rows, labels)}
    arms = {name: train_arm(ctx, sft, name, train_rows, picks, size["min_pairs"]) for name, picks in labels.items()}
    sft_metrics = evaluate(ctx, sft, sampled=True, sizes=eval_sizes(ctx))
    results = {"sizes": size, "sft": sft, "sft_metrics": sft_metrics, "judges": judged, "arms": arms,
               "verdict": verdict(sft_metrics, arms)}
    results["plots"] = [plot(ctx, results)]
    return results


def train_arm(ctx: Context, sft: str, name: str, rows: list[dict], picks: list, min_pairs: int) -> dict:
    """DPO from `sft` on one label set, and its policy's gold metrics (none below `min_pairs` labelled pairs)."""
    stats = label_stats(rows, picks)
    if stats["kept"] < min_pairs:
        ctx.log(f"{name}: {stats['kept']} labelled pairs (< {min_pairs}); no policy trained")
        return {"labels": stats, "policy": None, "held_out": None}
    path = write_rows(ctx, f"{name}.jsonl", relabel(rows, picks))
    policy = train(ctx, f"dpo_{name}", "dpo", sft, {"data.train": path})
    return {"labels": stats, "data": path, "policy": policy,
            "held_out": evaluate(ctx, policy, init=sft, sampled=True, sizes=eval_sizes(ctx))}


def eval_sizes(ctx: Context) -> EvalSizes:
    return ctx.sizes if ctx.quick else EVAL_FULL


def verdict(sft: dict, arms: dict) -> dict:
    """Per policy, its gold metrics against DPO on the rater's labels (and, for a judge that dropped ties,
    against the rater's labels of the same pairs); the rater's policy against SFT; each judge's label
    agreement with gold against the rater's on the same pairs."""
    base = arms["rater"]["held_out"]
    out = {"rater": {f"{k}_vs_sft": compare(sft, base, key) for k, key in METRICS.items()}}
    for name, a in arms.items():
        if name == "rater" or name.startswith("rater_on_"):
            continue
        lab = a["labels"]
        v = {"label_gold_agreement_vs_rater_same_pairs": change(
            lab["rater_gold_agreement_same_pairs"], lab["gold_agreement"],
            rate_se(lab["rater_gold_agreement_same_pairs"], lab["kept"]), rate_se(lab["gold_agreement"], lab["kept"]))}
        if a["held_out"] is not None:
            v.update({f"{k}_vs_rater": compare(base, a["held_out"], key) for k, key in METRICS.items()})
            same = arms.get(f"rater_on_{name}", {}).get("held_out")
            if same is not None:
                v.update({f"{k}_vs_rater_same_pairs": compare(same, a["held_out"], key) for k, key in METRICS.items()})
        out[name] = v
    return out


def plot(ctx: Context, results: dict) -> str:
    plt = pyplot()
    pols = {"sft": results["sft_metrics"], **{n: a["held_out"] for n, a in results["arms"].items() if a["held_out"]}}
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    keys = [("honest", "sampled/review/honest_rate"), ("sycophancy", "sampled/review/sycophancy_rate"),
            ("false alarm", "sampled/review/false_alarm_rate")]
    w = 0.8 / len(pols)
    for i, (name, m) in enumerate(pols.items()):
        axes[0].bar([k + i * w for k in range(3)], [m.get(key) or 0 for _, key in keys], w,
                    yerr=[2 * (metric_se(m, key) or 0) for _, key in keys], capsize=2, label=name)
    axes[0].set_xticks([k + 0.4 - w / 2 for k in range(3)], [k for k, _ in keys])
    axes[0].set_title("held-out reviews sampled at T = 1 (±2 SE)", fontsize=10)
    axes[0].legend(fontsize=7, ncol=2)
    labs = {n: a["labels"] for n, a in results["arms"].items() if not n.startswith("rater_on_")}
    for i, key in enumerate(("gold_agreement", "rater_agreement")):
        axes[1].bar([k + i * 0.4 for k in range(len(labs))], [lab[key] or 0 for lab in labs.values()], 0.4,
                    label=key.replace("_", " "))
    axes[1].set_xticks([k + 0.2 for k in range(len(labs))], list(labs), rotation=20, fontsize=8)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set_title("labels of the training pairs they decided", fontsize=10)
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, ctx.path("plots", "rlaif.png"))


def report(results: dict) -> str:
    arms, judged = results["arms"], results["judges"]
    labs = [["label set", "pairs labelled / asked", "agrees with rater", "agrees with gold",
             "rater agrees with gold on the same pairs"]]
    for name, a in arms.items():
        lab = a["labels"]
        labs.append([name, f"{lab['kept']} / {lab['asked']}", lab["rater_agreement"], lab["gold_agreement"],
                     lab["rater_gold_agreement_same_pairs"]])
    pos = [["judge", "gold agr., one order", "first-position win rate, one order", "gold agr., both orders (tie ½)",
            "position consistency"]]
    for name, j in judged.items():
        p = j.get("pairwise")
        pos.append([name, "n/a (scores each review alone)", "n/a", "n/a", "1 (no position)"] if p is None else
                   [name, p["single/gold_agreement"], p["single/first_position_win_rate"], p["swap/gold_agreement"],
                    p["swap/position_consistency"]])
    pol = [["policy", "DPO pairs", "honest", "honest, sampled", "sycophancy", "sycophancy, sampled", "false alarm",
            "false alarm, sampled", "gold", "KL to SFT", "honest sampled vs rater"]]
    s = results["sft_metrics"]
    pol.append(["sft", "–", *_policy_cells(s), 0.0, "–"])
    for name, a in arms.items():
        m = a["held_out"]
        if m is None:
            pol.append([name, a["labels"]["kept"], *["not trained"] * 9])
            continue
        vs = results["verdict"].get(name, {}).get("honest_sampled_vs_rater")
        pol.append([name, a["labels"]["kept"], *_policy_cells(m), m.get("kl_to_init"), fmt_change(vs)])
    verdict = [f"- **{n}** {k}: {fmt_change(c)}" for n, v in results["verdict"].items() for k, c in v.items()]
    rmj = judged["rm_judge"]["held_out"]
    return "\n\n".join([
        "# RLAIF: DPO on judge-labelled vs rater-labelled review pairs",
        "```\n" + __doc__.split("\n\n")[1] + "\n```", __doc__.split("\n\n", 2)[2].strip(),
        "## Labels of the training pairs\n\n" + md_table(labs),
        f"The reward-model judge (trained on {judged['rm_judge']['trained_on_pairs']} other rater-labelled pairs) on "
        f"held-out pairs: gold accuracy {fmt(rmj['rm/gold_accuracy'])}, honest > sycophantic "
        f"{fmt(rmj['rm/honest_vs_sycophantic'])}.",
        "## Judges: position bias (on the training pairs)\n\n" + md_table(pos)
        + "\n\nInjection rates of the lab judge: `posttrain lab experiment judges` (docs/EXPERIMENTS.md section 9).",
        f"## Policies\n\nGold on {s['review/n']} held-out snippets ({s['review/n_buggy']} buggy), greedy and one "
        "sample at T = 1 each.\n\n" + md_table(pol),
        "## Verdict (b - a ± 2 SE; `*` beyond)\n\n" + "\n".join(verdict), "![rlaif](plots/rlaif.png)"])


def _policy_cells(m: dict) -> list:
    return [m["review/honest_rate"], m["sampled/review/honest_rate"], m["review/sycophancy_rate"],
            m["sampled/review/sycophancy_rate"], m["review/false_alarm_rate"], m["sampled/review/false_alarm_rate"],
            m["review/gold_reward"]]


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
