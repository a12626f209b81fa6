"""A human-readable view of what SFT trains on: a few rows as tokenised text with the trained tokens
marked, and the counts of rows kept, truncated and dropped (with reasons).

Marks: trained tokens of a positive sequence are wrapped in `[[...]]`, penalised tokens of a negative
(unlikelihood) sequence in `[-...-]`; with `color=True` (default: when stdout is a terminal) they are
shown green and red instead. Special tokens and newlines appear as the tokenizer decodes them.
"""
from __future__ import annotations

import sys
from typing import Sequence

from .chat import Encoded
from .dataset import encode_rows
from .errors import Source, sources_of
from .validate import validate_rows

GREEN, RED, RESET = "\033[42;30m", "\033[41;30m", "\033[0m"


def marked_text(example: Encoded, tokenizer, *, color: bool = False) -> str:
    """The decoded sequence with runs of masked tokens marked."""
    if color:
        opening, closing = (RED, RESET) if example.negative else (GREEN, RESET)
    else:
        opening, closing = ("[-", "-]") if example.negative else ("[[", "]]")
    out, run, state = [], [], 0
    for token, m in zip(example.input_ids + [None], example.mask + [-1]):
        if m != state and run:
            text = tokenizer.decode(run)
            out.append(f"{opening}{text}{closing}" if state == 1 else text)
            run = []
        run.append(token)
        state = m
    return "".join(out)


def _row_report(index: int, src: Source, result, tokenizer, color: bool) -> list[str]:
    if isinstance(result, str):
        return [f"--- row {index + 1} ({src}): dropped: {result}"]
    lines = []
    for e in result:
        kind = "negative" if e.negative else "positive"
        cut = ", truncated" if e.truncated else ""
        lines.append(f"--- row {index + 1} ({src}): {kind}, {len(e.input_ids)} tokens, {sum(e.mask)} marked{cut}")
        lines.append(marked_text(e, tokenizer, color=color))
    return lines


def inspect_rows(rows: Sequence[dict], tokenizer, *, max_length: int, completion_only_loss: bool = True, n: int = 3,
                 color: bool | None = None, source: str | Sequence[Source] | None = None) -> str:
    """Report on SFT `rows`: the first `n` rows tokenised with their trained tokens marked, then the
    counts. Bad rows raise `DataError` as in training (validation happens first)."""
    color = sys.stdout.isatty() if color is None else color
    sources = sources_of(rows, source)
    validate_rows(rows, "sft", sources)
    per_row, stats, problems = encode_rows(rows, tokenizer, sources, max_length=max_length,
                                           completion_only_loss=completion_only_loss)
    legend = "green = trained, red = penalised" if color else "[[trained]] [-penalised (negative)-]"
    lines = [f"{len(rows)} rows, max_length={max_length}, completion_only_loss={completion_only_loss}; {legend}"]
    for i in range(min(n, len(rows))):
        lines += _row_report(i, sources[i], per_row[i], tokenizer, color)
    lines.append(f"=== {stats.summary()}; {stats.sequences} sequences")
    if problems:
        lines.append(f"=== {len(problems)} rows could not be tokenised, e.g. {problems[0]}")
    return "\n".join(lines)
