"""SFT vs DFT (seed 003): does scaling each token's loss by its own probability generalise better?

    builtin:small ── SFT (loss = nll) on worked demonstrations ── sft
                  └─ DFT (loss = dft) on the same demonstrations ── dft      (same lr, steps, batch, data order)

DFT (Wu et al. 2025, arXiv 2508.05629) multiplies each token's negative log-likelihood by that token's own
probability (detached), which the paper reads as rectifying SFT's implicit reward; it reports better
generalisation than SFT at the same hyper-parameters (it uses SFT's learning rate; so does this experiment).
Measured, from checkpoints during training and at the end: greedy accuracy on held-out problems of the trained
levels 1-2 and of the harder level 3 (never in the demonstrations), and the held-out demonstrations' NLL per
token (the same measure for both: the losses have different scales, so the arms are compared by accuracy).
Claim tested (seed 003): DFT generalises better than SFT.
"""
from __future__ import annotations

import os

from posttrain.lab.experiments.common import (
    Context, change, fmt, fmt_change, md_table, mean, pyplot, rate_se, read_jsonl, save_figure, std_error)
from posttrain.lab.experiments.math_stages import EVAL, SFT_MATH, demos, sft

ARMS = {"sft": {"loss": "nll"}, "dft": {"loss": "dft"}}
BASE = "small"          # builtin:small, unless --base or --quick


def run(ctx: Context) -> dict:
    # the SFT arm is the reasoning experiment's SFT arm (shared: trained once per seed and OUT)
    finals = {arm: sft(ctx, arm, ctx.base, s if arm == "dft" else None, shared=arm == "sft")
              for arm, s in ARMS.items()}
    eval_rows = read_jsonl(demos(ctx)["eval"])
    curves, nll = {}, {}
    for arm, final in finals.items():
        curves[arm] = [{"step": step, **accuracy(ctx, ctx.base, path)} for step, path in checkpoints(final)]
        nll[arm] = heldout_nll(final, eval_rows)
        curves[arm][-1]["nll"] = mean(nll[arm])
    loss_curves = {arm: [{"step": r["step"], "nll": r["eval/loss"]}
                         for r in read_jsonl(os.path.join(os.path.dirname(f), "metrics.jsonl")) if "eval/loss" in r]
                   for arm, f in finals.items()}
    results = {"sft": dict(SFT_MATH), "curves": curves,
               "heldout_nll_curves": loss_curves, "verdict": verdict(curves, nll)}
    results["plots"] = [plot(ctx, results)]
    return results


def checkpoints(final: str) -> list[tuple[int, str]]:
    """`(step, path)` of the run's kept checkpoints (model weights in `model.safetensors`), oldest first."""
    from posttrain.core.checkpoint import list_checkpoints

    return list(list_checkpoints(os.path.join(os.path.dirname(final), "checkpoints")))


def accuracy(ctx: Context, init: str, ckpt: str) -> dict:
    """Greedy held-out accuracy per level of checkpoint `ckpt` (weights loaded into `init`'s architecture)."""
    from safetensors.torch import load_model

    from posttrain.lab.evaluate import load_policy
    from posttrain.lab.math_eval import PLAIN, math_eval, rows_by_level

    model, tok = load_policy(init)
    load_model(model, os.path.join(ckpt, "model.safetensors"))
    e = EVAL[ctx.mode]
    m = math_eval(model.eval(), tok, rows_by_level(e["n"]), template=PLAIN, k=0, max_new_tokens=e["max_new_tokens"])
    return {lv: m[lv]["greedy"] for lv in m} | {"n": e["n"]}


def heldout_nll(path: str, rows: list[dict]) -> list[float]:
    """Per held-out demonstration: mean negative log-likelihood per completion token under model `path`."""
    import torch

    from posttrain.core.logprobs import token_logps
    from posttrain.lab.evaluate import load_policy

    model, tok = load_policy(path)
    out = []
    for r in rows:
        p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            lp = token_logps(model, ids, torch.ones_like(ids))[0]
        out.append(float(-lp[len(p):].mean()))
    return out


def verdict(curves: dict, nll: dict) -> dict:
    """DFT minus SFT: final greedy accuracy (levels 1-2 pooled, level 3) with 2-SE noise from p(1-p)/n, and the
    held-out NLL per token (noise: 2 SE of the paired per-demonstration differences)."""
    a, b = curves["sft"][-1], curves["dft"][-1]
    n = a["n"]
    pooled = {arm: mean([c[-1]["L1"], c[-1]["L2"]]) for arm, c in curves.items()}
    diffs = [y - x for x, y in zip(nll["sft"], nll["dft"])]
    se = std_error(diffs)
    d = mean(diffs)
    return {"dft_minus_sft": {
        "accuracy_L1_2": change(pooled["sft"], pooled["dft"], rate_se(pooled["sft"], 2 * n), rate_se(pooled["dft"], 2 * n)),
        "accuracy_L3": change(a["L3"], b["L3"], rate_se(a["L3"], n), rate_se(b["L3"], n)),
        "heldout_nll": {"diff": d, "noise": None if se is None else 2 * se,
                        "beyond_noise": None if se is None else abs(d) > 2 * se}}}


def plot(ctx: Context, results: dict) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for arm, color in (("sft", "tab:blue"), ("dft", "tab:orange")):
        c = results["curves"][arm]
        for ax, lv in ((axes[0], "L1"), (axes[0], "L2"), (axes[1], "L3")):
            ax.plot([r["step"] for r in c], [r[lv] for r in c], "o-" if lv != "L2" else "s--", color=color,
                    label=f"{arm} {lv}")
        lc = results["heldout_nll_curves"][arm]
        axes[2].plot([r["step"] for r in lc], [r["nll"] for r in lc], color=color, label=arm)
    axes[0].set_title("held-out greedy accuracy, levels 1 and 2")
    axes[1].set_title("held-out greedy accuracy, level 3 (harder)")
    axes[2].set_title("held-out demonstrations: NLL per token")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    return save_figure(fig, ctx.path("plots", "sft_vs_dft.png"))


def report(results: dict) -> str:
    rows = [["arm", "step", "L1 greedy", "L2 greedy", "L3 greedy", "held-out NLL / token"]]
    for arm, c in results["curves"].items():
        rows += [[arm, str(r["step"]), r["L1"], r["L2"], r["L3"], r.get("nll")] for r in c]
    v = results["verdict"]["dft_minus_sft"]
    return "\n\n".join([
        "# SFT vs DFT on worked arithmetic (seed 003)", "```\n" + __doc__.split("\n\n")[1] + "\n```",
        __doc__.split("\n\n", 2)[2].strip(),
        "## Held-out accuracy during training (checkpoints) and at the end\n\n" + md_table(rows),
        "## Verdict: DFT minus SFT (± two standard errors)\n\n"
        f"- greedy accuracy, trained levels 1-2: {fmt_change(v['accuracy_L1_2'])}\n"
        f"- greedy accuracy, held-out level 3: {fmt_change(v['accuracy_L3'])}\n"
        f"- held-out NLL per token: {fmt_change(v['heldout_nll'])} (lower is better; {fmt(v['heldout_nll']['diff'])})",
        "![sft vs dft](plots/sft_vs_dft.png)"])
