"""Where a row came from, and the one error that lists every bad row.

`Source(file, line, unit)` names a row: `unit="line"` for JSONL (the 1-based physical line),
`unit="row"` for JSON arrays, Parquet, hub data sets and in-memory lists (the 1-based record index).
`DataError` is a `ValueError` whose message lists up to `MAX_LISTED` bad rows, one per line, as
`file:LINE: field 'F': expected E, found X`, then `... and N more`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

MAX_LISTED = 20


class Source(NamedTuple):
    file: str
    line: int          # 1-based
    unit: str = "line"  # "line" (JSONL physical line) or "row" (record index)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file}[row {self.line}]"


@dataclass(frozen=True)
class Problem:
    """One bad row: where, which field (None = the row as a whole), what was expected, what was found."""
    source: Source
    field: str | None
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"field '{self.field}': " if self.field else ""
        return f"{self.source}: {where}expected {self.expected}, found {self.found}"


class DataError(ValueError):
    """Bad input data. Built from a message, or from `Problem`s (listed, sorted, capped at `MAX_LISTED`)."""

    def __init__(self, problems: Sequence[Problem] | str, header: str | None = None):
        if isinstance(problems, str):
            self.problems: list[Problem] = []
            super().__init__(problems)
            return
        self.problems = sorted(problems, key=lambda p: (p.source.file, p.source.line))
        n = len(self.problems)
        head = header or f"{n} bad row{'s' if n != 1 else ''} in the data"
        lines = [f"{head}:"] + [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        super().__init__("\n".join(lines))


def describe(value) -> str:
    """A short name for what was found: the JSON type, with a hint for empty and null values."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {value}".lower()
    if isinstance(value, str):
        return "str" if value else "empty str"
    if isinstance(value, (int, float)):
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return "list" if value else "empty list"
    if isinstance(value, dict):
        keys = ", ".join(sorted(map(str, value))[:6])
        return f"object with keys [{keys}]"
    return type(value).__name__


def files_of(sources: Sequence[Source]) -> str:
    """The distinct files of `sources`, in order, comma-separated (for messages about a whole data set)."""
    return ", ".join(dict.fromkeys(s.file for s in sources)) or "<rows>"


def sources_of(rows: Sequence[dict], source: str | Sequence[Source] | None = None) -> list[Source]:
    """Per-row sources: an explicit list, else `rows.sources` (from `load_rows`), else `source` or
    "<rows>" as the file name with 1-based record indices."""
    if source is not None and not isinstance(source, str):
        if len(source) != len(rows):
            raise ValueError(f"{len(source)} sources for {len(rows)} rows")
        return list(source)
    own = getattr(rows, "sources", None)
    if own is not None and len(own) == len(rows):
        return list(own)
    name = source or "<rows>"
    return [Source(name, i + 1, "row") for i in range(len(rows))]
