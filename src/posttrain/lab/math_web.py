"""The web of `builtin:small`: the lab's web text, with arithmetic as it appears on the real web.

Arithmetic documents (90 % of the mixture; the rest reviews and facts as `web.web_texts` writes them) are a
question and an answer, the answer drawn from `ARITH_FORMS` (worked answers in the styles of `WORKED_STYLES`):

| form      | share | example answer to "What is 47 + 38?"                                              |
|-----------|-------|-----------------------------------------------------------------------------------|
| `worked`  | 40 %  | an opener, then "47+38: 7+8=15 carry 1, ..." (compact), "47 + 38: 47 is 4 tens 7 |
|           |       | ones, 38 is 3 tens 8 ones; 7+8=15 ..." (places) or "47 + 38: ones: 7 + 8 = 15, ..." |
| `steps`   | 12 %  | one line per operation, "47 + 38 = 85", then "The answer is 85."                  |
| `bare`    | 38 %  | "47 + 38 = 85" or "The answer is 85."                                             |
| `wrong`   | 10 %  | a worked answer with one forgotten carry or borrow, or a bare answer off by 1-10   |

Problems are FRESH draws of levels 1 and 2 (no expression of the world's test or hard split: those stay held
out for evaluation, and level 3 never appears), so the model must learn the procedure, not the answers;
`ONE_DIGIT` of them have one-digit `+`/`-` operands. The proportions are v3's (docs/EXPERIMENTS.md section 6).
"""
from __future__ import annotations

import random

from .arithmetic import TRAIN_LEVELS, ArithmeticProblem, make_problem
from .web import web_texts
from .worked import ANSWER, OPENERS, worked
from .world import World

MATH_WEB_MIX = {"arithmetic": 0.90, "other": 0.10}
ARITH_FORMS = {"worked": 0.40, "steps": 0.12, "bare": 0.38, "wrong": 0.10}
WORKED_STYLES = {"compact": 0.45, "places": 0.35, "columns": 0.20}
ONE_DIGIT = 0.2      # share of problems whose + and - operands are 0-9 (the facts every column sum uses)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def arithmetic_answer(p: ArithmeticProblem, form: str, rng: random.Random) -> str:
    """An answer to `p` in `form` (a key of `ARITH_FORMS`)."""
    if form == "worked":
        return worked(p, rng, style=_pick(rng, WORKED_STYLES), opener=rng.choice(OPENERS))
    if form == "steps":
        return "\n".join([f"{a} {op} {b} = {r}" for a, op, b, r in p.steps()] + [ANSWER.format(n=p.answer)])
    if form == "bare":
        return f"{p.expression} = {p.answer}" if rng.random() < 0.5 else ANSWER.format(n=p.answer)
    if form == "wrong":
        if rng.random() < 0.5:
            return worked(p, rng, style=_pick(rng, WORKED_STYLES), opener=rng.choice(OPENERS), mistake=True)
        off = rng.choice([d for d in range(-10, 11) if d and p.answer + d >= 0])
        return f"{p.expression} = {p.answer + off}"
    raise ValueError(f"unknown arithmetic form {form!r}; expected one of {sorted(ARITH_FORMS)}")


def fresh_problems(world: World, rng: random.Random, n: int) -> list[ArithmeticProblem]:
    """`n` problems of the train levels whose expressions are in neither the world's test nor hard split
    (repeats allowed: the web repeats itself)."""
    held_out = {p.expression for p in world.arith_test + world.arith_hard}
    out = []
    while len(out) < n:
        p = make_problem(rng, rng.choice(TRAIN_LEVELS), 9 if rng.random() < ONE_DIGIT else None)
        if p.expression not in held_out:
            out.append(p)
    return out


def math_web_texts(world: World, n: int, seed: int = 0) -> list[str]:
    """`n` plain-text documents ("question\\nanswer"; the other documents as `web.web_texts` writes them)."""
    rng = random.Random(f"math-web-{world.seed}-{seed}")
    kinds = [_pick(rng, MATH_WEB_MIX) for _ in range(n)]
    n_arith = kinds.count("arithmetic")
    problems = iter(fresh_problems(world, rng, n_arith))
    others = iter(t for t in web_texts(world, n=3 * (n - n_arith) + 20) if "####" not in t and not _is_arith(t))
    docs = []
    for kind in kinds:
        if kind == "arithmetic":
            p = next(problems)
            docs.append(f"{p.prompt}\n{arithmetic_answer(p, _pick(rng, ARITH_FORMS), rng)}")
        else:
            docs.append(next(others))
    return docs


def _is_arith(text: str) -> bool:
    first = text.split("\n", 1)[0]
    return any(first.startswith(w) for w in ("What is", "Compute", "Calculate", "What does"))


def demo_rows(problems: list[ArithmeticProblem]) -> list[dict]:
    """Worked demonstrations as plain `prompt` + `completion` rows in the base model's own form
    ("What is 47 + 38?\\n" -> the canonical worked answer), with `answer` and `level`."""
    from .worked import demonstration

    return [{"prompt": f"{p.prompt}\n", "completion": demonstration(p), "answer": str(p.answer), "level": p.level}
            for p in problems]
