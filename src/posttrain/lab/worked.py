"""Arithmetic worked out digit by digit, as a person writes it on the web: columns with carries and borrows,
skip counting for products, a line per step, in a few styles, sometimes with a mistake.

    worked(problem, rng, style="columns")   # "ones: 7 + 8 = 15, write 5, carry 1. tens: 4 + 3 + 1 = 8, ..."
    demonstration(problem)                   # the one canonical worked answer SFT demonstrations use

Every worked answer ends with the marked final line "The answer is N." (`ANSWER`), the form the R1-Zero
template asks for and `final_answer` reads.
"""
from __future__ import annotations

import random
import re

from .arithmetic import ArithmeticProblem, _apply

PLACES = ("ones", "tens", "hundreds", "thousands")
OPENERS = ("Let's think step by step.", "Work it out digit by digit.", "Solution:", "")
ANSWER = "The answer is {n}."
STYLES = ("columns", "compact", "places")
_MARKED = re.compile(r"(?:answer is|answer:|####)\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _digits(x: int, width: int) -> list[int]:
    """Digits of `x`, ones first, padded with zeros to `width`."""
    return [(x // 10 ** i) % 10 for i in range(width)]


def add_columns(a: int, b: int, *, drop_carry: bool = False, compact: bool = False) -> tuple[list[str], int]:
    """Column addition: one clause per place and the result (wrong when `drop_carry`: every carry is forgotten).
    47 + 38 -> ["ones: 7 + 8 = 15, write 5, carry 1", "tens: 4 + 3 + 1 = 8, write 8"], 85;
    `compact`: ["7+8=15 carry 1", "4+3+1=8"] (a final carry is the result's first digit)."""
    width = len(str(max(a, b)))
    da, db = _digits(a, width), _digits(b, width)
    clauses, carry, result = [], 0, 0
    for i in range(width):
        s = da[i] + db[i] + carry
        out = s % 10
        if compact:
            clauses.append(f"{da[i]}+{db[i]}" + (f"+{carry}" if carry else "") + f"={s}")
        else:
            terms = f"{da[i]} + {db[i]}" + (f" + {carry}" if carry else "")
            clauses.append(f"{PLACES[i]}: {terms} = {s}, write {out}")
        carry = 0 if drop_carry else s // 10
        if carry:
            clauses[-1] += " carry 1" if compact else ", carry 1"
        result += out * 10 ** i
    if carry:
        if not compact:
            clauses.append(f"{PLACES[width]}: write {carry}")
        result += carry * 10 ** width
    return clauses, result


def sub_columns(a: int, b: int, *, drop_borrow: bool = False, compact: bool = False) -> tuple[list[str], int]:
    """Column subtraction of `b <= a` with borrows (wrong when `drop_borrow`: a borrow is never paid back).
    83 - 47 -> ["ones: 3 - 7, borrow: 13 - 7 = 6", "tens: 8 - 1 - 4 = 3"], 36;
    `compact`: ["13-7=6 borrow 1", "8-1-4=3"]."""
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    clauses, borrow, result = [], 0, 0
    for i in range(width):
        top = da[i] - borrow
        shown = (f"{da[i]}-1" if compact else f"{da[i]} - 1") if borrow else f"{da[i]}"
        if top < db[i]:
            out = top + 10 - db[i]
            clauses.append(f"{top + 10}-{db[i]}={out} borrow 1" if compact else
                           f"{PLACES[i]}: {shown} - {db[i]}, borrow: {top + 10} - {db[i]} = {out}")
            borrow = 0 if drop_borrow else 1
        else:
            out = top - db[i]
            clauses.append(f"{shown}-{db[i]}={out}" if compact else f"{PLACES[i]}: {shown} - {db[i]} = {out}")
            borrow = 0
        result += out * 10 ** i
    return clauses, result


def skip_count(a: int, b: int, compact: bool = False) -> tuple[list[str], int]:
    """A product by counting in steps of `a`: 7 * 4 -> ["7, 14, 21, 28"] (`compact`: ["7,14,21,28"]), 28."""
    return [(", " if not compact else ",").join(str(a * k) for k in range(1, b + 1))], a * b


def places(x: int, width: int) -> str:
    """`x` restated digit by digit, highest place first: places(47, 2) -> "4 tens 7 ones";
    places(5, 2) -> "0 tens 5 ones" (the zero a column sum reads)."""
    return " ".join(f"{d} {PLACES[i]}" for i, d in reversed(list(enumerate(_digits(x, width)))))


def restated(a: int, op: str, b: int) -> str:
    """The operands of `a op b` digit by digit at the width the columns use ("" for a product):
    47 + 38 -> "47 is 4 tens 7 ones, 38 is 3 tens 8 ones; "."""
    if op == "*":
        return ""
    width = len(str(max(a, b))) if op == "+" else len(str(a))
    return f"{a} is {places(a, width)}, {b} is {places(b, width)}; "


def step_clauses(a: int, op: str, b: int, *, mistake: bool = False, compact: bool = False
                 ) -> tuple[list[str], int]:
    """The worked clauses of one operation and its result (a forgotten carry or borrow when `mistake`)."""
    if op == "+":
        return add_columns(a, b, drop_carry=mistake, compact=compact)
    if op == "-":
        return sub_columns(a, b, drop_borrow=mistake, compact=compact)
    if op == "*":
        clauses, r = skip_count(a, b, compact)
        return clauses, (r + a if mistake else r)
    raise ValueError(f"unknown arithmetic operator {op!r}; expected one of + - *")


def worked(problem: ArithmeticProblem, rng: random.Random | None = None, *, style: str = "columns",
           opener: str = "", mistake: bool = False) -> str:
    """A worked answer: an optional opener, one block per operation, then "The answer is N.".

    `columns`: "47 + 38: ones: 7 + 8 = 15, write 5, carry 1. tens: ... So 47 + 38 = 85." per step;
    `compact`: "47+38: 7+8=15 carry 1, 4+3+1=8 so 85" per step; `places`: the operands restated digit by
    digit first, then the compact columns: "47 + 38: 47 is 4 tens 7 ones, 38 is 3 tens 8 ones; 7+8=15 carry 1,
    4+3+1=8 so 85". With `mistake`, the last step forgets its
    carry or borrow (a product counts one step too far; a step with nothing to forget slips by ten), so the
    final answer is wrong. `rng` is accepted for callers that draw styles; the answer itself is deterministic."""
    if style not in STYLES:
        raise ValueError(f"unknown worked style {style!r}; expected one of {STYLES}")
    steps = problem.steps()
    wrong_at = len(steps) - 1 if mistake else -1
    lines, acc = ([opener] if opener else []), problem.operands[0]
    for i, (_, op, b, _) in enumerate(steps):
        clauses, r = step_clauses(acc, op, b, mistake=i == wrong_at, compact=style != "columns")
        if i == wrong_at and r == _apply(acc, op, b):
            r += 10      # nothing to forget in this step: a slip of one ten instead
        if style == "columns":
            lines.append(f"{acc} {op} {b}: " + ". ".join(clauses) + f". So {acc} {op} {b} = {r}.")
        elif style == "places":
            lines.append(f"{acc} {op} {b}: {restated(acc, op, b)}" + ", ".join(clauses) + f" so {r}")
        else:
            lines.append(f"{acc}{op}{b}: " + ", ".join(clauses) + f" so {r}")
        acc = r
    return "\n".join(lines + [ANSWER.format(n=acc)])


def demonstration(problem: ArithmeticProblem) -> str:
    """The canonical worked answer of SFT demonstrations: compact style, no opener, no mistake."""
    return worked(problem, style="compact")


def final_answer(text: str) -> int | float | None:
    """The final answer of a completion: the number after the last "answer is" / "answer:" / "####", else
    the last number in the text; None when there is no number. A decimal is read whole, as the `math` reward
    reads it: "0.24" is 0.24 (never equal to an integer answer), "24.0" is 24."""
    found = _MARKED.findall(text) or _NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return int(value) if value.is_integer() else value


def is_correct(text: str, answer: int | str) -> bool:
    got = final_answer(text)
    return got is not None and got == int(str(answer).strip())


def shows_work(text: str) -> bool:
    """The completion works digit by digit (a column clause such as "ones: 7 + 8 = 15"), writes a worked step
    ("6*3: 6,12,18 so 18", "47+38: 7+8=15 carry 1, ... so 85") or goes step by step (two or more "a op b = c"
    equations): not only a bare answer."""
    return (bool(re.search(r"\bones\b|\d+ ?[-+*] ?\d+: .*\bso \d+", text, re.IGNORECASE))
            or len(re.findall(r"\d+ ?[-+*] ?\d+ ?= ?\d+", text)) >= 2)
