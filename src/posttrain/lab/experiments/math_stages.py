"""What the reasoning experiments share: `builtin:small`, its worked demonstrations, GRPO on arithmetic with the
exact-answer reward, and the arithmetic evaluation by level (`lab.math_eval`).

Demonstrations are the world's train problems (levels 1-2) with the canonical worked answer
(`worked.demonstration`), as plain `prompt` + `completion` rows in the base model's own form; held-out
demonstrations are the test problems'. GRPO's prompts are `builtin:arith_train`; its greedy held-out accuracy
during training is its evaluation (`eval/reward/math/mean`) on `builtin:arith_test`.
"""
from __future__ import annotations

import json
import os

from posttrain.lab.experiments.common import Context, mean, read_jsonl, std_error, train
from posttrain.lab.math_eval import PLAIN, R1_ZERO, math_eval, rows_by_level

MATH = {"name": "math", "weight": 1.0, "last_number": True}
FORMAT = {"name": "format", "weight": 0.5, "search": True, "pattern": r"The answer is \d+\.\s*\Z"}
# GRPO on arithmetic: 30 rounds of 4 prompts x 8 samples (T = 1, up to 96 tokens), one optimizer step each,
# DAPO clip-higher, no KL; greedy held-out accuracy on 64 test problems every 10 steps; every round's samples kept
GRPO_MATH = {"max_steps": 30, "batch_size": 32, "grad_accum": 1, "num_generations": 8, "max_length": 192,
             "max_new_tokens": 96, "learning_rate": 2e-4, "lr_scheduler": "constant", "warmup_steps": 0,
             "data.train": "builtin:arith_train", "data.eval": "builtin:arith_test", "data.max_eval_rows": 64,
             "eval_steps": 10, "sample_steps": 1, "beta": 0.0, "temperature": 1.0, "epsilon_high": 0.28,
             "rewards": [MATH], "prompt_template": PLAIN, "loss_type": "dapo", "scale_rewards": True}
QUICK_GRPO = {"max_steps": 2, "batch_size": 4, "num_generations": 2, "max_new_tokens": 16, "eval_steps": 0,
              "data.eval": None}
# SFT on worked demonstrations: 100 steps of 16 demonstrations, held-out NLL every 25 steps
SFT_MATH = {"max_steps": 100, "batch_size": 16, "learning_rate": 5e-4, "warmup_steps": 10, "max_length": 192,
            "lr_scheduler": "cosine", "loss": "nll", "eval_steps": 25, "data.max_eval_rows": 200}
QUICK_SFT = {"max_steps": 3, "batch_size": 4, "eval_steps": 0}
CHECKPOINTS = 3          # SFT checkpoints kept for accuracy during training (sft_vs_dft): 100 steps -> 34, 68, 100
EVAL = {"full": {"n": 50, "k": 8, "max_new_tokens": 112}, "quick": {"n": 2, "k": 2, "max_new_tokens": 16}}


def demos(ctx: Context) -> dict[str, str]:
    """`{"train": path, "eval": path}` of worked demonstrations (module docstring), written into
    `OUT/_shared/data/` (the same files for every experiment, so their shared stages match); --quick keeps the
    first 24 rows."""
    from posttrain.lab.export import write_jsonl
    from posttrain.lab.math_web import demo_rows
    from posttrain.lab.world import World

    folder = os.path.join(ctx.root, "_shared", "data")
    os.makedirs(folder, exist_ok=True)
    world = World(0)
    out = {}
    for split, problems in (("train", world.arith_train), ("eval", world.arith_test)):
        rows = demo_rows(problems)[:24 if ctx.quick else None]
        out[split] = write_jsonl(os.path.join(folder, f"demos_{split}-{ctx.mode}.jsonl"), rows)
    return out


def sft(ctx: Context, name: str, init: str, settings: dict | None = None, *, shared: bool = False) -> str:
    """SFT (or DFT with `{"loss": "dft"}`) on the worked demonstrations from `init`, checkpointed every
    ceil(steps / `CHECKPOINTS`) steps (the last is the final step); returns its final folder. `shared`: one run
    per seed for every experiment written to the same OUT (reasoning's SFT arm is sft_vs_dft's)."""
    d = demos(ctx)
    full = {**SFT_MATH, "data.train": d["train"], "data.eval": d["eval"], **(settings or {})}

    def ckpt(steps: int) -> dict:
        return {"save_steps": -(-steps // CHECKPOINTS), "save_total_limit": CHECKPOINTS + 1}

    return train(ctx, name, "sft", init, {**full, **ckpt(full["max_steps"])},
                 quick={**QUICK_SFT, **ckpt(QUICK_SFT["max_steps"])}, shared=shared)


def grpo(ctx: Context, name: str, init: str, settings: dict | None = None) -> str:
    """GRPO on arithmetic prompts from `init` (`GRPO_MATH`, then `settings`); returns its final folder."""
    return train(ctx, name, "grpo", init, {**GRPO_MATH, **(settings or {})}, quick=QUICK_GRPO)


def evaluate_math(ctx: Context, path: str, template: str = PLAIN, *, chat: bool = False,
                  gguf_file: str | None = None, sizes: dict | None = None) -> dict:
    """`lab.math_eval` of model folder `path` on levels 1, 2, 3 (sizes `EVAL[ctx.mode]`), prompts in
    `template` (or the model's chat template when `chat`); adds `pooled` greedy accuracy of levels 1-2.
    `gguf_file`: load that GGUF file inside the folder `path` (a real model shipped as GGUF); `sizes`: instead of
    `EVAL[ctx.mode]` (not with --quick)."""
    from posttrain.lab.evaluate import load_policy

    e = EVAL["quick"] if ctx.quick else (sizes or EVAL["full"])
    if gguf_file:
        from types import SimpleNamespace

        from posttrain.core.models import load_model

        cfg = SimpleNamespace(model=path, gguf_file=gguf_file, tokenizer=None, torch_dtype="float32",
                              trust_remote_code=False, attn_implementation=None, gradient_checkpointing=False)
        model, tok = load_model(cfg)   # de-quantised float weights (the trainer loads it the same way)
        model.eval()
    else:
        model, tok = load_policy(path)
    m = math_eval(model, tok, rows_by_level(e["n"]), template=template, k=e["k"], max_new_tokens=e["max_new_tokens"],
                  seed=ctx.seed, chat=chat)
    m["pooled"] = {"greedy": mean([m["L1"]["greedy"], m["L2"]["greedy"]]), "n": 2 * e["n"]}
    ctx.log(f"evaluated {os.path.basename(os.path.dirname(path))}: greedy L1 {m['L1']['greedy']:.3f} "
            f"L2 {m['L2']['greedy']:.3f} L3 {m['L3']['greedy']:.3f}")
    return m


def base_eval(ctx: Context, template: str) -> dict:
    """The base model's `evaluate_math` (the same for every seed: cached in `OUT/<experiment>/base-*.json`)."""
    path = ctx.exp_path(f"base-{'r1' if template == R1_ZERO else 'plain'}-{ctx.mode}.json")
    if os.path.exists(path) and not ctx.fresh:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    m = evaluate_math(ctx, ctx.base, template)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(m, f, indent=2)
    return m


def rounds(run_dir: str) -> list[dict]:
    """Per GRPO step, from its sample table (`samples/step-N.jsonl`, every step): accuracy (math reward),
    mean completion tokens of all, of correct and of wrong completions, and the share showing work."""
    from posttrain.lab.worked import shows_work

    folder = os.path.join(run_dir, "samples")
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        rows = read_jsonl(os.path.join(folder, name))
        ok = [r["rewards"].get("math") == 1.0 for r in rows]
        lens = [r["length"] for r in rows]
        out.append({"step": rows[0]["step"], "accuracy": mean(ok), "length": mean(lens),
                    "len_correct": mean(n for n, c in zip(lens, ok) if c),
                    "len_wrong": mean(n for n, c in zip(lens, ok) if not c),
                    "shows_work": mean(shows_work(r["completion"]) for r in rows), "n": len(rows),
                    "n_correct": sum(ok)})
    return out


def gradient_steps(run_dir: str) -> int:
    """GRPO steps with a policy gradient: some group's rewards differ (`frac_zero_std_groups` < 1); with no KL
    (beta 0) a step whose every group has equal rewards has all advantages 0, so its gradient is exactly zero."""
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    return sum(1 for r in rows if r.get("frac_zero_std_groups", 1.0) < 1.0)


def eval_curve(run_dir: str) -> list[dict]:
    """`{"step", "accuracy"}` of the trainer's greedy held-out evaluations (`eval/reward/math/mean`)."""
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    return [{"step": r["step"], "accuracy": r["eval/reward/math/mean"]} for r in rows if "eval/reward/math/mean" in r]


def quarter(per_step: list[dict], key: str, late: bool) -> dict:
    """Mean of `key` over the first (or last) quarter of the steps, and the standard error across those steps."""
    k = max(1, len(per_step) // 4)
    part = per_step[-k:] if late else per_step[:k]
    vals = [r[key] for r in part if r[key] is not None]
    return {"mean": mean(vals), "se": std_error(vals), "steps": len(part)}
