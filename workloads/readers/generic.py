"""Any per-request table (CSV, JSON Lines or Parquet) read through a column mapping.

``mapping`` maps Trace fields to the file's column (or JSON key) names. Required:
``arrival_s``, ``prompt_tokens``, ``output_tokens``. Optional: ``priority`` (integer 0..4,
0 = most important), ``tenant`` (string), ``session_id`` (string; missing = no session),
``request_id`` (string, unique), ``slo_ttft_s`` / ``slo_tpot_s`` / ``slo_e2e_s`` (seconds
> 0; missing = unconstrained).

``time_unit`` says what the arrival column holds: ``"s"``, ``"ms"``, ``"us"``, ``"ns"``
(numbers) or ``"datetime"`` (ISO 8601 text, or a Parquet timestamp column; naive = UTC).
Arrivals are seconds after the first row (``relative=True``) or the values converted to
seconds (epoch seconds for datetimes). The file type comes from the extension (``.csv``,
``.jsonl`` / ``.ndjson``, ``.parquet``, each optionally ``.gz`` except Parquet) or, failing
that, from the content.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workloads.readers._checks import (
    TIME_UNITS,
    Checks,
    finish,
    float_column,
    int_column,
    text_column,
    time_column,
)
from workloads.readers._common import (
    Rows,
    fast_then_careful,
    file_kind,
    read_jsonl_rows,
    read_parquet_rows,
    trace_name,
)
from workloads.readers._csv import read_csv_rows
from workloads.trace import Trace

__all__ = ["GENERIC_FIELDS", "read_generic"]

REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")
TEXT = ("tenant", "session_id", "request_id")
SLOS = ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s")
GENERIC_FIELDS = (*REQUIRED, "priority", *TEXT, *SLOS)


def read_generic(path: str | Path, mapping: Mapping[str, str], *, time_unit: str = "s",
                 relative: bool = True, skip_bad: bool = False, sort: bool = False,
                 zero_output: str = "error", name: str | None = None) -> Trace:
    """Read a CSV / JSONL / Parquet file whose columns ``mapping`` names (see module doc)."""
    unknown = sorted(set(mapping) - set(GENERIC_FIELDS))
    if unknown:
        raise ValueError(f"mapping: unknown field(s) {unknown}; known: {list(GENERIC_FIELDS)}")
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        raise ValueError(f"mapping: required field(s) {missing} not mapped to a column")
    if time_unit not in (*TIME_UNITS, "datetime"):
        raise ValueError(f"time_unit={time_unit!r}: must be one of "
                         f"{[*TIME_UNITS, 'datetime']}")
    mapping = dict(mapping)
    kind = file_kind(path)
    args = (path, kind, mapping, time_unit, relative, skip_bad, sort, zero_output, name)
    return fast_then_careful(lambda careful: _read(careful, *args))


def _rows(path: str | Path, kind: str, mapping: dict[str, str], careful: bool) -> Rows:
    needed = [mapping[f] for f in REQUIRED]
    wanted = list(dict.fromkeys(mapping.values()))
    if kind == "parquet":
        return read_parquet_rows(path, wanted, wanted)
    if kind == "jsonl":
        return read_jsonl_rows(path, wanted, needed=needed)
    return read_csv_rows(path, wanted, careful=careful,
                         text_columns=[mapping[f] for f in TEXT if f in mapping])


def _read(careful: bool, path: str | Path, kind: str, mapping: dict[str, str],
          time_unit: str, relative: bool, skip_bad: bool, sort: bool, zero_output: str,
          name: str | None) -> Trace:
    rows = _rows(path, kind, mapping, careful)
    chk = Checks(rows, skip_bad)
    t, divisor = time_column(chk, mapping["arrival_s"], time_unit, relative=relative)
    columns = {"prompt_tokens": int_column(chk, mapping["prompt_tokens"]),
               "output_tokens": int_column(chk, mapping["output_tokens"],
                                           zero_output=zero_output)}
    if "priority" in mapping:
        columns["priority"] = int_column(chk, mapping["priority"], minimum=0, maximum=4)
    for f in TEXT:
        if f in mapping:
            columns[f] = text_column(chk, mapping[f], required=f != "session_id")
    if "request_id" in mapping:
        ids = columns["request_id"]
        dup = pd.Series(ids).duplicated().to_numpy() & (ids != None)  # noqa: E711
        chk.flag(mapping["request_id"], dup,
                 lambda i: f"duplicate request id {ids[i]!r} (first on line "
                           f"{rows.line(int(np.flatnonzero(ids == ids[i])[0]))})")
    for f in SLOS:
        if f in mapping:
            columns[f] = float_column(chk, mapping[f])
    col = rows.columns[mapping["arrival_s"]]
    meta = {"format": "generic", "path": str(path), "file_kind": kind,
            "mapping": dict(mapping), "time_unit": time_unit}
    return finish(chk, t, divisor, mapping["arrival_s"], columns,
                  name=name or trace_name(path), sort=sort, relative=relative, meta=meta,
                  origin=lambda i: str(col.iloc[i]) if time_unit == "datetime"
                  else float(t[i]))
