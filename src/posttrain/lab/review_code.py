"""Code-review tasks: short Python functions, each correct or carrying ONE planted bug of a known kind and line.

The function's name says what it should do (`add`, `max_of`, `sum_items`, ...), so a bug is visible from the
code alone. A template builds the correct lines and, for each bug kind it supports, the 1-based line it
changes, the buggy text of that line, and `(bad, good)`: the wrong token and the right one, which honest
reviews quote. Line 1 is always the `def` line; bugs are on later lines.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .sampling import draw_distinct

BUG_KINDS = ("undefined_variable", "wrong_operator", "off_by_one", "wrong_return")
PROMPT = "Review this code:\n```python\n{code}\n```"

_PARAMS = ("a", "b", "x", "y", "n", "m", "p", "q", "u", "v", "w")
_ACCS = ("total", "result", "acc", "s", "out", "res")
_LISTS = ("xs", "items", "nums", "values", "data", "vals")
_ITEMS = ("x", "v", "item", "num", "e", "val")
_INDICES = ("i", "j", "k", "idx")
_UNDEFINED = ("z", "tmp", "temp", "count", "t", "y2", "num2", "size")


@dataclass(frozen=True)
class ReviewTask:
    """A function to review; `bug_*` are None for correct code. `bug_bad`/`bug_good` quote the planted change."""

    code: str
    bug_kind: str | None = None
    bug_line: int | None = None
    bug_bad: str | None = None
    bug_good: str | None = None

    @property
    def buggy(self) -> bool:
        return self.bug_kind is not None

    @property
    def lines(self) -> list[str]:
        return self.code.split("\n")

    @property
    def prompt(self) -> str:
        return PROMPT.format(code=self.code)

    def prompt_messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]

    def gold(self, response: str) -> float:
        from .review import review_gold

        return review_gold(self, response)

    def gold_fields(self) -> dict:
        """The columns a reward function needs to score a generated review: code, buggy, bug_line, bug_kind."""
        return {"code": self.code, "buggy": self.buggy, "bug_line": self.bug_line, "bug_kind": self.bug_kind}

    @classmethod
    def from_row(cls, row: dict) -> "ReviewTask":
        """Rebuild from an exported row (needs `code`, `bug_kind`, `bug_line`; `buggy` is checked if present)."""
        for key in ("code", "bug_kind", "bug_line"):
            if key not in row:
                raise KeyError(f"review row lacks the gold field {key!r}; has {sorted(row)}")
        task = cls(code=row["code"], bug_kind=row["bug_kind"], bug_line=row["bug_line"])
        if "buggy" in row and bool(row["buggy"]) != task.buggy:
            raise ValueError(f"review row says buggy={row['buggy']} but bug_kind={row['bug_kind']!r}")
        return task


@dataclass(frozen=True)
class _Built:
    lines: tuple[str, ...]
    bugs: dict  # kind -> (line, buggy_line_text, bad, good)


def _pick(rng: random.Random, pool: tuple[str, ...], used: set[str]) -> str:
    name = rng.choice([p for p in pool if p not in used])
    used.add(name)
    return name


def _binary(rng, used, names, op, bad_op):
    f, a, b, r = rng.choice(names), _pick(rng, _PARAMS, used), _pick(rng, _PARAMS, used), _pick(rng, _ACCS, used)
    z = _pick(rng, _UNDEFINED, used)
    lines = (f"def {f}({a}, {b}):", f"    {r} = {a} {op} {b}", f"    return {r}")
    return _Built(lines, {
        "wrong_operator": (2, f"    {r} = {a} {bad_op} {b}", bad_op, op),
        "undefined_variable": (2, f"    {r} = {a} {op} {z}", z, b),
        "wrong_return": (3, f"    return {a}", a, r)})


def _add(rng, used):
    return _binary(rng, used, ("add", "add_two", "plus", "sum_two", "combine"), "+", "-")


def _subtract(rng, used):
    return _binary(rng, used, ("subtract", "minus", "difference", "sub"), "-", "+")


def _double(rng, used):
    f, x, z = rng.choice(("double", "twice", "times_two")), _pick(rng, _PARAMS, used), _pick(rng, _UNDEFINED, used)
    return _Built((f"def {f}({x}):", f"    return {x} * 2"), {
        "wrong_operator": (2, f"    return {x} + 2", "+", "*"),
        "undefined_variable": (2, f"    return {z} * 2", z, x)})


def _extreme(rng, used, names, op, bad_op):
    f, a, b, z = rng.choice(names), _pick(rng, _PARAMS, used), _pick(rng, _PARAMS, used), _pick(rng, _UNDEFINED, used)
    lines = (f"def {f}({a}, {b}):", f"    if {a} {op} {b}:", f"        return {a}", f"    return {b}")
    return _Built(lines, {
        "wrong_operator": (2, f"    if {a} {bad_op} {b}:", bad_op, op),
        "wrong_return": (3, f"        return {b}", b, a),
        "undefined_variable": (4, f"    return {z}", z, b)})


def _max(rng, used):
    return _extreme(rng, used, ("max_of", "larger", "bigger", "maximum"), ">", "<")


def _min(rng, used):
    return _extreme(rng, used, ("min_of", "smaller", "minimum"), "<", ">")


def _fold(rng, used, names, init, op, bad_op):
    f, xs, v = rng.choice(names), _pick(rng, _LISTS, used), _pick(rng, _ITEMS, used)
    acc, z = _pick(rng, _ACCS, used), _pick(rng, _UNDEFINED, used)
    lines = (f"def {f}({xs}):", f"    {acc} = {init}", f"    for {v} in {xs}:", f"        {acc} {op}= {v}",
             f"    return {acc}")
    return _Built(lines, {
        "wrong_operator": (4, f"        {acc} {bad_op}= {v}", f"{bad_op}=", f"{op}="),
        "undefined_variable": (4, f"        {acc} {op}= {z}", z, v),
        "wrong_return": (5, f"    return {v}", v, acc)})


def _sum_list(rng, used):
    return _fold(rng, used, ("sum_list", "total_of", "add_all", "sum_all"), 0, "+", "-")


def _product(rng, used):
    return _fold(rng, used, ("product", "multiply_all", "prod"), 1, "*", "+")


def _indexed(rng, used, names, with_n):
    f, xs, i = rng.choice(names), _pick(rng, _LISTS, used), _pick(rng, _INDICES, used)
    acc, z = _pick(rng, _ACCS, used), _pick(rng, _UNDEFINED, used)
    n = _pick(rng, ("n", "m", "k", "count"), used) if with_n else None
    stop = n if with_n else f"len({xs})"
    head = f"def {f}({xs}, {n}):" if with_n else f"def {f}({xs}):"
    good, bad = f"range({stop})", rng.choice((f"range({stop} - 1)", f"range(1, {stop})"))
    lines = (head, f"    {acc} = 0", f"    for {i} in {good}:", f"        {acc} += {xs}[{i}]", f"    return {acc}")
    return _Built(lines, {
        "off_by_one": (3, f"    for {i} in {bad}:", bad, good),
        "wrong_operator": (4, f"        {acc} -= {xs}[{i}]", "-=", "+="),
        "undefined_variable": (4, f"        {acc} += {z}[{i}]", z, xs),
        "wrong_return": (5, f"    return {i}", i, acc)})


def _sum_items(rng, used):
    return _indexed(rng, used, ("sum_items", "total_items", "add_items"), with_n=False)


def _sum_first(rng, used):
    return _indexed(rng, used, ("sum_first", "total_first", "add_first"), with_n=True)


def _last(rng, used):
    f, xs, z = rng.choice(("last", "last_item", "final")), _pick(rng, _LISTS, used), _pick(rng, _UNDEFINED, used)
    good = f"{xs}[len({xs}) - 1]"
    return _Built((f"def {f}({xs}):", f"    return {good}"), {
        "off_by_one": (2, f"    return {xs}[len({xs})]", f"{xs}[len({xs})]", good),
        "undefined_variable": (2, f"    return {z}[len({xs}) - 1]", z, xs)})


def _first_n(rng, used):
    f, xs = rng.choice(("first_n", "take", "head")), _pick(rng, _LISTS, used)
    n, z = _pick(rng, ("n", "m", "k", "count"), used), _pick(rng, _UNDEFINED, used)
    bad = rng.choice((f"{xs}[:{n} - 1]", f"{xs}[:{n} + 1]"))
    return _Built((f"def {f}({xs}, {n}):", f"    return {xs}[:{n}]"), {
        "off_by_one": (2, f"    return {bad}", bad, f"{xs}[:{n}]"),
        "undefined_variable": (2, f"    return {xs}[:{z}]", z, n)})


def _mean(rng, used):
    f, xs = rng.choice(("mean", "average", "avg")), _pick(rng, _LISTS, used)
    tot, z = _pick(rng, _ACCS, used), _pick(rng, _UNDEFINED, used)
    lines = (f"def {f}({xs}):", f"    {tot} = sum({xs})", f"    return {tot} / len({xs})")
    return _Built(lines, {
        "wrong_operator": (3, f"    return {tot} * len({xs})", "*", "/"),
        "undefined_variable": (3, f"    return {z} / len({xs})", z, tot),
        "wrong_return": (3, f"    return {tot}", tot, f"{tot} / len({xs})")})


TEMPLATES = (_add, _subtract, _double, _max, _min, _sum_list, _product, _sum_items, _sum_first, _last,
             _first_n, _mean)


def make_review_task(rng: random.Random, p_buggy: float = 0.5) -> ReviewTask:
    """A random function from `TEMPLATES`; with probability `p_buggy` one bug, its kind uniform over `BUG_KINDS`."""
    if rng.random() >= p_buggy:
        return ReviewTask("\n".join(rng.choice(TEMPLATES)(rng, set()).lines))
    kind = rng.choice(BUG_KINDS)
    built = rng.choice(TEMPLATES)(rng, set())
    while kind not in built.bugs:
        built = rng.choice(TEMPLATES)(rng, set())
    line, text, bad, good = built.bugs[kind]
    lines = list(built.lines)
    lines[line - 1] = text
    return ReviewTask("\n".join(lines), kind, line, bad, good)


def unique_review_tasks(rng: random.Random, n: int, p_buggy: float = 0.5,
                        exclude: set[str] | None = None) -> list[ReviewTask]:
    """`n` tasks with distinct code, none whose code is in `exclude`."""
    return draw_distinct(lambda: make_review_task(rng, p_buggy), lambda t: t.code, n, "review tasks", exclude)


def review_splits(seed: int, n_train: int, n_eval: int, p_buggy: float = 0.5) -> dict[str, list[ReviewTask]]:
    """`{"train", "eval"}` review tasks with no code in common."""
    rng = random.Random(f"review-{seed}")
    pool = unique_review_tasks(rng, n_train + n_eval, p_buggy)
    return {"train": pool[n_eval:], "eval": pool[:n_eval]}
