"""Load TRL-format rows from JSONL / JSON / Parquet files, folders, lists of those, or a hub data set.

Provenance convention: `load_rows` returns `Rows`, a plain `list[dict]` subclass whose `sources`
attribute is a parallel list of `Source(file, line, unit)` (see `errors.py`). The row dicts themselves
are left exactly as read (no hidden keys), so they pass through to TRL, `datasets.Dataset.from_list`
or a chat template unchanged. Slicing a `Rows` gives a plain list; use `rows.subset(indices)` to keep
the sources.

Readers: JSONL (and `.json` files holding JSON lines or a single object) are parsed here, line by
line, so a malformed line is reported with its file and 1-based line and each row stays as written
(an Arrow loader would unify the schema across rows, filling absent keys with null and failing with
a deep traceback on a column whose type varies between rows). JSON arrays, Parquet and hub data sets
go through Hugging Face `datasets`; its failures are re-raised as `DataError` naming the spec.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

from .errors import DataError, Problem, Source, describe
from .validate import row_problems, validate_rows

__all__ = ["DataError", "Rows", "Source", "load_rows", "validate_rows", "SUFFIXES"]

SUFFIXES = (".jsonl", ".json", ".parquet")


class Rows(list):
    """`list[dict]` of rows plus `sources`: the `Source` of each row, index for index."""

    def __init__(self, rows: Iterable[dict] = (), sources: Iterable[Source] = ()):
        super().__init__(rows)
        self.sources: list[Source] = list(sources)
        if len(self.sources) != len(self):
            raise ValueError(f"{len(self.sources)} sources for {len(self)} rows")

    def subset(self, indices: Sequence[int]) -> "Rows":
        return Rows([self[i] for i in indices], [self.sources[i] for i in indices])


def _looks_like_path(spec: str) -> bool:
    return os.path.exists(spec) or spec.endswith(SUFFIXES) or spec.startswith((".", "/", "~"))


def expand_spec(spec: str | os.PathLike | Sequence) -> list[tuple[str, str]]:
    """[(kind, name)] with kind "file" (an existing data file) or "hub"; folders become their data
    files, sorted. A missing path or a folder without data files is a `DataError`."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise DataError("empty list of data sources")
        return [item for s in spec for item in expand_spec(s)]
    spec = os.path.expanduser(os.fspath(spec))
    if spec.startswith("builtin:"):
        raise DataError(f"'{spec}' is a lab name: the posttrain CLI resolves it when it loads the config; from "
                        "Python call posttrain.lab.builtin.resolve_config(cfg) (or resolve(spec)) first")
    if not _looks_like_path(spec):
        return [("hub", spec)]
    if os.path.isdir(spec):
        files = sorted(f for f in os.listdir(spec) if f.endswith(SUFFIXES) and not f.startswith("."))
        if not files:
            raise DataError(f"{spec}: folder has no {'/'.join(SUFFIXES)} files")
        return [("file", os.path.join(spec, f)) for f in files]
    if not os.path.isfile(spec):
        raise DataError(f"{spec}: no such file or folder")
    if not spec.endswith(SUFFIXES):
        raise DataError(f"{spec}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
    return [("file", spec)]


def read_jsonl(path: str) -> tuple[list[dict], list[Source], list[Problem]]:
    """Rows, their sources, and one `Problem` per line that is not a JSON object (blank lines skipped).
    A UTF-8 byte-order mark at the start of the file (Windows exports) is ignored."""
    rows, sources, problems = [], [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            src = Source(path, number)
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                problems.append(Problem(src, None, "UTF-8 text", f"invalid byte at column {e.start + 1}"))
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(Problem(src, None, "a JSON object", f"invalid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(obj, dict):
                problems.append(Problem(src, None, "a JSON object", describe(obj)))
                continue
            rows.append(obj)
            sources.append(src)
    return rows, sources, problems


def _load_with_datasets(builder: str, target: str, split: str) -> list[dict]:
    import datasets

    try:
        if builder == "hub":
            ds = datasets.load_dataset(target, split=split)
        else:
            ds = datasets.load_dataset(builder, data_files=target, split="train")
    except Exception as e:  # any loader failure becomes one error that names the spec
        what = (f"{target!r} as a hub data set (split {split!r}; it is no local path either)"
                if builder == "hub" else target)
        raise DataError(f"could not load {what} with datasets: {type(e).__name__}: {e}") from e
    return ds.to_list()


def _starts_with_array(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _read_one(kind: str, name: str, split: str) -> tuple[list[dict], list[Source], list[Problem]]:
    if kind == "hub":
        rows = _load_with_datasets("hub", name, split)
        return rows, [Source(name, i + 1, "row") for i in range(len(rows))], []
    if name.endswith(".parquet") or (name.endswith(".json") and _starts_with_array(name)):
        rows = _load_with_datasets("parquet" if name.endswith(".parquet") else "json", name, split)
        return rows, [Source(name, i + 1, "row") for i in range(len(rows))], []
    return read_jsonl(name)


def load_rows(spec: str | os.PathLike | Sequence, *, split: str = "train", kind: str | None = None) -> Rows:
    """Rows of every source in `spec` (a file, a folder, a list of those, or a hub data set name), in
    order. `split` applies to hub data sets only (files are read whole). With `kind` ("sft",
    "preference", "prompt") the rows are also validated, and unreadable lines and bad rows are reported
    together in ONE `DataError`; without it, unreadable lines alone raise."""
    all_rows, all_sources, problems = [], [], []
    for source_kind, name in expand_spec(spec):
        rows, sources, bad = _read_one(source_kind, name, split)
        all_rows += rows
        all_sources += sources
        problems += bad
    if kind is not None:
        problems += row_problems(all_rows, kind, all_sources)
    if not all_rows and not problems:
        raise DataError(f"{_spec_name(spec)}: no rows")
    if problems:
        raise DataError(problems, header=f"{len(problems)} bad row{'s' if len(problems) != 1 else ''} in "
                                         f"{_spec_name(spec)}" + (f" ({kind!r} data)" if kind else ""))
    return Rows(all_rows, all_sources)


def _spec_name(spec) -> str:
    return ", ".join(map(os.fspath, spec)) if isinstance(spec, (list, tuple)) else os.fspath(spec)
