"""Per-request records -> summaries: latency percentiles, SLO attainment, goodput, cost.

:class:`~control_plane.records.RequestRecord` (the common record format of both drivers,
re-exported here) are turned into a :class:`Summary` by :func:`summarize`, which returns a
frozen dataclass; :func:`format_table` compares summaries side by side. The computation
itself is :func:`~control_plane.summary_core.summarize_columns` over
:class:`~control_plane.summary_core.SummaryColumns` (re-exported here): ``summarize`` only
turns records into those columns, as the simulator's compact record store does from its own.

Conventions (apply everywhere in this module):

- Latency statistics (TTFT, TPOT, e2e, queueing delay) are over ``ok`` records only.
  Percentiles use ``numpy.percentile(..., method="linear")`` (linear interpolation between
  closest ranks, numpy's default).
- An undefined float statistic (no samples, zero duration, zero denominator) is ``NaN``, never
  an exception, so fields stay floats; :meth:`Summary.to_dict` turns NaN into ``None``.
  The exceptions the brief asks for: ``cost_per_million_tokens_usd`` / ``instance_cost_usd``
  are ``None`` without instance specs (or without tokens), ``InstanceUsage.utilization`` is
  ``None`` when the instance's spec is unknown.
- SLO attainment is over *all* records (rejected and failed count as misses). A request
  with at most one output token has no inter-token gaps, so its TPOT objective counts as met;
  an ok request without ``first_token_s`` misses a TTFT objective.
- Throughput counts ok records; goodput counts ok records that met their SLO.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from control_plane.records import STATUSES, RequestRecord
from control_plane.summary_core import (
    InstanceUsage,
    Percentiles,
    Summary,
    SummaryColumns,
    summarize_columns,
)
from control_plane.types import InstanceSpec

__all__ = [
    "STATUSES",
    "InstanceUsage",
    "Percentiles",
    "RequestRecord",
    "Summary",
    "SummaryColumns",
    "format_table",
    "summarize",
    "summarize_columns",
]

_STATUS_CODE = {s: k for k, s in enumerate(STATUSES)}


def _codes(keys: Iterable[Hashable | None], n: int) -> tuple[tuple[Any, ...], np.ndarray]:
    """Keys -> (distinct keys in first-seen order, their codes; -1 for None)."""
    ids: dict[Any, int] = {}
    codes = np.fromiter((-1 if k is None else ids.setdefault(k, len(ids)) for k in keys),
                        dtype=np.intp, count=n)
    return tuple(ids), codes


def _columns_of(records: Sequence[RequestRecord]) -> SummaryColumns:
    """The :class:`SummaryColumns` of ``records``, in order."""
    n = len(records)

    def floats(attr: str) -> np.ndarray:
        return np.array([getattr(r, attr) for r in records], dtype=float)  # None -> NaN

    def ints(attr: str) -> np.ndarray:
        return np.fromiter((getattr(r, attr) for r in records), dtype=np.int64, count=n)

    tenants, tenant = _codes((r.tenant for r in records), n)
    inst_ids, inst = _codes((r.instance_id for r in records), n)
    causes, cause = _codes((r.reject_cause for r in records), n)
    slos, slo = _codes((r.slo for r in records), n)
    return SummaryColumns(
        arrival_s=floats("arrival_s"), dispatch_s=floats("dispatch_s"),
        first_token_s=floats("first_token_s"), finish_s=floats("finish_s"),
        prompt_tokens=ints("prompt_tokens"), output_tokens=ints("output_tokens"),
        cached_prompt_tokens=ints("cached_prompt_tokens"), preemptions=ints("preemptions"),
        attempts=ints("attempts"), priority=ints("priority"),
        status=np.fromiter((_STATUS_CODE[r.status] for r in records), dtype=np.int8,
                           count=n),
        tenant=tenant, tenant_names=tenants, instance=inst, instance_ids=inst_ids,
        reject_cause=cause, reject_causes=causes, slo=slo, slos=slos,
        cost_usd=floats("cost_usd"))


def summarize(records: Iterable[RequestRecord], *,
              instances: Sequence[InstanceSpec] | None = None,
              duration_s: float | None = None) -> Summary:
    """Summarise records. ``duration_s`` defaults to the latest timestamp of any record minus
    the earliest arrival (0 for no records: every rate is then NaN). ``instances`` give
    prices (cost) and ``max_inflight`` (utilization); instances seen only in the records are
    reported too, after the specs, in sorted order. Never raises on empty input.
    """
    return summarize_columns(_columns_of(list(records)), instances=instances,
                             duration_s=duration_s)


_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("ttft p50 ms", lambda s: _fmt(s.ttft_s.p50 * 1e3, ".1f")),
    ("ttft p99 ms", lambda s: _fmt(s.ttft_s.p99 * 1e3, ".1f")),
    ("tpot p50 ms", lambda s: _fmt(s.tpot_s.p50 * 1e3, ".2f")),
    ("e2e p50 s", lambda s: _fmt(s.e2e_s.p50, ".3f")),
    ("e2e p99 s", lambda s: _fmt(s.e2e_s.p99, ".3f")),
    ("attain %", lambda s: _fmt(s.slo_attainment * 100.0, ".1f")),
    ("goodput rps", lambda s: _fmt(s.goodput_rps, ".2f")),
    ("out tok/s", lambda s: _fmt(s.output_tokens_per_s, ".1f")),
    ("rejected", lambda s: str(s.rejected)),
)
_MIN_WIDTH = 11


def _fmt(x: float, spec: str) -> str:
    return "-" if math.isnan(x) else format(x, spec)


def format_table(summaries: Mapping[str, Summary]) -> str:
    """Plain-text comparison: one row per name, right-aligned fixed-width columns (widened
    only when a value would not fit, so every line has the same length). ``-`` = undefined.
    """
    rows = [[name, *(f(s) for _, f in _COLUMNS)] for name, s in summaries.items()]
    header = ["name", *(h for h, _ in _COLUMNS)]
    widths = [max(len(header[0]), *(len(r[0]) for r in rows))] if rows else [len(header[0])]
    for c in range(1, len(header)):
        widths.append(max(_MIN_WIDTH, len(header[c]), *(len(r[c]) for r in rows)))

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [cells[c].rjust(widths[c])
                                                       for c in range(1, len(cells))])

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    return "\n".join(out)
