"""Arithmetic questions in difficulty levels, with short worked answers ending `#### N`, and their gold checker.

A problem is evaluated left to right (multi-step problems use only `+` and `-`, so left to right is also
the usual precedence). Results never go below zero: a subtraction draws an operand no larger than the
running total. Levels:

| level | operations | operands            | used for                   |
|-------|------------|---------------------|----------------------------|
| 1     | one        | 0-99 (`*`: 2-9 x 2-12) | train / test            |
| 2     | two        | 0-99                | train / test               |
| 3     | three      | 0-99                | hard (held-out, longer)    |

The train and test splits hold levels 1 and 2 and never share an expression; the hard split is level 3.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .sampling import draw_distinct

PHRASINGS = ("What is {e}?", "Compute {e}.", "Calculate {e}.", "What does {e} equal?")
TRAIN_LEVELS = (1, 2)
HARD_LEVEL = 3
_FINAL = re.compile(r"^\s*(-?\d[\d,]*)")


@dataclass(frozen=True)
class Level:
    n_ops: int
    max_operand: int
    ops: str


LEVELS = {1: Level(1, 99, "+-*"), 2: Level(2, 99, "+-"), 3: Level(3, 99, "+-")}


@dataclass(frozen=True)
class ArithmeticProblem:
    """`operands[0] ops[0] operands[1] ops[1] ...`, evaluated left to right."""

    level: int
    operands: tuple[int, ...]
    ops: tuple[str, ...]
    phrasing: int = 0

    @property
    def expression(self) -> str:
        parts = [str(self.operands[0])]
        for op, x in zip(self.ops, self.operands[1:]):
            parts += [op, str(x)]
        return " ".join(parts)

    def steps(self) -> list[tuple[int, str, int, int]]:
        """`(left, op, right, result)` for each operation, in order."""
        out, acc = [], self.operands[0]
        for op, x in zip(self.ops, self.operands[1:]):
            new = _apply(acc, op, x)
            out.append((acc, op, x, new))
            acc = new
        return out

    @property
    def answer(self) -> int:
        return self.steps()[-1][3]

    @property
    def prompt(self) -> str:
        return PHRASINGS[self.phrasing].format(e=self.expression)

    @property
    def solution(self) -> str:
        """The worked answer: one line per step, then `#### N` (e.g. "17 + 25 = 42\\n#### 42")."""
        lines = [f"{a} {op} {b} = {r}" for a, op, b, r in self.steps()]
        return "\n".join(lines + [f"#### {self.answer}"])

    def gold(self, completion: str) -> float:
        """1.0 when the number after the completion's last `####` is the answer, else 0.0."""
        return float(arithmetic_correct(completion, self.answer))

    def prompt_messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]

    def gold_fields(self) -> dict:
        """The column a verifier needs: `answer` as a string."""
        return {"answer": str(self.answer)}

    def to_row(self) -> dict:
        """The exported row: conversational `prompt`, `answer` as a string, plus level and worked solution."""
        return {"prompt": self.prompt_messages(), **self.gold_fields(), "level": self.level,
                "solution": self.solution}


def wrong_solution(problem: ArithmeticProblem, rng: random.Random) -> str:
    """The worked answer with its last step's result (and so the `####` line) off by 1-10: a negative example."""
    *first, (a, op, b, r) = problem.steps()
    wrong = r + rng.choice([d for d in range(-10, 11) if d != 0 and r + d >= 0])
    lines = [f"{x} {o} {y} = {z}" for x, o, y, z in first] + [f"{a} {op} {b} = {wrong}", f"#### {wrong}"]
    return "\n".join(lines)


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown arithmetic operator {op!r}; expected one of + - *")


def make_problem(rng: random.Random, level: int, max_operand: int | None = None) -> ArithmeticProblem:
    """One random problem of `level` (a key of `LEVELS`); `max_operand` caps the `+`/`-` operands below the
    level's (the math web's one-digit problems), the same draws otherwise."""
    if level not in LEVELS:
        raise ValueError(f"unknown arithmetic level {level!r}; expected one of {sorted(LEVELS)}")
    spec = LEVELS[level]
    top = spec.max_operand if max_operand is None else min(max_operand, spec.max_operand)
    ops = tuple(rng.choice(spec.ops) for _ in range(spec.n_ops))
    if ops == ("*",):
        operands = (rng.randint(2, 9), rng.randint(2, 12))
    else:
        acc = rng.randint(0, top)
        operands = [acc]
        for op in ops:
            x = rng.randint(0, acc if op == "-" else top)
            operands.append(x)
            acc = _apply(acc, op, x)
        operands = tuple(operands)
    return ArithmeticProblem(level, operands, ops, rng.randrange(len(PHRASINGS)))


def unique_problems(rng: random.Random, levels: tuple[int, ...], n: int,
                    exclude: set[str] | None = None) -> list[ArithmeticProblem]:
    """`n` problems with distinct expressions (none in `exclude`), levels drawn uniformly from `levels`."""
    return draw_distinct(lambda: make_problem(rng, rng.choice(levels)), lambda p: p.expression, n,
                         f"arithmetic problems at levels {levels}", exclude)


def arithmetic_splits(seed: int, n_train: int, n_test: int, n_hard: int) -> dict[str, list[ArithmeticProblem]]:
    """`{"train", "test", "hard"}`: train and test share levels 1-2 and no expression; hard is level 3."""
    rng = random.Random(f"arithmetic-{seed}")
    pool = unique_problems(rng, TRAIN_LEVELS, n_train + n_test)
    hard = unique_problems(rng, (HARD_LEVEL,), n_hard)
    return {"train": pool[n_test:], "test": pool[:n_test], "hard": hard}


def extract_answer(completion: str) -> int | None:
    """The integer after the last `####` in `completion` (commas allowed), or None when there is none."""
    if "####" not in completion:
        return None
    m = _FINAL.match(completion.rsplit("####", 1)[1])
    if m is None:
        return None
    return int(m.group(1).replace(",", ""))


def arithmetic_correct(completion: str, answer: int | str) -> bool:
    """Gold check: the number after the completion's last `####` equals `answer`."""
    got = extract_answer(completion)
    return got is not None and got == int(str(answer).strip())
