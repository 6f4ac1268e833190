"""Trace: a workload held as columns (numpy arrays), yielding Requests lazily in arrival order.

Readers and generators build a :class:`Trace`; transformations (rate scaling, slicing,
sampling, clipping, rule-based classes) return new Traces by vectorised column operations;
:meth:`Trace.requests` turns rows into :class:`control_plane.types.Request` one at a time,
so a million-row trace never holds a million Request objects.

Columns (all of length ``n``):

- ``arrival_s`` float64, non-decreasing, seconds from the trace start (or any origin).
- ``prompt_tokens``, ``output_tokens`` int64 >= 1.
- optional: ``priority`` int8 in 0..4; ``tenant`` and ``session_id`` object arrays of str
  (None = no session); ``slo_ttft_s`` / ``slo_tpot_s`` / ``slo_e2e_s`` float64 with NaN for
  unconstrained; ``prefix_hashes`` an object array of tuples of int (chained block hashes,
  ``block_size`` tokens per block); ``request_id`` object array of str (default
  ``<name>-<row>``).

``meta`` records what was done to the data (skipped bad rows, clipped lengths, transforms),
so nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from control_plane.types import NUM_PRIORITIES, SLO, Request

__all__ = ["OPTIONAL_COLUMNS", "Trace"]

OPTIONAL_COLUMNS = ("priority", "tenant", "session_id", "slo_ttft_s", "slo_tpot_s",
                    "slo_e2e_s", "prefix_hashes", "request_id")


def _column(name: str, values: Any, n: int | None, dtype: Any) -> np.ndarray:
    a = np.asarray(values, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"Trace column {name!r} must be one-dimensional, got shape {a.shape}")
    if n is not None and len(a) != n:
        raise ValueError(f"Trace column {name!r} has {len(a)} rows, expected {n}")
    return a


def _objects(name: str, values: Any, n: int) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == object:
        a = values
    else:
        a = np.empty(n, dtype=object)
        a[:] = list(values)
    if a.ndim != 1 or len(a) != n:
        raise ValueError(f"Trace column {name!r} has {len(a)} rows, expected {n}")
    return a


@dataclass(frozen=True, eq=False)
class Trace:
    """A workload as columns; see the module docstring for the columns and units."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    priority: np.ndarray | None = None
    tenant: np.ndarray | None = None
    session_id: np.ndarray | None = None
    slo_ttft_s: np.ndarray | None = None
    slo_tpot_s: np.ndarray | None = None
    slo_e2e_s: np.ndarray | None = None
    prefix_hashes: np.ndarray | None = None
    request_id: np.ndarray | None = None
    name: str = "trace"
    block_size: int | None = None  # tokens per prefix block of ``prefix_hashes``
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = _column("arrival_s", self.arrival_s, None, np.float64)
        n = len(arr)
        cols: dict[str, Any] = {
            "arrival_s": arr,
            "prompt_tokens": _column("prompt_tokens", self.prompt_tokens, n, np.int64),
            "output_tokens": _column("output_tokens", self.output_tokens, n, np.int64),
        }
        if self.priority is not None:
            cols["priority"] = _column("priority", self.priority, n, np.int8)
        for name in ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s"):
            if getattr(self, name) is not None:
                cols[name] = _column(name, getattr(self, name), n, np.float64)
        for name in ("tenant", "session_id", "prefix_hashes", "request_id"):
            if getattr(self, name) is not None:
                cols[name] = _objects(name, getattr(self, name), n)
        for k, v in cols.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "meta", dict(self.meta))
        self._validate()

    def _validate(self) -> None:
        a = self.arrival_s
        if len(a):
            bad = ~np.isfinite(a) | (a < 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"{self.name}: row {i}: arrival_s={float(a[i])!r} must be finite "
                                 "and >= 0")
            back = np.diff(a) < 0
            if back.any():
                i = int(np.argmax(back)) + 1
                raise ValueError(f"{self.name}: row {i}: arrival_s={float(a[i])!r} is before the "
                                 f"previous row's {float(a[i - 1])!r}: arrivals must be sorted")
        for name in ("prompt_tokens", "output_tokens"):
            col = getattr(self, name)
            if len(col) and col.min() < 1:
                i = int(np.argmin(col))
                raise ValueError(f"{self.name}: row {i}: {name}={col[i]} must be >= 1")
        if self.priority is not None and len(self.priority) and (
                self.priority.min() < 0 or self.priority.max() >= NUM_PRIORITIES):
            i = int(np.argmax((self.priority < 0) | (self.priority >= NUM_PRIORITIES)))
            raise ValueError(f"{self.name}: row {i}: priority={self.priority[i]} must be in "
                             f"0..{NUM_PRIORITIES - 1}")
        for name in ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s"):
            col = getattr(self, name)
            if col is not None and (col <= 0).any():
                i = int(np.argmax(col <= 0))
                raise ValueError(f"{self.name}: row {i}: {name}={col[i]} must be > 0 or NaN")
        if self.prefix_hashes is not None and self.block_size is None:
            raise ValueError(f"{self.name}: prefix_hashes need block_size (tokens per block)")

    # -- basics -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    def columns(self) -> dict[str, np.ndarray]:
        """Present columns by name (the three required ones first)."""
        out = {"arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
               "output_tokens": self.output_tokens}
        for name in OPTIONAL_COLUMNS:
            col = getattr(self, name)
            if col is not None:
                out[name] = col
        return out

    def with_columns(self, *, meta: Mapping[str, Any] | None = None, **changes: Any) -> Trace:
        """A new Trace with some columns (or name / block_size) replaced; ``meta`` merged."""
        merged = dict(self.meta)
        if meta:
            merged.update(meta)
        return replace(self, meta=merged, **changes)

    def take(self, index: np.ndarray, *, meta: Mapping[str, Any] | None = None) -> Trace:
        """Rows selected by a boolean mask or sorted integer index, as a new Trace."""
        changes = {k: v[index] for k, v in self.columns().items()}
        if self.request_id is None:  # keep the original row-based ids of the kept rows
            rows = np.arange(len(self))[index]
            changes["request_id"] = np.array([f"{self.name}-{i}" for i in rows], dtype=object)
        return self.with_columns(meta=meta, **changes)

    # -- requests -----------------------------------------------------------------------
    def requests(self) -> Iterator[Request]:
        """Yield one Request per row, lazily, in arrival order."""
        n = len(self)
        arrival = self.arrival_s.tolist()
        prompt = self.prompt_tokens.tolist()
        output = self.output_tokens.tolist()
        prio = self.priority.tolist() if self.priority is not None else None
        tenant = self.tenant
        session = self.session_id
        hashes = self.prefix_hashes
        ids = self.request_id
        slo_cols = [getattr(self, k) for k in ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s")]
        has_slo = any(c is not None for c in slo_cols)
        slos: dict[tuple, SLO] = {}
        name = self.name
        for i in range(n):
            slo = None
            if has_slo:
                key = tuple(None if c is None or c[i] != c[i] else float(c[i])
                            for c in slo_cols)
                if key != (None, None, None):
                    slo = slos.get(key)
                    if slo is None:
                        slo = slos[key] = SLO(*key)
            yield Request(
                ids[i] if ids is not None else f"{name}-{i}", arrival[i], prompt[i],
                output_tokens=output[i],
                priority=prio[i] if prio is not None else 2,
                tenant=tenant[i] if tenant is not None else "default",
                session_id=session[i] if session is not None else None,
                prefix_hashes=hashes[i] if hashes is not None else (),
                slo=slo)

    __iter__ = requests
