"""CSV rows (optionally gzipped, with a header), read fast and, when needed, carefully.

- fast: one ``pandas.read_csv`` (C parser), no per-row Python. Rows carry no line numbers:
  blank lines and quoted newlines make the row -> line mapping unknowable without a scan.
  Any problem (a bad value, unsorted rows, a parser error, a possibly short row) raises
  :class:`NeedCareful` and the reader starts again carefully.
- careful: a scan with Python's ``csv`` module records where each record starts (as a
  compact :class:`LineMap`) and which records have the wrong number of fields; the values
  still come from ``pandas.read_csv``, as the strings written (so messages quote them) and
  with spare columns (so long rows cannot break it), aligned record for record. Memory stays
  near that of the fast pass. Should the two disagree on the record count (never seen),
  every value is read by the ``csv`` module instead.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workloads.errors import TraceFormatError
from workloads.readers._common import (
    LineMap,
    NeedCareful,
    Rows,
    empty,
    first_record,
    is_gzip,
    missing_columns,
    open_text,
)

__all__ = ["read_csv_rows"]


def _blank(rec: list[str]) -> bool:
    return not rec or (len(rec) == 1 and not rec[0].strip())  # pandas skips these lines


def _pandas(path: str, text_columns: Sequence[str], **kw) -> pd.DataFrame:
    with warnings.catch_warnings():  # mixed types: the checks report the bad values
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        return pd.read_csv(path, engine="c", skipinitialspace=True,
                           compression="gzip" if is_gzip(path) else None,
                           dtype={c: str for c in text_columns} or None, **kw)


def read_csv_rows(path: str | Path, needed: Sequence[str], *, careful: bool = False,
                  text_columns: Sequence[str] = ()) -> Rows:
    """Rows of a CSV file whose header holds the ``needed`` columns; ``text_columns`` are
    kept as strings. ``careful=False`` raises NeedCareful rather than guess a line."""
    path = str(path)
    first = first_record(path)
    if first is None:
        raise empty(path)
    if careful:
        return _careful(path, needed)
    try:
        df = _pandas(path, text_columns)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
        raise NeedCareful from None
    header = [str(c).strip() for c in df.columns]
    missing_columns(path, header, first[0], needed)
    if type(df.index) is not pd.RangeIndex or (len(df) and df.iloc[:, -1].isna().any()):
        raise NeedCareful  # rows with extra fields (taken as an index) or maybe too few
    df.columns = header
    return Rows(path, {c: df[c] for c in header}, len(df), header, first[0])


class _Scan:
    """Header, record count, line offsets and field-count problems of a CSV file."""

    def __init__(self, path: str) -> None:
        self.header: list[str] = []
        self.header_line = 0
        self.n = 0
        self.max_fields = 0
        starts: list[int] = []
        offsets: list[int] = []
        bad: list[int] = []
        self.first_bad = ""
        with open_text(path) as f:
            reader = csv.reader(f, skipinitialspace=True)
            start, offset, width = 1, None, 0
            try:
                for rec in reader:
                    if _blank(rec):
                        start = reader.line_num + 1
                        continue
                    if not self.header_line:
                        self.header = [h.strip() for h in rec]
                        self.header_line, width = start, len(rec)
                    else:
                        if start - self.n != offset:
                            offset = start - self.n
                            starts.append(self.n)
                            offsets.append(offset)
                        if len(rec) != width:
                            bad.append(self.n)
                            self.max_fields = max(self.max_fields, len(rec))
                            self.first_bad = self.first_bad or (
                                f"expected {width} fields as in the header, got "
                                f"{len(rec)}: {rec!r}")
                        self.n += 1
                    start = reader.line_num + 1
            except csv.Error as e:
                raise TraceFormatError(path, reader.line_num, None, f"CSV syntax: {e}") from None
        self.lines = LineMap(starts, offsets)
        self.bad = np.asarray(bad, dtype=np.int64)


def _careful(path: str, needed: Sequence[str]) -> Rows:
    scan = _Scan(path)
    if not scan.header_line:
        raise empty(path)
    header = scan.header
    missing_columns(path, header, scan.header_line, needed)
    broken = (scan.bad, scan.first_bad) if len(scan.bad) else None
    if scan.n == 0:
        return Rows(path, {c: pd.Series([], dtype=object) for c in header}, 0, header,
                    scan.header_line, scan.lines)
    extra = [f"\0extra{k}" for k in range(max(0, scan.max_fields - len(header)))]
    try:
        df = _pandas(path, header + extra, header=None, names=header + extra,
                     skiprows=scan.header_line, index_col=False, keep_default_na=False,
                     na_values=[""])  # values as written, so messages quote them
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
        df = None
    if df is None or len(df) != scan.n:
        return _python(path, scan, broken)
    return Rows(path, {c: df[c] for c in header}, scan.n, header, scan.header_line,
                scan.lines, broken)


def _python(path: str, scan: _Scan, broken: tuple[np.ndarray, str] | None) -> Rows:
    """Every value as a string, through the ``csv`` module (the last resort)."""
    values: list[list[str | None]] = [[] for _ in scan.header]
    width = len(scan.header)
    with open_text(path) as f:
        seen_header = False
        for rec in csv.reader(f, skipinitialspace=True):
            if _blank(rec):
                continue
            if not seen_header:
                seen_header = True
                continue
            if len(rec) != width:
                rec = [""] * width
            for col, v in zip(values, rec, strict=True):
                v = v.strip()
                col.append(v if v else None)
    cols = {h: pd.Series(v, dtype=object) for h, v in zip(scan.header, values, strict=True)}
    return Rows(path, cols, scan.n, scan.header, scan.header_line, scan.lines, broken)
