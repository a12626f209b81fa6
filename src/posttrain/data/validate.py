"""Row-format checks for TRL-style rows, reporting every bad row at once (`DataError`).

Kinds and the rows they accept (a column that is absent and a column that is null count the same,
because Arrow-backed loaders fill a column missing from some rows with null):

- `sft`: `messages`; or `prompt` + `completion` (both str, or both message lists); or `text`.
  Optional `rejected` (a negative completion of the same type as `completion`) and `label`
  (bool; false = the row's completion is a negative example).
- `preference`: `prompt` + `chosen` + `rejected` (all str, or all message lists); or implicit prompt:
  `chosen` + `rejected` message lists sharing at least their first message; or a ranking: `prompt` +
  `responses` (>= 2, best first; str, or message lists when the prompt is messages). Optional `margin`.
- `prompt`: `prompt` as str or message list; any other columns (`answer`, `tests`, ...) pass through.
- `unpaired` (KTO): `prompt` + `completion` (both str, or both message lists) + `label` (bool, required:
  true = a desirable completion).

A message is an object with a str `role` and a str `content` (content may be null on a message that
carries `tool_calls`). In every kind, a number that is not finite (NaN, Infinity: Python's JSON reader
accepts them) in any column is a row error naming the column.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from .errors import DataError, Problem, Source, describe, sources_of

MSGS = "a list of {role, content} messages"
STR_OR_MSGS = "a str or " + MSGS
Check = tuple[str | None, str, str]  # (field, expected, found)


def present(row: dict, key: str) -> bool:
    return row.get(key) is not None


def _found(row: dict, key: str) -> str:
    return describe(row[key]) if key in row else "missing"


def messages_problem(value) -> str | None:
    """None when `value` is a non-empty list of messages, else a description of what is wrong."""
    if not isinstance(value, list):
        return describe(value)
    if not value:
        return "empty list"
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return f"a list whose item {i} is {describe(m)}"
        if not isinstance(m.get("role"), str):
            return f"a list whose item {i} has role {describe(m.get('role')) if 'role' in m else 'missing'}"
        content = m.get("content")
        if not isinstance(content, str) and not (content is None and m.get("tool_calls")):
            return f"a list whose item {i} has content {describe(content) if 'content' in m else 'missing'}"
    return None


def _same_type(row: dict, key: str, like_messages: bool) -> Check | None:
    """`row[key]` must be a message list when `like_messages`, else a str."""
    value = row[key]
    if like_messages:
        bad = messages_problem(value)
        return (key, MSGS + " (like 'prompt')", bad) if bad else None
    return None if isinstance(value, str) else (key, "a str (like 'prompt')", describe(value))


def _text_or_messages(row: dict, key: str) -> Check | None:
    if not present(row, key):
        return key, STR_OR_MSGS, _found(row, key)
    value = row[key]
    if isinstance(value, str):
        return None
    bad = messages_problem(value)
    return (key, STR_OR_MSGS, bad) if bad else None


def check_sft(row: dict) -> Check | None:
    if present(row, "label") and not isinstance(row["label"], bool):
        return "label", "a bool (false = negative example)", describe(row["label"])
    if present(row, "messages"):
        bad = messages_problem(row["messages"])
        if bad:
            return "messages", MSGS, bad
        if present(row, "rejected"):
            return "rejected", "a 'prompt' + 'completion' row (rejected goes with completion)", "'messages'"
        return None
    if present(row, "prompt") or present(row, "completion"):
        if not present(row, "completion"):
            return "completion", "a str or messages to go with 'prompt'", _found(row, "completion")
        bad = _text_or_messages(row, "prompt")
        if bad:
            return bad
        conversational = not isinstance(row["prompt"], str)
        for key in ("completion", "rejected"):
            if present(row, key) and (bad := _same_type(row, key, conversational)):
                return bad
        return None
    if present(row, "text"):
        return None if isinstance(row["text"], str) else ("text", "a str", describe(row["text"]))
    return None, "one of 'messages', 'prompt' + 'completion' or 'text'", describe(row)


def _check_ranking(row: dict) -> Check | None:
    bad = _text_or_messages(row, "prompt")
    if bad:
        return bad
    responses, conversational = row["responses"], not isinstance(row["prompt"], str)
    want = "a list of >= 2 " + ("message lists" if conversational else "str") + " responses, best first"
    if not isinstance(responses, list) or len(responses) < 2:
        return "responses", want, describe(responses) if not isinstance(responses, list) else f"{len(responses)} item(s)"
    for i, r in enumerate(responses):
        ok = messages_problem(r) is None if conversational else isinstance(r, str)
        if not ok:
            return "responses", want, f"a list whose item {i} is {describe(r)}"
    return None


def _check_implicit(row: dict) -> Check | None:
    for key in ("chosen", "rejected"):
        if not present(row, key):
            return key, "a message list (or give 'prompt')", _found(row, key)
        if isinstance(row[key], str):
            return "prompt", "a 'prompt' column when 'chosen'/'rejected' are str", "missing"
        bad = messages_problem(row[key])
        if bad:
            return key, MSGS, bad
    if row["chosen"][0] != row["rejected"][0]:
        return "rejected", "to share its first message(s) with 'chosen' (the implicit prompt)", "a different first message"
    return None


def check_preference(row: dict) -> Check | None:
    if present(row, "margin") and (isinstance(row["margin"], bool) or not isinstance(row["margin"], (int, float))):
        return "margin", "a number", describe(row["margin"])
    if present(row, "responses"):
        return _check_ranking(row)
    if not present(row, "prompt"):
        return _check_implicit(row)
    bad = _text_or_messages(row, "prompt")
    if bad:
        return bad
    conversational = not isinstance(row["prompt"], str)
    for key in ("chosen", "rejected"):
        if not present(row, key):
            return key, MSGS if conversational else "a str", _found(row, key)
        if bad := _same_type(row, key, conversational):
            return bad
    return None


def _nonfinite_at(value, path: str) -> tuple[str, float] | None:
    """(where, value) of the first non-finite float in `value` (a number, or lists/objects of them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, list):
        items = enumerate(value)
        fmt = "{}[{}]"
    elif isinstance(value, dict):
        items = value.items()
        fmt = "{}.{}"
    else:
        return None
    for k, v in items:
        if (hit := _nonfinite_at(v, fmt.format(path, k))) is not None:
            return hit
    return None


def check_finite(row: dict) -> Check | None:
    for key, value in row.items():
        if (hit := _nonfinite_at(value, str(key))) is not None:
            return hit[0], "a finite number", str(hit[1])
    return None


def check_prompt(row: dict) -> Check | None:
    return _text_or_messages(row, "prompt")


def check_unpaired(row: dict) -> Check | None:
    if not present(row, "label"):
        return "label", "true or false (unpaired rows: prompt, completion, label)", _found(row, "label")
    if not isinstance(row["label"], bool):
        return "label", "a bool (true = desirable completion)", describe(row["label"])
    bad = _text_or_messages(row, "prompt")
    if bad:
        return bad
    if not present(row, "completion"):
        return "completion", "a str or messages to go with 'prompt'", _found(row, "completion")
    return _same_type(row, "completion", not isinstance(row["prompt"], str))


CHECKS: dict[str, Callable[[dict], Check | None]] = {
    "sft": check_sft, "preference": check_preference, "prompt": check_prompt, "unpaired": check_unpaired,
}


def row_problems(rows: Sequence, kind: str, sources: Sequence[Source]) -> list[Problem]:
    """Every bad row of `rows` (the first problem of each) as `Problem`s."""
    if kind not in CHECKS:
        raise ValueError(f"unknown row kind {kind!r}; expected one of {sorted(CHECKS)}")
    check, out = CHECKS[kind], []
    for row, src in zip(rows, sources):
        bad = (check_finite(row) or check(row)) if isinstance(row, dict) else (None, "a JSON object", describe(row))
        if bad:
            out.append(Problem(src, *bad))
    return out


def validate_rows(rows: Sequence[dict], kind: str, source: str | Sequence[Source] | None = None) -> None:
    """Raise one `DataError` listing every bad row. `source`: a list of per-row `Source`s, or a name
    for the data (rows then numbered 1..n); by default `rows.sources` as set by `load_rows`."""
    problems = row_problems(rows, kind, sources_of(rows, source))
    if problems:
        raise DataError(problems, header=f"{len(problems)} bad row{'s' if len(problems) != 1 else ''} "
                                         f"for {kind!r} data")
