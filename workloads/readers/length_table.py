"""Length-only tables: (prompt, output) token pairs with no arrival times.

Formats (CSV, optionally gzipped, with a header):

- ShareGPT / arXiv summarization / BWB processed traces (microsoft/sarathi-serve,
  project-etalon/etalon, microsoft/vidur): ``num_prefill_tokens`` (input),
  ``num_decode_tokens`` (output), ``num_total_tokens``, ``pd_ratio`` (the last two are derived
  and ignored). Tokenized with a Llama-2 tokenizer by their authors.
- LMSYS-style samples (microsoft/apex_plus): ``ContextTokens``, ``GeneratedTokens`` without
  a ``TIMESTAMP`` column.
- anything else through ``columns=(prompt_column, output_column)``.

A :class:`LengthTable` is paired with an arrival process by :meth:`LengthTable.with_arrivals`;
:meth:`LengthTable.sample` draws rows with a seeded ``numpy.random.Generator(PCG64(seed))``.
Bad rows, ``skip_bad`` and ``zero_output`` work as for the trace readers ("line" = physical
line of the file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workloads.errors import TraceFormatError
from workloads.readers._checks import Checks, int_column
from workloads.readers._common import fast_then_careful, first_record, trace_name
from workloads.readers._csv import read_csv_rows
from workloads.trace import Trace

__all__ = ["LENGTH_COLUMNS", "LengthTable", "read_lengths"]

LENGTH_COLUMNS = (("num_prefill_tokens", "num_decode_tokens"),
                  ("ContextTokens", "GeneratedTokens"))


@dataclass(frozen=True, eq=False)
class LengthTable:
    """Token-length pairs: ``prompt_tokens`` and ``output_tokens`` (int64 >= 1, same length)."""

    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "lengths"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for col in ("prompt_tokens", "output_tokens"):
            a = np.asarray(getattr(self, col), dtype=np.int64)
            if a.ndim != 1:
                raise ValueError(f"LengthTable {col} must be one-dimensional, got {a.shape}")
            if len(a) and a.min() < 1:
                i = int(np.argmin(a))
                raise ValueError(f"{self.name}: row {i}: {col}={int(a[i])} must be >= 1")
            object.__setattr__(self, col, a)
        if len(self.prompt_tokens) != len(self.output_tokens):
            raise ValueError(f"{self.name}: {len(self.prompt_tokens)} prompt lengths but "
                             f"{len(self.output_tokens)} output lengths")
        object.__setattr__(self, "meta", dict(self.meta))

    def __len__(self) -> int:
        return len(self.prompt_tokens)

    def sample(self, n: int, seed: int = 0, *, replace: bool = True) -> LengthTable:
        """``n`` rows drawn uniformly (with replacement unless ``replace=False``), seeded."""
        if n < 0 or (not replace and n > len(self)):
            raise ValueError(f"n={n!r}: must be >= 0" + ("" if replace else
                             f" and <= {len(self)} rows without replacement"))
        if not len(self):
            raise ValueError(f"{self.name}: cannot sample from an empty table")
        rng = np.random.Generator(np.random.PCG64(seed))
        idx = rng.integers(0, len(self), n) if replace else rng.permutation(len(self))[:n]
        meta = {**self.meta, "sampled": {"n": n, "seed": seed, "replace": replace}}
        return LengthTable(self.prompt_tokens[idx], self.output_tokens[idx], self.name, meta)

    def with_arrivals(self, arrival_s: np.ndarray, *, name: str | None = None) -> Trace:
        """A Trace pairing arrival ``i`` with row ``i``, cycling through the table in order
        when there are more arrivals than rows (``meta["cycled"]``)."""
        arrival = np.asarray(arrival_s, dtype=np.float64)
        if len(arrival) and not len(self):
            raise ValueError(f"{self.name}: no lengths to pair with {len(arrival)} arrivals")
        idx = np.arange(len(arrival)) % max(len(self), 1)
        meta = {**self.meta, "lengths": self.name, "cycled": len(arrival) > len(self)}
        return Trace(arrival, self.prompt_tokens[idx], self.output_tokens[idx],
                     name=name or self.name, meta=meta)


def read_lengths(path: str | Path, *, columns: tuple[str, str] | None = None,
                 skip_bad: bool = False, zero_output: str = "error") -> LengthTable:
    """Read a length-only CSV into a :class:`LengthTable` (see the module docstring)."""
    if columns is None:
        first = first_record(path)
        header = {h.strip() for h in first[1].split(",")} if first else set()
        columns = next((c for c in LENGTH_COLUMNS if set(c) <= header), LENGTH_COLUMNS[0])
    return fast_then_careful(lambda careful: _read(path, columns, careful, skip_bad,
                                                   zero_output))


def _read(path: str | Path, columns: tuple[str, str], careful: bool, skip_bad: bool,
          zero_output: str) -> LengthTable:
    rows = read_csv_rows(path, columns, careful=careful)
    chk = Checks(rows, skip_bad)
    prompt = int_column(chk, columns[0])
    output = int_column(chk, columns[1], zero_output=zero_output)
    meta: dict[str, Any] = {"format": "lengths", "path": str(path), "rows_read": rows.n,
                            "columns": list(columns)}
    keep = chk.keep(meta)
    if keep is not None:
        prompt, output = prompt[keep], output[keep]
    if not len(prompt):
        raise TraceFormatError(str(path), None, None, "no requests: no data rows" if not rows.n
                               else f"no requests left of {rows.n} rows")
    return LengthTable(prompt, output, trace_name(path), meta)

