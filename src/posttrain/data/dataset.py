"""From validated rows to SFT training sequences, with counts of what was kept, cut and dropped."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .chat import BadRow, Drop, Encoded, encode_sft_row
from .errors import DataError, Problem, Source, files_of, sources_of
from .validate import validate_rows


@dataclass
class Stats:
    kept: int = 0                     # rows that gave at least one sequence
    truncated: int = 0                # kept rows with a sequence cut at max_length
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    sequences: int = 0                # sequences produced (a row with `rejected` gives two)

    def summary(self) -> str:
        """E.g. "kept 98 rows (3 truncated), dropped 2 (empty completion: 2)"."""
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.dropped.items()))
        dropped = sum(self.dropped.values())
        return (f"kept {self.kept} rows ({self.truncated} truncated), dropped {dropped}"
                + (f" ({reasons})" if reasons else ""))


def _encode_failure(src: Source, row: dict, e: Exception) -> Problem:
    if isinstance(e, BadRow):
        return Problem(src, e.field, e.expected, e.found)
    what = "messages" if row.get("messages") is not None else ("prompt" if row.get("prompt") is not None else "text")
    return Problem(src, what, "a row the tokenizer and chat template accept", f"{type(e).__name__}: {e}")


def encode_rows(rows: Sequence[dict], tokenizer, sources: Sequence[Source], *, max_length: int,
                completion_only_loss: bool) -> tuple[list[list[Encoded] | str], Stats, list[Problem]]:
    """Per row: its sequences, or the reason it was dropped; the counts; and the rows that failed."""
    per_row: list[list[Encoded] | str] = []
    stats, problems = Stats(), []
    for row, src in zip(rows, sources):
        try:
            encoded = encode_sft_row(row, tokenizer, max_length=max_length, completion_only_loss=completion_only_loss)
        except Drop as d:
            stats.dropped[d.reason] += 1
            per_row.append(d.reason)
            continue
        except Exception as e:  # jinja2 TemplateError, tokenizer errors: name the row that caused them
            problems.append(_encode_failure(src, row, e))
            per_row.append(f"error: {e}")
            continue
        per_row.append(encoded)
        stats.kept += 1
        stats.sequences += len(encoded)
        stats.truncated += any(x.truncated for x in encoded)
    return per_row, stats, problems


def build_sft_examples(rows: Sequence[dict], tokenizer, *, max_length: int, completion_only_loss: bool = True,
                       source: str | Sequence[Source] | None = None) -> tuple[list[Encoded], Stats]:
    """Validate `rows` as SFT data and tokenise them (`chat.encode_sft_row`). Edge rows are dropped and
    counted in `Stats.dropped`; a row the template or tokenizer rejects (e.g. roles that do not alternate)
    is a data error: all of them are raised together as one `DataError` naming file and line. So is a
    data set with no row left. `source` as in `validate_rows` (default: `rows.sources`). Prints nothing."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    sources = sources_of(rows, source)
    validate_rows(rows, "sft", sources)
    per_row, stats, problems = encode_rows(rows, tokenizer, sources, max_length=max_length,
                                           completion_only_loss=completion_only_loss)
    if problems:
        raise DataError(problems, header=f"{len(problems)} row{'s' if len(problems) != 1 else ''} could not be tokenised")
    examples = [e for r in per_row if not isinstance(r, str) for e in r]
    if rows and not examples:
        raise DataError(f"{files_of(sources)}: no usable row among {len(rows)}: {stats.summary()}")
    return examples, stats
