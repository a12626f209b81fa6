"""``math`` and ``exact_match`` rewards: the completion's final answer against the ``answer`` column.

The final answer is the content of the last ``<answer>…</answer>`` (unwrapping a ``\\boxed{}`` inside
it), else of the last ``\\boxed{…}`` (nested braces allowed), else what follows the last ``#### ``
on its line (GSM8K style). The gold ``answer`` goes through the same extraction (a GSM8K solution
ending in ``#### 72`` gives ``72``) and is used whole when nothing matches.

- ``math``: equivalence by math-verify (``\\frac{1}{2}`` = ``0.5``, ``1,000`` = ``1000``,
  ``x^2+1`` = ``1+x^2``) in worker processes with a wall-clock timeout (``timed_pool``), so it works
  from any thread. 1.0 equal, 0.0 different or no final answer; None when the gold answer is missing
  or unparsable, on timeout, or when the worker fails.
- ``exact_match``: 1.0 when the normalised strings are equal (see ``normalize_answer``), else 0.0;
  None when the gold answer is missing.
"""
from __future__ import annotations

import re

from posttrain.rewards.timed_pool import shared_pool

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_HASHES = re.compile(r"####[ \t]*([^\n]*)")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed")
    while start >= 0:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j]
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_final_answer(text: str) -> str | None:
    """The final answer of ``text`` (see the module docstring), stripped; None when there is none."""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        inner = tags[-1]
        found = _last_boxed(inner)
        found = (found if found is not None else inner).strip()
        return found or None
    found = _last_boxed(text)
    if found is None:
        hashes = _HASHES.findall(text)
        found = hashes[-1] if hashes else None
    found = None if found is None else found.strip()
    return found or None


def _gold_of(answer) -> str | None:
    if answer is None:
        return None
    text = str(answer)
    gold = extract_final_answer(text)
    return gold if gold is not None else (text.strip() or None)


def _answers(columns: dict, n: int, reward: str) -> list:
    if "answer" not in columns:
        raise ValueError(f"the {reward!r} reward needs an 'answer' column; columns given: {sorted(columns)}")
    answers = columns["answer"]
    if len(answers) != n:
        raise ValueError(f"{reward!r} reward: {n} completions but {len(answers)} answers")
    return answers


class MathReward:
    name = "math"

    def __init__(self, *, timeout: float = 5.0, workers: int = 1, last_number: bool = False):
        """``timeout``: seconds per row; ``workers``: verifier processes (shared per process);
        ``last_number``: with no tagged, boxed or ``####`` answer, take the completion's last number
        (lm-eval's "flexible extract"; lets a model that never learnt the format score)."""
        self.timeout = float(timeout)
        self.last_number = last_number
        self.pool = shared_pool("posttrain.rewards.math_check:answers_match", workers)

    def score_one(self, completion: str, answer) -> float | None:
        gold = _gold_of(answer)
        if gold is None:
            return None
        predicted = extract_final_answer(completion)
        if predicted is None and self.last_number:
            numbers = _ANY_NUMBER.findall(completion)
            predicted = numbers[-1].replace(",", "") if numbers else None
        if predicted is None:
            return 0.0
        status, value = self.pool.call([gold, predicted], self.timeout)
        if status != "ok" or value is None:
            return None
        return 1.0 if value else 0.0

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        answers = _answers(columns, len(completions), self.name)
        return [self.score_one(c, a) for c, a in zip(completions, answers)]


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_ANY_NUMBER = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    """Lower case; ``\\text{x}`` -> ``x``; no ``$``, no surrounding spaces or final ``.``; single
    spaces; ``1,000`` -> ``1000``; numbers without a leading ``+`` or trailing zeros (``2.50`` -> ``2.5``)."""
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", text).replace("$", "").strip().rstrip(".").strip().lower()
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    if _NUMBER.match(s):
        s = s.lstrip("+")
        if "." in s:
            s = s.rstrip("0").rstrip(".") or "0"
    return s


class ExactMatchReward:
    name = "exact_match"

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        answers = _answers(columns, len(completions), self.name)
        out: list[float | None] = []
        for completion, answer in zip(completions, answers):
            gold = _gold_of(answer)
            predicted = extract_final_answer(completion)
            if gold is None:
                out.append(None)
            else:
                out.append(float(predicted is not None and normalize_answer(predicted) == normalize_answer(gold)))
        return out
