"""Rows of JSONL / Parquet files (and the shared :class:`Rows`, for CSV too), with exact
line numbers when they are needed.

A file is read into :class:`Rows`: raw columns by name plus where each row came from. Line
numbers are 1-based physical lines as an editor shows them (the CSV header is line 1, blank
lines count; for ``.gz`` files, lines of the decompressed text). CSV is read fast first and
carefully only when a problem needs a line (see ``_csv``); JSONL is always read carefully
(one ``json.loads`` per line). Parquet has no lines: its "line" is the 1-based row number.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pandas as pd

from workloads.errors import TraceFormatError

__all__ = ["LineMap", "NeedCareful", "Rows", "empty", "fast_then_careful", "file_kind",
           "first_record",
           "is_gzip", "missing_columns", "open_text", "read_jsonl_rows", "read_parquet_rows",
           "trace_name"]

T = TypeVar("T")


class NeedCareful(Exception):
    """The fast pass met a problem: re-read carefully to name its line."""


def fast_then_careful(read: Callable[[bool], T]) -> T:
    """``read(False)``, or ``read(True)`` when the fast pass asks for care. The second call
    happens outside the ``except`` block, so the first pass's frames (and memory) are gone."""
    try:
        return read(False)
    except NeedCareful:
        pass
    return read(True)


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_text(path: str | Path) -> IO[str]:
    """The file as text (UTF-8, BOM dropped), transparently gunzipped; newlines untranslated."""
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def file_kind(path: str | Path) -> str:
    """``parquet``, ``jsonl`` or ``csv``: by extension (``.gz`` aside), else by content."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".txt"):
        return "csv"
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    first = first_record(path)
    return "jsonl" if first is not None and first[1].lstrip().startswith("{") else "csv"


def trace_name(path: str | Path) -> str:
    """The file stem: ``data/conv.csv.gz`` -> ``conv``."""
    name = Path(path).name
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).stem or name


def first_record(path: str | Path) -> tuple[int, str] | None:
    """(line number, text) of the first non-blank line, or None for an empty file."""
    with open_text(path) as f:
        for lineno, text in enumerate(f, 1):
            if text.strip():
                return lineno, text.rstrip("\r\n")
    return None


class LineMap:
    """Row -> physical line for files where most rows follow each other: stores only the
    rows where the offset (line - row) changes (after blank lines or multi-line fields)."""

    def __init__(self, rows: Sequence[int], offsets: Sequence[int]) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __getitem__(self, row: int) -> int:
        k = int(np.searchsorted(self.rows, row, side="right")) - 1
        return row + int(self.offsets[k])


@dataclass
class Rows:
    """Raw columns of one file. ``lines[i]`` is row i's physical line (None in the fast
    pass: asking for it raises :class:`NeedCareful`). ``broken``: the rows whose structure
    is wrong (bad field count, invalid JSON) and the first one's message."""

    path: str
    columns: dict[str, pd.Series]
    n: int
    header: list[str]
    header_line: int | None = None
    lines: np.ndarray | LineMap | None = None
    broken: tuple[np.ndarray, str] | None = None
    kind: str = "csv"

    @property
    def careful(self) -> bool:
        return self.lines is not None

    def line(self, row: int) -> int:
        if self.lines is None:
            raise NeedCareful
        return int(self.lines[row])


def missing_columns(path: str, header: list[str], header_line: int | None,
                     needed: Sequence[str], what: str = "column") -> None:
    for col in needed:
        if col not in header:
            shown = ", ".join(repr(h) for h in header) or "(none)"
            where = "the first record's keys" if what == "key" else "the columns"
            raise TraceFormatError(path, header_line, col,
                                   f"required {what} is missing; {where} are: {shown}")


def empty(path: str) -> TraceFormatError:
    return TraceFormatError(path, None, None, "no requests: the file is empty")


def read_jsonl_rows(path: str | Path, keys: Sequence[str], *, needed: Sequence[str] = ()
                    ) -> Rows:
    """JSON Lines (optionally gzipped): one object per non-blank line; ``keys`` are kept.
    A key listed in ``needed`` that the first record lacks is a missing column."""
    path = str(path)
    values: list[list[Any]] = [[] for _ in keys]
    lines: list[int] = []
    broken: list[int] = []
    first_broken = ""
    header: list[str] | None = None
    header_line = None
    with open_text(path) as f:
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            problem = ""
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problem = f"invalid JSON ({e.msg} at column {e.pos + 1}): {_clip(text)!r}"
                obj = {}
            if not isinstance(obj, dict):
                problem = f"expected a JSON object, got {_clip(text)!r}"
                obj = {}
            if problem:
                first_broken = first_broken or problem
                broken.append(len(lines))
            if header is None and obj:
                header, header_line = list(obj), lineno
                missing_columns(path, header, lineno, needed, "key")
            for col, k in zip(values, keys, strict=True):
                col.append(obj.get(k))
            lines.append(lineno)
    if not lines:
        raise empty(path)
    cols = {k: pd.Series(v, dtype=object) for k, v in zip(keys, values, strict=True)}
    return Rows(path, cols, len(lines), header or [], header_line,
                np.asarray(lines, dtype=np.int64),
                (np.asarray(broken, dtype=np.int64), first_broken) if broken else None,
                kind="jsonl")


def read_parquet_rows(path: str | Path, needed: Sequence[str], wanted: Sequence[str]) -> Rows:
    """Parquet: the ``wanted`` columns (``needed`` ones must exist); line = 1-based row."""
    import pyarrow.parquet as pq

    path = str(path)
    header = list(pq.read_schema(path).names)
    missing_columns(path, header, None, needed)
    df = pd.read_parquet(path, columns=[c for c in dict.fromkeys(wanted) if c in header])
    return Rows(path, {c: df[c].reset_index(drop=True) for c in df.columns}, len(df),
                header, None, np.arange(1, len(df) + 1, dtype=np.int64), kind="parquet")


def _clip(text: str, limit: int = 80) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= limit else text[:limit] + "..."
