"""Answer equivalence with math-verify; runs inside a ``TimedPool`` worker (see ``math.py``).

math-verify's own timeouts use ``signal.alarm`` (main thread only); they are switched off here
(``parsing_timeout=None``, ``timeout_seconds=None``) because the pool's wall-clock timeout kills
the whole worker instead, which works whatever thread the reward is called from.
"""
from __future__ import annotations

import logging

from math_verify import parse, verify

logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout is disabled" notice


def _parse(text: str) -> list:
    """Parse a bare final answer: as the content of ``\\boxed{}`` first (so ``x^2+1``, ``\\frac12``
    and ``1,000`` read as maths), then as free text."""
    return parse("\\boxed{" + text + "}", parsing_timeout=None) or parse(text, parsing_timeout=None)


def answers_match(gold: str, predicted: str) -> bool | None:
    """True/False, or None when the gold answer itself cannot be parsed (the row is unscorable)."""
    gold_parsed = _parse(gold)
    if not gold_parsed:
        return None
    pred_parsed = _parse(predicted)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
