"""Arithmetic ability of a model, by level: greedy accuracy, pass@k at T = 1, completion lengths (correct and
wrong separately) and how often it shows its work.

    math_eval(model, tok, rows_by_level(n=100), template="{prompt}\\n", k=16)

Prompts are the question in the base model's pretraining form (`PLAIN`: "What is 47 + 38?\\n") or any
`template` with `{prompt}`. A completion is correct when its final answer (`worked.final_answer`: the number
after the last "answer is" / "####", else its last number) equals the gold answer.

| key (per level `L1`, `L2`, `L3`)   | meaning                                                               |
|------------------------------------|-----------------------------------------------------------------------|
| `greedy`                           | accuracy of one greedy completion per problem                         |
| `sampled`                          | accuracy of the k samples at T = 1 (= pass@1 estimated from k)        |
| `pass@k`                           | share of problems with at least one correct sample among k            |
| `len_correct`, `len_wrong`         | mean tokens of correct / wrong sampled completions (None if none)     |
| `shows_work`                       | share of sampled completions that work step by step (`shows_work`)    |
| `n`, `k`                           | problems and samples per problem                                      |
| `len_greedy`, `examples` (k = 0)   | mean tokens of the greedy completions; the first `EXAMPLES` of them   |
"""
from __future__ import annotations

PLAIN = "{prompt}\n"
R1_ZERO = "{prompt}\nLet's think step by step.\n"
LEVEL_FILES = {1: "builtin:arith_test", 2: "builtin:arith_test", 3: "builtin:arith_hard"}
MAX_NEW_TOKENS = 112
EXAMPLES = 5             # greedy texts kept per level when k = 0


def rows_by_level(n: int, levels: tuple[int, ...] = (1, 2, 3)) -> dict[int, list[dict]]:
    """The first `n` held-out problems of each level (test split for 1 and 2, hard split for 3)."""
    from .evaluate import rows_of

    out = {}
    for level in levels:
        rows = [r for r in rows_of(LEVEL_FILES[level]) if int(r["level"]) == level]
        out[level] = rows[:n]
    return out


def _user_text(row: dict) -> str:
    p = row["prompt"]
    return p if isinstance(p, str) else p[-1]["content"]


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def level_metrics(rows: list[dict], greedy: list[str], samples: list[list[str]], sample_lens: list[list[int]]) -> dict:
    """Metrics of one level from greedy texts, k sampled texts per row and their token lengths (keys above)."""
    from .worked import is_correct, shows_work

    ok = [[is_correct(t, r["answer"]) for t in ts] for r, ts in zip(rows, samples)]
    flat_ok = [c for row in ok for c in row]
    flat_len = [n for row in sample_lens for n in row]
    k = len(samples[0]) if samples else 0
    return {"greedy": _mean(is_correct(t, r["answer"]) for r, t in zip(rows, greedy)),
            "sampled": _mean(flat_ok), f"pass@{k}": _mean(any(row) for row in ok),
            "len_correct": _mean(n for n, c in zip(flat_len, flat_ok) if c),
            "len_wrong": _mean(n for n, c in zip(flat_len, flat_ok) if not c),
            "shows_work": _mean(shows_work(t) for ts in samples for t in ts), "n": len(rows), "k": k}


def math_eval(model, tok, levels: dict[int, list[dict]], *, template: str = PLAIN, k: int = 16,
              max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 128, seed: int = 0, chat: bool = False) -> dict:
    """`{"L1": {...}, "L2": {...}, ...}` (module docstring) for `model` on the rows of each level; with `chat`
    the prompts are the tokenizer's chat template with the generation prompt instead of `template`; `k = 0`:
    greedy accuracy only."""
    from posttrain.data import encode_prompt
    from posttrain.rollout import RolloutOptions, SamplingParams, make_backend

    from .worked import is_correct

    backend = make_backend("hf", model, tok, RolloutOptions(batch_size=batch_size))
    out = {}
    for level, rows in levels.items():
        prompts = [encode_prompt({"prompt": [{"role": "user", "content": _user_text(r)}]}, tok) if chat
                   else template.format(prompt=_user_text(r)) for r in rows]
        g = backend.generate(prompts, n=1, params=SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0,
                                                                 seed=seed))
        greedy = g.texts
        if k == 0:   # greedy only, with its completion tokens and the first few texts
            out[f"L{level}"] = {"greedy": _mean(is_correct(t, r["answer"]) for r, t in zip(rows, greedy)),
                                "len_greedy": _mean(len(c) for c in g.completion_ids), "n": len(rows), "k": 0,
                                "examples": [{"prompt": _user_text(r), "answer": str(r["answer"]), "completion": t}
                                             for r, t in zip(rows[:EXAMPLES], greedy)]}
            continue
        ro = backend.generate(prompts, n=k, params=SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0,
                                                                  seed=seed + level))
        texts = [ro.texts[i * k:(i + 1) * k] for i in range(len(rows))]
        lens = [[len(c) for c in ro.completion_ids[i * k:(i + 1) * k]] for i in range(len(rows))]
        out[f"L{level}"] = level_metrics(rows, greedy, texts, lens)
    return out


def measure_base(path: str, *, n: int = 100, k: int = 16, template: str = PLAIN) -> dict:
    """`math_eval` of the model folder `path` on `n` held-out problems of each level, with both templates."""
    from .evaluate import load_policy

    model, tok = load_policy(path)
    levels = rows_by_level(n)
    return {"n": n, "k": k, "plain": math_eval(model, tok, levels, template=template, k=k),
            "r1_zero": math_eval(model, tok, levels, template=R1_ZERO, k=k)}


def table(measured: dict) -> str:
    """The measured properties as a text table (one row per template and level)."""
    k = measured["k"]
    lines = [f"{'template':9} {'level':5} {'greedy':>7} {'T=1':>6} {f'pass@{k}':>8} {'work':>6} "
             f"{'len ok':>7} {'len bad':>7}"]
    for name in ("plain", "r1_zero"):
        for level, m in measured.get(name, {}).items():
            cells = [m["greedy"], m["sampled"], m[f"pass@{k}"], m["shows_work"], m["len_correct"], m["len_wrong"]]
            shown = ["-" if c is None else (f"{c:.3f}" if i < 4 else f"{c:.1f}") for i, c in enumerate(cells)]
            lines.append(f"{name:9} {level:5} {shown[0]:>7} {shown[1]:>6} {shown[2]:>8} {shown[3]:>6} "
                         f"{shown[4]:>7} {shown[5]:>7}")
    cost = measured.get("pretrain")
    if cost:
        lines.append(f"pretraining: {cost['steps']} steps, {cost['cpu_s'] / 60:.1f} CPU-minutes "
                     f"({cost['wall_s'] / 60:.1f} min of wall time)")
    return "\n".join(lines)
