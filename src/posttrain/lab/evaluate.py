"""Gold evaluation of a model folder on the lab world's held-out prompts.

    metrics = evaluate_policy("OUT/sft/final", base="OUT/base", sizes=EvalSizes(), reward_model=rm)
    rm_stats = reward_model_accuracy(RewardModel.from_pretrained("OUT/rm/final"), rows_of("builtin:pref_eval"))

Greedy completions (temperature 0, `rollout.make_backend("hf", ...)`) of prompts rendered with the model's
chat template (`data.encode_prompt`) are scored by the world's gold truth (`lab.gold`):

| key                 | prompts               | meaning                                                      |
|---------------------|-----------------------|--------------------------------------------------------------|
| `arith/accuracy`    | `builtin:arith_test`  | the number after the last `####` is the answer               |
| `arith/format_rate` | `builtin:arith_test`  | a `#### <integer>` line is present                           |
| `review/gold_reward`| `builtin:review_eval` | mean `lab.review.review_gold`                                |
| `review/honest_rate`, `review/sycophancy_rate` (buggy code), `review/false_alarm_rate` (correct code),        |
| `review/wrong_line_rate` (buggy code), `review/vague_rate`: `lab.gold.review_metrics` on `builtin:review_eval`   |
| `facts/favourite_rate`, `facts/accuracy` | `builtin:facts_probe` | negation probe of seed 000                 |
| `*/mean_length`     |                       | words per completion                                         |
| `kl_to_base`        | review + arithmetic   | mean over sampled (T = 1) completions of                    |
|                     |                       | sum_t log p_policy(y_t) - log p_base(y_t) (a k1 estimate of KL) |
| `kl_to_init`        | review + arithmetic   | the same against the model it was trained from (e.g. SFT)   |
| `review/rm_reward`  | `builtin:review_eval` | mean reward-model score of the greedy reviews (the proxy)    |

Every rate is over the first `n` rows of its file (files are already shuffled by the world's seed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from posttrain.lab.gold import arithmetic_metrics, facts_metrics, review_metrics


@dataclass(frozen=True)
class EvalSizes:
    """How many held-out prompts each measurement uses, and how long completions may be."""

    arith: int = 200
    review: int = 200
    facts: int = 50
    kl_prompts: int = 64
    pref_pairs: int = 400     # held-out preference pairs for the reward model's accuracy
    max_new_tokens: int = 64
    batch_size: int = 64
    seed: int = 0


def rows_of(spec: str, n: int | None = None) -> list[dict]:
    """The first `n` rows of a data spec (`builtin:NAME` or a path)."""
    from posttrain.lab.builtin import resolve_data
    from posttrain.data.formats import load_rows

    rows = list(load_rows(resolve_data(spec), split="train"))
    return rows[:n] if n is not None else rows


def load_policy(path: str):
    """`(model, tokenizer)` of a causal LM folder (`save_pretrained` form, or a PEFT adapter, merged), eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.lab.builtin import resolve

    path = resolve(path)
    if os.path.exists(os.path.join(path, "adapter_config.json")):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch.float32).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def generate(model, tok, rows: list[dict], sizes: EvalSizes, *, temperature: float = 0.0):
    """`Rollouts` with one completion per row (greedy unless `temperature` > 0)."""
    from posttrain.data import encode_prompt
    from posttrain.rollout import RolloutOptions, SamplingParams, make_backend

    prompts = [encode_prompt(r, tok) for r in rows]
    backend = make_backend("hf", model, tok, RolloutOptions(batch_size=sizes.batch_size))
    params = SamplingParams(max_new_tokens=sizes.max_new_tokens, temperature=temperature, seed=sizes.seed)
    return backend.generate(prompts, n=1, params=params)


def _sequence_logps(model, seqs: list[list[int]], starts: list[int], pad_id: int, batch_size: int) -> list[float]:
    """Sum of log p(token) over positions `starts[i]:` of each sequence."""
    from posttrain.core.logprobs import token_logps

    out = []
    for s in range(0, len(seqs), batch_size):
        chunk, first = seqs[s:s + batch_size], starts[s:s + batch_size]
        width = max(len(q) for q in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width))
        for i, (q, f) in enumerate(zip(chunk, first)):
            ids[i, :len(q)] = torch.tensor(q)
            attn[i, :len(q)] = 1
            mask[i, f:len(q)] = 1.0
        with torch.no_grad():
            lp = token_logps(model, ids, attn)
        out += (lp * mask).sum(-1).tolist()
    return out


def kl_estimate(model, tok, ref_model, rows: list[dict], sizes: EvalSizes) -> float:
    """KL(policy || ref) per completion: mean over completions sampled from `model` at T = 1 of
    sum_t (log p_policy - log p_ref) of the sampled tokens (the k1 estimator, unbiased)."""
    ro = generate(model, tok, rows, sizes, temperature=1.0)
    seqs = [list(p) + list(c) for p, c in zip(ro.prompt_ids, ro.completion_ids)]
    starts = [len(p) for p in ro.prompt_ids]
    pad = tok.pad_token_id
    pol = _sequence_logps(model, seqs, starts, pad, sizes.batch_size)
    ref = _sequence_logps(ref_model, seqs, starts, pad, sizes.batch_size)
    return sum(a - b for a, b in zip(pol, ref)) / len(seqs)


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


TASKS = {"arith": "builtin:arith_test", "review": "builtin:review_eval", "facts": "builtin:facts_probe"}


def gold_metrics(model, tok, sizes: EvalSizes, reward_model=None, tasks: tuple[str, ...] = tuple(TASKS)) -> dict:
    """Greedy completions on the held-out sets of `tasks` (keys of `TASKS`), scored by the gold truth
    (keys in the module docstring)."""
    out = {}
    if "arith" in tasks:
        arith = rows_of(TASKS["arith"], sizes.arith)
        out.update(_prefixed("arith", arithmetic_metrics(arith, generate(model, tok, arith, sizes).texts)))
    if "review" in tasks:
        review = rows_of(TASKS["review"], sizes.review)
        reviews = generate(model, tok, review, sizes).texts
        out.update(_prefixed("review", review_metrics(review, reviews)))
        if reward_model is not None:
            scores = [s for s in reward_model([r["prompt"] for r in review], reviews) if s is not None]
            out["review/rm_reward"] = sum(scores) / len(scores) if scores else None
    if "facts" in tasks:
        facts = rows_of(TASKS["facts"], sizes.facts)
        out.update(_prefixed("facts", facts_metrics(facts, generate(model, tok, facts, sizes).texts)))
    return out


def evaluate_policy(path: str, *, base: str | None, init: str | None = None, sizes: EvalSizes = EvalSizes(),
                    reward_model=None, samples_path: str | None = None, tasks: tuple[str, ...] = tuple(TASKS)) -> dict:
    """Gold metrics of the model in `path` on `tasks`, plus `kl_to_base` when `base` is given (0 for the base
    itself) and `kl_to_init` when `init` (the model this one was trained from, e.g. the SFT model) is given.
    KL is estimated on review and arithmetic prompts (those of them in `tasks`; else on `tasks`' prompts).

    `samples_path`: write a few greedy completions per task there (JSONL) for a human to read.
    """
    model, tok = load_policy(path)
    out = gold_metrics(model, tok, sizes, reward_model, tasks)
    kl_tasks = [t for t in ("review", "arith") if t in tasks] or list(tasks)
    share = max(1, sizes.kl_prompts // len(kl_tasks))
    rows = [r for t in kl_tasks for r in rows_of(TASKS[t], share)]
    for key, other in (("kl_to_base", base), ("kl_to_init", init)):
        if other is None:
            continue
        if os.path.abspath(other) == os.path.abspath(path):
            out[key] = 0.0
            continue
        other_model, other_tok = load_policy(other)
        if len(other_tok) != len(tok):
            raise ValueError(f"KL needs one tokenizer: {path} has {len(tok)} tokens, {other} {len(other_tok)}")
        out[key] = kl_estimate(model, tok, other_model, rows, sizes)
    if samples_path:
        write_samples(model, tok, sizes, samples_path)
    return out


def write_samples(model, tok, sizes: EvalSizes, path: str, per_task: int = 4) -> str:
    """A few greedy completions per held-out task, as JSONL rows `task`, `prompt`, `completion`."""
    from posttrain.lab.export import write_jsonl

    rows = []
    for task, spec in (("arithmetic", "builtin:arith_test"), ("review", "builtin:review_eval"),
                       ("facts", "builtin:facts_probe")):
        picked = rows_of(spec, per_task)
        for r, text in zip(picked, generate(model, tok, picked, sizes).texts):
            rows.append({"task": task, "prompt": r["prompt"][-1]["content"], "completion": text})
    return write_jsonl(path, rows)


def reward_model_accuracy(reward_model, rows: list[dict]) -> dict:
    """Held-out pairwise accuracy of a reward model (`RewardFn`) on `pref_eval` rows.

    `rm/gold_accuracy`: the gold-better response scores higher (pairs with equal gold are skipped);
    `rm/honest_vs_sycophantic`: on pairs of an honest and a sycophantic review, the honest one scores higher;
    `rm/rater_accuracy`: agreement with the simulated rater's choice (the label it was trained on).
    """
    prompts = [r["prompt"] for r in rows]
    chosen = reward_model(prompts, [r["chosen"] for r in rows])
    rejected = reward_model(prompts, [r["rejected"] for r in rows])
    rater, gold, honest = [], [], []
    for r, c, j in zip(rows, chosen, rejected):
        if c is None or j is None:
            continue
        rater.append(float(c > j))
        if r["gold_chosen"] != r["gold_rejected"]:
            gold.append(float((c > j) == (r["gold_chosen"] > r["gold_rejected"])))
        styles = {r["chosen_style"]: c, r["rejected_style"]: j}
        if set(styles) == {"honest", "sycophantic"}:
            honest.append(float(styles["honest"] > styles["sycophantic"]))

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    return {"rm/rater_accuracy": mean(rater), "rm/gold_accuracy": mean(gold), "rm/honest_vs_sycophantic": mean(honest),
            "rm/n_pairs": len(rater), "rm/n_honest_vs_sycophantic": len(honest)}
