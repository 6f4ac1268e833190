"""Vectorised validation of raw columns, and the common tail that builds a Trace.

Each check computes a boolean mask of bad rows per field with numpy / pandas (no Python loop
per row on clean numeric columns); :class:`Checks` keeps the first bad row in file order and
its message. By default the first bad row raises :class:`~workloads.errors.TraceFormatError`
naming file, line and field; with ``skip_bad`` every bad row is dropped and
``meta["skipped_bad_rows"]`` / ``meta["first_bad"]`` say how many and which came first.
Rows dropped on purpose (zero-output rows, filters) are counted in ``meta`` as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from workloads.errors import TraceFormatError
from workloads.readers._common import NeedCareful, Rows
from workloads.trace import Trace

__all__ = ["TIME_UNITS", "Checks", "finish", "float_column", "int_column", "text_column",
           "time_column"]

TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # per second; plus "datetime"
ZERO_OUTPUT = ("error", "skip")


class Checks:
    """Bad rows of one file (masks by field) and rows dropped on purpose (counted)."""

    def __init__(self, rows: Rows, skip_bad: bool) -> None:
        self.rows = rows
        self.skip_bad = skip_bad
        self.bad = np.zeros(rows.n, dtype=bool)
        self.first: tuple[int, str | None, str] | None = None
        self.drops: dict[str, np.ndarray] = {}
        if rows.broken is not None:
            broken, message = rows.broken
            self.flag(None, _at(rows.n, broken), lambda _i: message)

    def flag(self, field: str | None, mask: np.ndarray, describe: Callable[[int], str]) -> None:
        """Mark rows in ``mask`` bad for ``field``; ``describe(row)`` words the problem."""
        if not mask.any():
            return
        if not self.rows.careful:
            raise NeedCareful
        i = int(np.argmax(mask))
        if self.first is None or i < self.first[0]:
            self.first = (i, field, describe(i))
        self.bad |= mask

    def drop(self, key: str, mask: np.ndarray) -> None:
        """Drop rows on purpose (not bad); ``meta[key]`` counts them."""
        self.drops[key] = mask & ~self.bad

    def error(self, row: int, field: str | None, message: str) -> TraceFormatError:
        return TraceFormatError(self.rows.path, self.rows.line(row), field, message)

    def keep(self, meta: dict[str, Any]) -> np.ndarray | None:
        """Rows to keep (None = all); raises on a bad row unless ``skip_bad``."""
        meta["skipped_bad_rows"] = int(self.bad.sum())
        keep = None
        if self.first is not None:
            err = self.error(*self.first)
            if not self.skip_bad:
                raise err
            meta["first_bad"] = str(err)
            keep = ~self.bad
        # filters first: zero-output rows are counted among the requests that were wanted
        for key in sorted(self.drops, key=lambda k: k != "filtered_rows"):
            mask = self.drops[key] & (~self.bad if keep is None else keep)
            meta[key] = int(mask.sum())
            if meta[key]:
                keep = ~mask if keep is None else keep & ~mask
        return keep


def _at(n: int, rows: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


def _raw(s: pd.Series, i: int) -> str:
    v = s.iloc[i]
    return repr(v.item() if isinstance(v, np.generic) else v)


def _numbers(s: pd.Series, careful: bool) -> tuple[np.ndarray, np.ndarray]:
    """(float values with NaN where not a number, missing mask)."""
    if s.dtype.kind in "iuf":
        x = s.to_numpy(dtype=np.float64)
        return x, np.isnan(x)
    if not careful:  # text in a numeric column of a CSV: something is wrong
        raise NeedCareful
    missing = s.isna().to_numpy()
    if s.dtype == object:  # JSON values
        x = np.fromiter((_num(v) for v in s.to_numpy()), dtype=np.float64, count=len(s))
        return x, missing
    try:  # all numbers: a fast cast; else find the bad ones
        x = s.astype(np.float64).to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return x, missing


def _num(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


def _number_checks(chk: Checks, s: pd.Series, field: str) -> tuple[np.ndarray, np.ndarray]:
    x, missing = _numbers(s, chk.rows.careful)
    chk.flag(field, missing, lambda i: "missing value")
    nan = np.isnan(x)
    chk.flag(field, nan & ~missing, lambda i: f"not a number: {_raw(s, i)}")
    inf = np.isinf(x)
    chk.flag(field, inf, lambda i: f"not a finite number: {_raw(s, i)}")
    return x, nan | inf


def int_column(chk: Checks, column: str, *, field: str | None = None, minimum: int = 1,
               maximum: int | None = None, zero_output: str | None = None) -> np.ndarray:
    """Integer column (whole floats like ``12.0`` accepted) >= ``minimum`` (<= ``maximum``).
    ``zero_output="skip"`` drops zeros (``meta["zero_output_rows"]``) instead of flagging."""
    if zero_output not in (None, *ZERO_OUTPUT):
        raise ValueError(f"zero_output={zero_output!r}: must be one of {ZERO_OUTPUT}")
    field = field or column
    s = chk.rows.columns[column]
    if s.dtype.kind in "iu":
        v = s.to_numpy(dtype=np.int64)
        ok = np.ones(len(v), dtype=bool)
    else:
        x, invalid = _number_checks(chk, s, field)
        frac = ~invalid & (x != np.floor(np.where(invalid, 0.0, x)))
        chk.flag(field, frac, lambda i: f"not an integer: {_raw(s, i)}")
        ok = ~(invalid | frac)
        v = np.where(ok, x, minimum).astype(np.int64)
    if zero_output == "skip" and minimum == 1:
        chk.drop("zero_output_rows", ok & (v == 0))
        low = ok & (v < 0)
    else:
        low = ok & (v < minimum)
    hint = " (zero_output='skip' drops such rows)" if zero_output == "error" else ""
    chk.flag(field, low, lambda i: f"must be >= {minimum}, got {v[i]}"
             + (hint if v[i] == 0 else ""))
    if maximum is not None:
        chk.flag(field, ok & (v > maximum), lambda i: f"must be <= {maximum}, got {v[i]}")
    return v


def float_column(chk: Checks, column: str, *, field: str | None = None) -> np.ndarray:
    """Optional positive float (NaN where missing = unconstrained), e.g. an SLO in seconds."""
    field = field or column
    s = chk.rows.columns[column]
    x, missing = _numbers(s, chk.rows.careful)
    bad = np.isnan(x) & ~missing
    chk.flag(field, bad, lambda i: f"not a number: {_raw(s, i)}")
    chk.flag(field, np.isinf(x) | (x <= 0), lambda i: f"must be > 0, got {x[i]:g}")
    return np.where(bad, np.nan, x)


def text_column(chk: Checks, column: str, *, field: str | None = None,
                required: bool = True) -> np.ndarray:
    """Strings (object array); missing -> None when not ``required``."""
    field = field or column
    s = chk.rows.columns[column]
    missing = s.isna().to_numpy()
    if required:
        chk.flag(field, missing, lambda i: "missing value")
    out = s.astype(str).str.strip().to_numpy(dtype=object)
    out[missing] = None
    return out


def time_column(chk: Checks, column: str, unit: str, *, field: str | None = None,
                relative: bool = True) -> tuple[np.ndarray, float]:
    """(values, per-second divisor). Datetimes (ISO 8601, naive = UTC) -> int64 ns;
    numbers -> float64 in ``unit``. ``unit="auto"``: datetime unless the first value is a
    number of seconds."""
    field = field or column
    s = chk.rows.columns[column]
    if unit == "auto":
        first = s.dropna()
        unit = "s" if s.dtype.kind in "iuf" or (len(first) and not math.isnan(
            _num(first.iloc[0]))) else "datetime"
    if unit != "datetime":
        x, invalid = _number_checks(chk, s, field)
        if not relative:
            chk.flag(field, ~invalid & (x < 0), lambda i: f"must be >= 0, got {x[i]:g}")
        return np.where(invalid, 0.0, x), TIME_UNITS[unit]
    if isinstance(s.dtype, pd.DatetimeTZDtype) or s.dtype.kind == "M":
        dt = s if isinstance(s.dtype, pd.DatetimeTZDtype) else s.dt.tz_localize("UTC")
        missing = s.isna().to_numpy()
    else:
        missing = s.isna().to_numpy()
        dt = pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)
    nat = dt.isna().to_numpy()
    chk.flag(field, missing, lambda i: "missing value")
    chk.flag(field, nat & ~missing, lambda i: f"not a timestamp: {_raw(s, i)} (expected "
             "ISO 8601 such as '2023-11-16 18:17:03.9799600')")
    ns = dt.dt.as_unit("ns").array.asi8.copy()
    ns[nat] = 0
    if not relative:
        chk.flag(field, ns < 0, lambda i: f"{_raw(s, i)} is before 1970: arrivals must be "
                 ">= 0 (relative=True counts from the first row)")
    return ns, 1e9


def finish(chk: Checks, t: np.ndarray, divisor: float, time_field: str,
           columns: dict[str, np.ndarray], *, name: str, sort: bool, relative: bool,
           meta: dict[str, Any], origin: Callable[[int], Any] | None = None,
           block_size: int | None = None) -> Trace:
    """Drop bad / unwanted rows, check the order, make arrivals relative, build the Trace."""
    rows = chk.rows
    meta["rows_read"] = rows.n
    keep = chk.keep(meta)
    idx = np.arange(rows.n) if keep is None else np.flatnonzero(keep)
    if keep is not None:
        t = t[idx]
        columns = {k: v[idx] for k, v in columns.items()}
    if len(t) == 0:
        if rows.n == 0:
            raise TraceFormatError(rows.path, None, None, "no requests: no data rows")
        dropped = ", ".join(f"{k}={meta[k]}" for k in ("skipped_bad_rows", *chk.drops)
                            if meta.get(k))
        first = f"; first bad: {meta['first_bad']}" if "first_bad" in meta else ""
        raise TraceFormatError(rows.path, None, None,
                               f"no requests left of {rows.n} rows ({dropped}){first}")
    back = np.flatnonzero(t[1:] < t[:-1])
    if back.size:
        if not sort:
            j = int(back[0]) + 1
            col = rows.columns[time_field]
            raise chk.error(int(idx[j]), time_field,
                            f"{_raw(col, int(idx[j]))} is earlier than {_raw(col, int(idx[j - 1]))}"
                            f" on line {rows.line(int(idx[j - 1]))}: rows must be sorted by "
                            "time (sort=True sorts them)")
        order = np.argsort(t, kind="stable")
        t, idx = t[order], idx[order]
        columns = {k: v[order] for k, v in columns.items()}
        meta["sorted"] = True
    base = t[0] if relative else t.dtype.type(0)
    if origin is not None:
        meta["origin"] = origin(int(idx[0])) if relative else None
    arrival = (t - base) / divisor
    return Trace(arrival_s=arrival, name=name, block_size=block_size, meta=meta, **columns)
