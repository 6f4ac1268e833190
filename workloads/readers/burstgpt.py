"""BurstGPT (HPMLL/BurstGPT): Azure OpenAI GPT request logs of a campus service.

Format (CSV with a header, one request per row, sorted by time): ``Timestamp`` (seconds,
float, from the trace start), ``Model`` (``ChatGPT`` or ``GPT-4``), ``Request tokens``,
``Response tokens``, ``Total tokens``, ``Log Type`` (``Conversation log`` or ``API log``).
``Total tokens`` is ignored.

Failed requests appear with ``Response tokens == 0``. They are real events of the trace, not
malformed rows, so by default (``zero_output="skip"``) they are dropped and counted in
``meta["zero_output_rows"]``; ``zero_output="error"`` treats them as bad rows instead.
``model`` / ``log_type`` keep only rows with that value (a string or a collection of
strings); the rows left out are counted in ``meta["filtered_rows"]``.
``tenant_from_model=True`` sets each request's tenant to its ``Model``.
Arrivals are seconds after the first kept row (``relative=True``; ``meta["origin"]`` is its
Timestamp) or the file's Timestamp values (``relative=False``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from workloads.readers._checks import Checks, finish, int_column, text_column, time_column
from workloads.readers._common import fast_then_careful, trace_name
from workloads.readers._csv import read_csv_rows
from workloads.trace import Trace

__all__ = ["BURSTGPT_COLUMNS", "read_burstgpt"]

BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens",
                    "Total tokens", "Log Type")


def read_burstgpt(path: str | Path, *, model: str | Collection[str] | None = None,
                  log_type: str | Collection[str] | None = None,
                  tenant_from_model: bool = False, skip_bad: bool = False,
                  sort: bool = False, relative: bool = True,
                  zero_output: str = "skip") -> Trace:
    """Read a BurstGPT CSV into a Trace (see the module docstring for the options)."""
    args = (path, model, log_type, tenant_from_model, skip_bad, sort, relative, zero_output)
    return fast_then_careful(lambda careful: _read(careful, *args))


def _values(v: str | Collection[str] | None) -> set[str] | None:
    return None if v is None else {v} if isinstance(v, str) else set(v)


def _read(careful: bool, path: str | Path, model: str | Collection[str] | None,
          log_type: str | Collection[str] | None, tenant_from_model: bool, skip_bad: bool,
          sort: bool, relative: bool, zero_output: str) -> Trace:
    models, logs = _values(model), _values(log_type)
    needed = ["Timestamp", "Request tokens", "Response tokens"]
    if models is not None or tenant_from_model:
        needed.append("Model")
    if logs is not None:
        needed.append("Log Type")
    rows = read_csv_rows(path, needed, careful=careful, text_columns=("Model", "Log Type"))
    chk = Checks(rows, skip_bad)
    t, divisor = time_column(chk, "Timestamp", "s", relative=relative)
    prompt = int_column(chk, "Request tokens")
    output = int_column(chk, "Response tokens", zero_output=zero_output)
    columns = {"prompt_tokens": prompt, "output_tokens": output}
    out = np.zeros(rows.n, dtype=bool)
    meta = {"format": "burstgpt", "path": str(path)}
    for col, wanted, key in (("Model", models, "model"), ("Log Type", logs, "log_type")):
        if wanted is not None:
            values = text_column(chk, col)
            out |= ~np.isin(values.astype(str), sorted(wanted))
            meta[key] = sorted(wanted)
    if tenant_from_model:
        columns["tenant"] = text_column(chk, "Model")
    if models is not None or logs is not None:
        chk.drop("filtered_rows", out)
    return finish(chk, t, divisor, "Timestamp", columns, name=trace_name(path), sort=sort,
                  relative=relative, meta=meta, origin=lambda i: float(t[i]))
