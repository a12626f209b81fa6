"""Length bias: does a rater's taste for long answers pass through the reward model into the policy?

    rater (length_bias 0)    -> preferences -> reward model A -> PPO A ;  preferences -> DPO A
    rater (length_bias LB)   -> preferences -> reward model B -> PPO B ;  preferences -> DPO B

Both raters judge the SAME candidate pairs of the same world (only the labels differ); the length-biased one
adds `LB * min(words / 20, 2)` to a review's utility before its Bradley-Terry choice. Measured: how often each
rater chose the longer review, each reward model's correlation of reward with response length on the same
held-out responses (`eval.json` of the trainer: Pearson and Spearman over every held-out response), and the
mean length (words) and gold score of greedy held-out reviews of SFT and of the four policies.
The claim tested (seed 001): "a reward model that slightly favours longer responses will train a model to add
padding. Not dangerous — but not what users actually want."
"""
from __future__ import annotations

import json
import os

from posttrain.lab.builtin import resolve_data
from posttrain.lab.experiments.common import (
    REVIEW_PPO, Context, change, compare, evaluate, fmt, fmt_change, md_table, pyplot, rater_preferences,
    read_jsonl, review_ppo, reward_model, save_figure, sft_model, train)

LENGTH_BIAS = 1.0
DPO = {"max_steps": 80}
WORDS_SE = "length_se"


def chosen_longer(pref_path: str) -> float:
    """Fraction of preference rows whose chosen response has more words than the rejected one."""
    rows = read_jsonl(pref_path)
    words = [(len(r["chosen"][-1]["content"].split()), len(r["rejected"][-1]["content"].split())) for r in rows]
    return sum(c > j for c, j in words) / len(words)


def rm_length_stats(rm_final: str) -> dict:
    """The reward trainer's held-out metrics (`OUT/<rm>/eval.json`): accuracy and reward~length correlations."""
    with open(os.path.join(os.path.dirname(rm_final), "eval.json"), encoding="utf-8") as f:
        ev = json.load(f)
    return {k: ev.get(k) for k in ("accuracy", "length_pearson", "length_spearman", "chosen_longer", "pairs")}


def run(ctx: Context) -> dict:
    sft = sft_model(ctx)
    prefs = {"unbiased": "builtin:pref", "long": rater_preferences(ctx, "world_long", length_bias=LENGTH_BIAS)}
    rms = {"unbiased": reward_model(ctx, "rm", prefs["unbiased"], sft, shared=True),
           "long": reward_model(ctx, "rm_long", prefs["long"], sft)}
    policies = {"sft": sft}
    for arm in ("unbiased", "long"):
        policies[f"ppo_{arm}"], _ = review_ppo(ctx, f"ppo_{arm}", sft, rms[arm], shared=arm == "unbiased")
        policies[f"dpo_{arm}"] = train(ctx, f"dpo_{arm}", "dpo", sft, {**DPO, "data.train": prefs[arm]})
    held_out = {}
    for name, path in policies.items():
        m = evaluate(ctx, path, init=None if name == "sft" else sft, sampled=True)
        for pre in ("", "sampled/"):
            m[pre + WORDS_SE] = (m[f"{pre}review/length_sd"] or 0.0) / max(m["review/n"], 1) ** 0.5
        held_out[name] = m
    raters = {arm: chosen_longer(resolve_data(p)) for arm, p in prefs.items()}
    results = {"length_bias": LENGTH_BIAS, "ppo": REVIEW_PPO, "dpo": DPO, "rater_chose_longer": raters,
               "reward_models": {arm: {"path": p, **rm_length_stats(p)} for arm, p in rms.items()},
               "held_out": held_out, "verdict": verdict(held_out)}
    results["plots"] = [plot(ctx, results)]
    return results


def verdict(held_out: dict) -> dict:
    """Per algorithm: the biased arm's mean length (greedy and sampled) and gold minus the unbiased arm's, with
    2-SE noise."""
    out = {}
    for algo in ("ppo", "dpo"):
        a, b = held_out[f"{algo}_unbiased"], held_out[f"{algo}_long"]
        out[algo] = {f"{pre or 'greedy/'}length": change(a[f"{pre}review/mean_length"], b[f"{pre}review/mean_length"],
                                                         a[pre + WORDS_SE], b[pre + WORDS_SE])
                     for pre in ("", "sampled/")}
        out[algo]["gold"] = compare(a, b, "review/gold_reward")
    return out


def plot(ctx: Context, results: dict) -> str:
    plt = pyplot()
    h = results["held_out"]
    names = list(h)
    colors = ["grey" if n == "sft" else ("tab:orange" if n.endswith("long") else "tab:blue") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    w, xs = 0.4, range(len(names))
    for off, pre, hatch in ((-w / 2, "", None), (w / 2, "sampled/", "//")):
        axes[0].bar([x + off for x in xs], [h[n][f"{pre}review/mean_length"] for n in names], w,
                    yerr=[2 * h[n][pre + WORDS_SE] for n in names], color=colors, hatch=hatch, capsize=3,
                    edgecolor="white")
    axes[0].set_xticks(list(xs), names)
    axes[0].set_title("held-out review words, greedy | sampled (hatched), ±2 SE", fontsize=10)
    axes[1].bar(names, [h[n]["review/gold_reward"] for n in names], color=colors)
    axes[1].set_title("held-out gold review score")
    rms = results["reward_models"]
    axes[2].bar(list(rms), [rms[a]["length_pearson"] or 0.0 for a in rms], color=["tab:blue", "tab:orange"])
    axes[2].set_title("reward model: Pearson(reward, length)")
    for ax in axes[:2]:
        ax.tick_params(axis="x", rotation=30)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"rater length_bias 0 (blue) vs {results['length_bias']:g} (orange)")
    return save_figure(fig, ctx.path("plots", "length_bias.png"))


def report(results: dict) -> str:
    rm = results["reward_models"]
    rm_rows = [["rater", "chose the longer review", "RM held-out accuracy", "RM Pearson(reward, length)",
                "RM Spearman(reward, length)"]]
    for arm in ("unbiased", "long"):
        rm_rows.append([f"length_bias {0 if arm == 'unbiased' else results['length_bias']:g}",
                        results["rater_chose_longer"][arm], rm[arm]["accuracy"], rm[arm]["length_pearson"],
                        rm[arm]["length_spearman"]])
    pol = [["policy", "words ± SE (greedy)", "words ± SE (sampled)", "gold", "honest", "sycophancy", "false alarm",
            "KL to SFT"]]
    for name, m in results["held_out"].items():
        pol.append([name, f"{fmt(m['review/mean_length'], 1)} ± {fmt(m[WORDS_SE], 1)}",
                    f"{fmt(m['sampled/review/mean_length'], 1)} ± {fmt(m['sampled/' + WORDS_SE], 1)}",
                    m["review/gold_reward"], m["review/honest_rate"], m["review/sycophancy_rate"],
                    m["review/false_alarm_rate"], m.get("kl_to_init", 0.0)])
    v = results["verdict"]
    lines = [f"- **{algo.upper()}**: biased minus unbiased arm: length {fmt_change(v[algo]['greedy/length'], 2)} "
             f"words greedy, {fmt_change(v[algo]['sampled/length'], 2)} sampled; gold {fmt_change(v[algo]['gold'])}"
             for algo in v]
    return "\n\n".join([
        "# Length bias: from the rater, through the reward model, into the policy",
        "```\n" + __doc__.split("\n\n")[1] + "\n```",
        __doc__.split("\n\n", 2)[2].strip(),
        "## Raters and reward models (held-out responses of `builtin:pref_eval`, the same for both)\n\n"
        + md_table(rm_rows),
        "## Policies (reviews of the held-out code: greedy, and one sample at T = 1 per snippet)\n\n"
        + md_table(pol),
        "## Verdict\n\n" + "\n".join(lines) + "\n\n± is two standard errors of the difference.",
        "![length bias](plots/length_bias.png)"])
