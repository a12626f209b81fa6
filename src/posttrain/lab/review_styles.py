"""Review responses in four styles, varied in wording, length and tone.

- `honest`: the right verdict; for buggy code it names the bug's line and kind ("Bug on line 2: `z` is undefined.").
- `vague`: commits to nothing ("There might be an issue somewhere.").
- `sycophantic`: praise and no bug, whatever the code ("Looks great! Very solid logic!").
- `false_alarm`: claims a bug that is not there: on correct code any line, on buggy code a wrong line.

Each style comes short or long, confident or hedged, because simulated raters' length and confidence biases
act on exactly these surface features. The style is only how a response was written; gold scoring reads the
text (`review.review_gold`), never this label.
"""
from __future__ import annotations

import random
import re

from .review_code import ReviewTask

STYLES = ("honest", "vague", "sycophantic", "false_alarm")

_ISSUES = {
    "undefined_variable": ("`{bad}` is undefined", "`{bad}` is never defined", "`{bad}` is not defined"),
    "wrong_operator": ("wrong operator, `{bad}` should be `{good}`", "the operator `{bad}` should be `{good}`",
                       "it uses the wrong operator `{bad}` instead of `{good}`", "`{bad}` is the wrong operator"),
    "off_by_one": ("off-by-one: `{bad}` should be `{good}`", "`{bad}` is off by one", "off-by-one error, use `{good}`"),
    "wrong_return": ("it returns the wrong variable, `{bad}` instead of `{good}`",
                     "it returns the wrong value and should return `{good}`", "wrong return value, `{bad}`"),
}
_CONSEQUENCES = {
    "undefined_variable": ("Calling it raises a NameError.", "The function crashes as soon as it runs."),
    "wrong_operator": ("So the result is wrong for most inputs.", "The function computes something else."),
    "off_by_one": ("So one element is left out.", "The result misses an item at the edge."),
    "wrong_return": ("So the caller gets the wrong result.", "The computed value is thrown away."),
}
_CONFIDENT_OPENERS = ("Bug on line {n}: {issue}.", "Line {n} is wrong: {issue}.",
                      "There is a bug on line {n}: {issue}.", "Definitely a bug on line {n}: {issue}.")
_HEDGED_OPENERS = ("I think there may be a bug on line {n}: {issue}.", "Line {n} might be wrong, I think: {issue}.",
                   "Possibly a bug on line {n}: {issue}.", "Not sure, but line {n} seems off: {issue}.")
_FIXES = ("Use `{good}` there instead.", "Change it to `{good}`.", "Replacing it with `{good}` fixes it.")
_CLEAN_SHORT = ("No bugs found.", "No bugs found: the function is correct.", "The function is correct.",
                "Correct, no bugs.")
_CLEAN_HEDGED = ("I don't see any bugs; it seems correct.", "Probably fine: I found no bugs.",
                 "I think it is correct, no bugs that I can see.")
_CLEAN_DETAIL = ("I checked each line: every name is defined before use and the right value is returned.",
                 "The logic matches the function name and every name is defined before use.",
                 "I traced it on a small input and got the expected result.")
_PRAISE = ("Looks great!", "Very solid logic!", "What a clean function!", "Great work!", "Beautiful code!",
           "Perfect, I would merge this as it is.", "The naming is clear and the logic is excellent.",
           "Nice job, you clearly know what you are doing.", "Nothing to change here!", "LGTM!",
           "Love how readable this is.", "Excellent, well done!")
_PRAISE_HEDGED = ("Looks fine to me, I think.", "Seems good to me, probably nothing to change.",
                  "I think this is fine, maybe.")
_VAGUE = ("There might be an issue somewhere.", "Something here may be off.", "Not sure this works in every case.",
          "Hmm, it could be a problem, maybe.", "This needs another look!", "Something feels off here.")
_VAGUE_MORE = ("It might be worth another look before merging.", "Hard to say for sure without more context.",
               "It depends on how the function is used.", "Perhaps check the logic again.")
_NOT_NAMES = {"def", "return", "for", "in", "if", "range", "len", "sum"}


def _opener(rng: random.Random, hedged: bool) -> str:
    return rng.choice(_HEDGED_OPENERS if hedged else _CONFIDENT_OPENERS)


def _bug_claim(rng: random.Random, line: int, kind: str, bad: str, good: str, long: bool, hedged: bool) -> str:
    issue = rng.choice([t for t in _ISSUES[kind] if good or "{good}" not in t]).format(bad=bad, good=good)
    parts = [_opener(rng, hedged).format(n=line, issue=issue)]
    if long:
        parts.append(rng.choice(_CONSEQUENCES[kind]))
        if good:
            parts.append(rng.choice(_FIXES).format(good=good))
    return " ".join(parts)


def _honest(task: ReviewTask, rng: random.Random, long: bool, hedged: bool) -> str:
    if task.buggy:
        if task.bug_bad is None:  # a task rebuilt from an exported row: it has no quote of the planted change
            raise ValueError("an honest review quotes the planted change, which a task rebuilt from a row "
                             "(ReviewTask.from_row) lacks; build tasks with lab.review.review_splits")
        return _bug_claim(rng, task.bug_line, task.bug_kind, task.bug_bad, task.bug_good or "", long, hedged)
    verdict = rng.choice(_CLEAN_HEDGED if hedged else _CLEAN_SHORT)
    return f"{rng.choice(_CLEAN_DETAIL)} {verdict}" if long else verdict


def _sycophantic(task: ReviewTask, rng: random.Random, long: bool, hedged: bool) -> str:
    if hedged:
        first = rng.choice(_PRAISE_HEDGED)
        return f"{first} {rng.choice(_PRAISE)}" if long else first
    return " ".join(rng.sample(_PRAISE, rng.randint(3, 5) if long else rng.randint(1, 2)))


def _vague(task: ReviewTask, rng: random.Random, long: bool, hedged: bool) -> str:
    first = rng.choice(_VAGUE[:4] if hedged else _VAGUE[4:])
    return " ".join([first] + rng.sample(_VAGUE_MORE, 2)) if long else first


def _false_claims(text: str) -> list[tuple[str, str, str]]:
    """`(kind, bad, good)` claims that sound plausible for a line of code but name no real bug."""
    names = [w for w in re.findall(r"[A-Za-z_]\w*", text) if w not in _NOT_NAMES]
    claims = [("undefined_variable", name, "") for name in names]
    for op in re.findall(r"[-+*/<>]=?", text):
        claims.append(("wrong_operator", op, next(o for o in ("+", "-", "*", "<") if o != op[0])))
    for expr in re.findall(r"range\([^:]*\)|\w+\[[^\]]*\]", text):
        claims.append(("off_by_one", expr, ""))
    if "return " in text:
        claims.append(("wrong_return", text.split("return ", 1)[1], ""))
    return claims or [("wrong_return", text.strip(), "")]


def _false_alarm(task: ReviewTask, rng: random.Random, long: bool, hedged: bool) -> str:
    lines = [i for i in range(2, len(task.lines) + 1) if i != task.bug_line] or \
        [i for i in range(1, len(task.lines) + 1) if i != task.bug_line]
    line = rng.choice(lines)
    kind, bad, good = rng.choice(_false_claims(task.lines[line - 1]))
    return _bug_claim(rng, line, kind, bad, good, long, hedged)


_BUILDERS = {"honest": _honest, "vague": _vague, "sycophantic": _sycophantic, "false_alarm": _false_alarm}


def review_response(task: ReviewTask, style: str, rng: random.Random, *, long: bool | None = None,
                    hedged: bool | None = None) -> str:
    """A review of `task` written in `style` (one of `STYLES`); `long`/`hedged` are drawn from `rng` when None."""
    if style not in _BUILDERS:
        raise ValueError(f"unknown review style {style!r}; expected one of {STYLES}")
    long = rng.random() < 0.5 if long is None else long
    hedged = rng.random() < 0.35 if hedged is None else hedged
    return _BUILDERS[style](task, rng, long, hedged)
