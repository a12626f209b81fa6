"""Reasoning from RL on verifiable rewards (seed 002): does RL lift a base model's arithmetic, does SFT -> GRPO
beat SFT, and does the chain of thought grow longer?

    builtin:small ── SFT on worked demonstrations ─────────── sft
                  │                                 └─ GRPO ─ sft_grpo      (plain prompt, exact-answer reward)
                  └─ GRPO, R1-Zero template ("Let's think step by step."), exact answer + format reward:
                        r1zero_grpo | r1zero_dr_grpo | r1zero_dapo   (the three token-loss aggregations)

Every arm starts from `builtin:small` (a 2.2M-parameter Llama pretrained on a web with worked, bare and wrong
arithmetic) and trains on the same prompts (`builtin:arith_train`, levels 1-2); the math reward is the library's
`math` reward on the final number. Measured at the end on held-out problems of levels 1, 2 and the harder
level 3: greedy accuracy, pass@k at T = 1, completion tokens of correct and wrong samples, the share that
shows work; during GRPO, every round's accuracy, completion length (correct and wrong apart) and greedy
held-out accuracy every 10 steps. `--real` adds GRPO from SmolLM2-135M-Instruct (`builtin:smollm2`, its own
chat template) on the same prompts, evaluated before and after.
Claims tested (seed 002): RL from the base model alone lifts accuracy (R1-Zero); SFT then RL beats SFT; the
chain of thought grows longer during RL because longer thinking earns more reward; Dr. GRPO: GRPO's per-sequence
length normalisation lets wrong answers grow longer.
"""
from __future__ import annotations

import os

from posttrain.lab.experiments.common import Context, change, fmt, fmt_change, md_table, pyplot, rate_se, save_figure
from posttrain.lab.experiments.math_stages import (
    FORMAT, GRPO_MATH, MATH, base_eval, eval_curve, evaluate_math, gradient_steps, grpo, quarter, rounds, sft)
from posttrain.lab.math_eval import PLAIN, R1_ZERO

AGGREGATIONS = {"grpo": {"loss_type": "grpo"}, "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": False},
                "dapo": {"loss_type": "dapo"}}
R1 = {"prompt_template": R1_ZERO, "rewards": [MATH, FORMAT]}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M-Instruct: ~16 s of one CPU core per step (16 samples of <= 96 tokens, then the update; measured
# over 10 steps) and ~100 s per greedy evaluation (3 x 50 problems): 60 steps + 2 evaluations ~ 20 min of one core,
# inside 30 min on an idle 2-core machine. T = 0.7: at T = 1 the 135M model's samples are mostly noise (0 of 64
# correct in a 4-step trial; 3 of 160 at T = 0.7).
REAL = {"gguf_file": GGUF, "prompt_template": None, "temperature": 0.7,
        "max_steps": 60, "batch_size": 16, "num_generations": 8, "learning_rate": 1e-5, "max_new_tokens": 96,
        "max_length": 256, "eval_steps": 0, "data.eval": None}
REAL_EVAL = {"n": 50, "k": 0, "max_new_tokens": 128}   # greedy only: a 135M model samples slowly on 2 cores
TEMPLATES = {"sft": PLAIN, "sft_grpo": PLAIN, **{f"r1zero_{a}": R1_ZERO for a in AGGREGATIONS}}
BASE = "small"          # builtin:small, unless --base or --quick


def run(ctx: Context) -> dict:
    arms = {"sft": sft(ctx, "sft", ctx.base, shared=True)}   # the same run as sft_vs_dft's SFT arm
    arms["sft_grpo"] = grpo(ctx, "sft_grpo", arms["sft"])
    for agg, settings in AGGREGATIONS.items():
        arms[f"r1zero_{agg}"] = grpo(ctx, f"r1zero_{agg}", ctx.base, {**R1, **settings})
    final = {"base_plain": base_eval(ctx, PLAIN), "base_r1zero": base_eval(ctx, R1_ZERO)}
    final.update({name: evaluate_math(ctx, path, TEMPLATES[name]) for name, path in arms.items()})
    training = {name: {"rounds": rounds(os.path.dirname(path)), "eval": eval_curve(os.path.dirname(path))}
                for name, path in arms.items() if name != "sft"}
    results = {"grpo": {k: v for k, v in GRPO_MATH.items() if k != "rewards"}, "final": final, "training": training}
    if ctx.options.get("real") and ctx.seed == 0:   # one seed: its budget is the whole experiment's
        results["real"] = real_arm(ctx)
    results["verdict"] = verdict(final, training)
    results["plots"] = [plot(ctx, results)]
    return results


def real_arm(ctx: Context) -> dict:
    """GRPO from SmolLM2-135M-Instruct with its chat template; held-out greedy accuracy before and after
    (`REAL_EVAL`). Run once per OUT and kept in `OUT/reasoning/real-<mode>.json` (reused unless --fresh).
    `train_s`, `eval_s` (the evaluation before training): wall seconds; `cpu_s`: the process's CPU seconds."""
    import json
    import time

    from posttrain.lab.builtin import resolve_model

    cached = ctx.exp_path(f"real-{ctx.mode}.json")
    if os.path.exists(cached) and not ctx.fresh:
        with open(cached, encoding="utf-8") as f:
            return json.load(f)
    try:
        path = resolve_model("smollm2")
    except FileNotFoundError as e:
        ctx.log(f"real-model arm skipped: {e}")
        return {"status": "unavailable", "reason": str(e)}
    t0, cpu0 = time.perf_counter(), time.process_time()
    before = evaluate_math(ctx, path, chat=True, gguf_file=GGUF, sizes=REAL_EVAL)
    eval_s = time.perf_counter() - t0
    after_path = grpo(ctx, "real_smollm2", path, REAL)
    run_dir = os.path.dirname(after_path)
    out = {"status": "ran", "seed": ctx.seed, "before": before,
           "after": evaluate_math(ctx, after_path, chat=True, sizes=REAL_EVAL), "rounds": rounds(run_dir),
           "gradient_steps": gradient_steps(run_dir), "train_s": ctx.timings.get("real_smollm2"),
           "eval_s": round(eval_s, 1), "cpu_s": round(time.process_time() - cpu0, 1),
           "settings": {k: v for k, v in REAL.items() if k != "data.eval"}}
    with open(cached, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    return out


def _acc_change(a: dict, b: dict, level: str) -> dict:
    n = a[level]["n"] if level != "pooled" else a["pooled"]["n"]
    return change(a[level]["greedy"], b[level]["greedy"], rate_se(a[level]["greedy"], n), rate_se(b[level]["greedy"], n))


def _quarters(per_step: list[dict], key: str) -> dict:
    first, last = quarter(per_step, key, False), quarter(per_step, key, True)
    return change(first["mean"], last["mean"], first["se"], last["se"])


def verdict(final: dict, training: dict) -> dict:
    """Greedy-accuracy changes (pooled levels 1-2, and level 3) with 2-SE evaluation noise; per GRPO arm, first
    vs last quarter of training: accuracy of the samples and completion length of all, correct and wrong ones."""
    out = {}
    for label, a, b in (("rl_from_base", "base_r1zero", "r1zero_dapo"), ("sft_grpo_vs_sft", "sft", "sft_grpo"),
                        ("sft_vs_base", "base_plain", "sft"), ("sft_grpo_vs_rl_from_base", "r1zero_dapo", "sft_grpo")):
        out[label] = {lv: _acc_change(final[a], final[b], lv) for lv in ("pooled", "L3")}
    for name, t in training.items():
        out[f"during/{name}"] = {key: _quarters(t["rounds"], key)
                                 for key in ("accuracy", "length", "len_correct", "len_wrong", "shows_work")}
    return out


def plot(ctx: Context, results: dict) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    final = results["final"]
    names = list(final)
    for i, lv in enumerate(("L1", "L2", "L3")):
        axes[0].bar([x + (i - 1) * 0.27 for x in range(len(names))], [final[n][lv]["greedy"] for n in names], 0.27,
                    label=f"level {lv[1]}")
    axes[0].set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    axes[0].set_title("held-out greedy accuracy")
    axes[0].legend(fontsize=8)
    for name, t in results["training"].items():
        steps = [r["step"] for r in t["rounds"]]
        axes[1].plot(steps, [r["accuracy"] for r in t["rounds"]], label=name, alpha=0.8)
        axes[2].plot(steps, [r["length"] for r in t["rounds"]], label=name, alpha=0.8)
    axes[1].set_title("GRPO: accuracy of each round's samples")
    axes[2].set_title("GRPO: mean completion tokens per round")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, ctx.path("plots", "reasoning.png"))


def report(results: dict) -> str:
    final = results["final"]
    k = next(iter(final.values()))["L1"]["k"]
    rows = [["model", "template", *[f"L{lv} greedy" for lv in (1, 2, 3)], *[f"L{lv} pass@{k}" for lv in (1, 2, 3)],
             "tokens correct / wrong (L2)", "shows work (L2)"]]
    for name, m in final.items():
        tpl = "R1-Zero" if name.startswith("r1zero") or name == "base_r1zero" else "plain"
        rows.append([name, tpl, *[m[f"L{lv}"]["greedy"] for lv in (1, 2, 3)],
                     *[m[f"L{lv}"][f"pass@{k}"] for lv in (1, 2, 3)],
                     f"{fmt(m['L2']['len_correct'], 1)} / {fmt(m['L2']['len_wrong'], 1)}", m["L2"]["shows_work"]])
    v = results["verdict"]
    lines = [f"- **{label}**: greedy accuracy levels 1-2 {fmt_change(v[label]['pooled'])}, level 3 "
             f"{fmt_change(v[label]['L3'])}" for label in ("rl_from_base", "sft_grpo_vs_sft", "sft_vs_base",
                                                           "sft_grpo_vs_rl_from_base")]
    during = [["GRPO arm", "sample accuracy", "tokens (all)", "tokens (correct)", "tokens (wrong)", "shows work"]]
    for name in results["training"]:
        d = v[f"during/{name}"]
        during.append([name, *[fmt_change(d[key], 2) for key in ("accuracy", "length", "len_correct", "len_wrong",
                                                                  "shows_work")]])
    parts = ["# Reasoning from RL on verifiable rewards (seed 002)", "```\n" + __doc__.split("\n\n")[1] + "\n```",
             __doc__.split("\n\n", 2)[2].strip(),
             "## Held-out accuracy at the end\n\n" + md_table(rows),
             "## Verdict: accuracy (greedy; ± two standard errors of the difference, from p(1-p)/n)\n\n"
             + "\n".join(lines),
             "## During GRPO: last quarter of the rounds minus the first (± 2 SE across rounds)\n\n" + md_table(during)]
    if results.get("real", {}).get("status") == "unavailable":
        parts.append(f"## Real model\n\nNot run: {results['real']['reason']}")
    elif "real" in results:
        parts.append(real_report(results["real"]))
    parts.append("![reasoning](plots/reasoning.png)")
    return "\n\n".join(parts)


def real_report(r: dict) -> str:
    """The real-model arm's section: greedy accuracy per level before and after (± 2 SE of each proportion),
    greedy completion tokens, and what training saw (samples correct, steps with a gradient)."""
    rows = [["", *[f"L{lv} greedy" for lv in (1, 2, 3)], "greedy tokens L1 / L2 / L3"]]
    for when in ("before", "after"):
        levels = [r[when][f"L{lv}"] for lv in (1, 2, 3)]
        rows.append([when, *[f"{m['greedy']:.2f} ± {2 * rate_se(m['greedy'], m['n']):.2f}" for m in levels],
                     " / ".join(fmt(m.get("len_greedy"), 0) for m in levels)])
    n = sum(x["n"] for x in r["rounds"])
    correct = sum(x["n_correct"] for x in r["rounds"])
    grad = r.get("gradient_steps")
    return ("## Real model: GRPO from SmolLM2-135M-Instruct\n\n" + md_table(rows)
            + f"\n\n{len(r['rounds'])} steps in {fmt(r['train_s'], 0)} s of wall time; {correct} of {n} samples "
            f"correct" + ("" if grad is None else f"; {grad} steps with a gradient") + ".")
