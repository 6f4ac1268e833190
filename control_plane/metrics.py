"""Per-request records -> summaries: latency percentiles, SLO attainment, goodput, cost.

:class:`~control_plane.records.RequestRecord` (the common record format of both drivers,
re-exported here) are turned into a :class:`Summary` by :func:`summarize`, which returns a
frozen dataclass; :func:`format_table` compares summaries side by side.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from control_plane.errors import ValidationError
from control_plane.records import STATUSES, RequestRecord
from control_plane.types import (
    NUM_PRIORITIES,
    InstanceSpec,
    _check_number,
)

__all__ = [
    "STATUSES",
    "InstanceUsage",
    "Percentiles",
    "RequestRecord",
    "Summary",
    "format_table",
    "summarize",
]

_NAN = math.nan



@dataclass(frozen=True, slots=True)
class Percentiles:
    """Mean and linear-interpolated p50/p95/p99 of ``count`` samples (NaN when empty)."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Percentiles:
        a = np.asarray(values, dtype=float)
        if a.size == 0:
            return cls(0, _NAN, _NAN, _NAN, _NAN)
        p50, p95, p99 = np.percentile(a, [50.0, 95.0, 99.0], method="linear")
        return cls(int(a.size), float(a.mean()), float(p50), float(p95), float(p99))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class InstanceUsage:
    """Load one instance carried, from the ``[dispatch_s, finish_s]`` intervals of the
    records attributed to it (records without ``finish_s`` count in ``requests`` only).

    ``busy_fraction``: length of the union of the intervals / duration;
    ``mean_concurrency``: sum of interval lengths / duration;
    ``utilization``: mean_concurrency / spec.max_inflight (None without a spec).
    """

    instance_id: str
    requests: int
    busy_fraction: float
    mean_concurrency: float
    utilization: float | None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Summary:
    """Aggregate of a set of records (see the module docstring for conventions).

    Dict fields are plain dicts (picklable); treat them as read-only. Rates are per second
    of ``duration_s``. Token totals (``prompt_tokens``, ``output_tokens``) are of ok records.
    """

    total: int
    ok: int
    rejected: int
    failed: int
    rejected_by_cause: dict[str, int]
    slo_met: int
    retried: int  # records with attempts > 1
    preemptions: int  # engine-level, summed over all records
    duration_s: float
    prompt_tokens: int
    output_tokens: int
    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    queue_delay_s: Percentiles
    slo_attainment: float
    attainment_by_priority: dict[int, float]
    attainment_by_tenant: dict[str, float]
    goodput_rps: float
    goodput_tokens_per_s: float  # output tokens of SLO-meeting requests
    throughput_rps: float
    output_tokens_per_s: float
    total_tokens_per_s: float  # prompt + output
    prefix_cache_hit_ratio: float
    record_cost_usd: float  # sum of the records' own cost_usd
    instance_cost_usd: float | None  # sum of price_per_hour_usd * duration
    cost_per_million_tokens_usd: float | None
    instances: dict[str, InstanceUsage]

    def to_dict(self) -> dict[str, Any]:
        """Nested, JSON-friendly dict: NaN -> None, int dict keys -> strings."""
        return {
            "counts": {"total": self.total, "ok": self.ok, "rejected": self.rejected,
                       "failed": self.failed, "rejected_by_cause": dict(self.rejected_by_cause),
                       "slo_met": self.slo_met, "retried": self.retried,
                       "preemptions": self.preemptions},
            "duration_s": _json(self.duration_s),
            "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens},
            "latency_s": {"ttft": self.ttft_s.to_dict(), "tpot": self.tpot_s.to_dict(),
                          "e2e": self.e2e_s.to_dict(),
                          "queue_delay": self.queue_delay_s.to_dict()},
            "slo_attainment": {
                "overall": _json(self.slo_attainment),
                "by_priority": {str(k): _json(v) for k, v in self.attainment_by_priority.items()},
                "by_tenant": {k: _json(v) for k, v in self.attainment_by_tenant.items()},
            },
            "goodput": {"rps": _json(self.goodput_rps),
                        "output_tokens_per_s": _json(self.goodput_tokens_per_s)},
            "throughput": {"rps": _json(self.throughput_rps),
                           "output_tokens_per_s": _json(self.output_tokens_per_s),
                           "total_tokens_per_s": _json(self.total_tokens_per_s)},
            "prefix_cache_hit_ratio": _json(self.prefix_cache_hit_ratio),
            "cost": {"record_usd": _json(self.record_cost_usd),
                     "instance_usd": _json(self.instance_cost_usd),
                     "per_million_tokens_usd": _json(self.cost_per_million_tokens_usd)},
            "instances": {k: v.to_dict() for k, v in self.instances.items()},
        }


def _json(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _floats(values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=float)  # None -> NaN


def _union_length(start: np.ndarray, end: np.ndarray) -> float:
    """Length of the union of intervals; ``start`` sorted ascending."""
    if start.size == 0:
        return 0.0
    reach = np.maximum.accumulate(end)
    new = np.empty(start.size, dtype=bool)
    new[0] = True
    new[1:] = start[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, start.size - 1)
    return float(np.sum(reach[last] - start[first]))


def _index(keys: list[Any]) -> tuple[dict[Any, int], np.ndarray]:
    ids: dict[Any, int] = {}
    idx = np.fromiter((ids.setdefault(k, len(ids)) for k in keys), dtype=np.intp,
                      count=len(keys))
    return ids, idx


def summarize(records: Iterable[RequestRecord], *,
              instances: Sequence[InstanceSpec] | None = None,
              duration_s: float | None = None) -> Summary:
    """Summarise records. ``duration_s`` defaults to the latest timestamp of any record minus
    the earliest arrival (0 for no records: every rate is then NaN). ``instances`` give
    prices (cost) and ``max_inflight`` (utilization); instances seen only in the records are
    reported too, after the specs, in sorted order. Never raises on empty input.
    """
    recs = list(records)
    n = len(recs)
    if duration_s is not None:
        _check_number("summarize", "duration_s", duration_s, strict=True)
    specs: dict[str, InstanceSpec] = {}
    for s in instances or ():
        if s.instance_id in specs:
            raise ValidationError("summarize", "instances", s.instance_id, "duplicate id")
        specs[s.instance_id] = s

    arrival = _floats([r.arrival_s for r in recs])
    dispatch = _floats([r.dispatch_s for r in recs])
    first = _floats([r.first_token_s for r in recs])
    finish = _floats([r.finish_s for r in recs])
    out = np.array([r.output_tokens for r in recs], dtype=np.int64)
    prompt = np.array([r.prompt_tokens for r in recs], dtype=np.int64)
    cached = np.array([r.cached_prompt_tokens for r in recs], dtype=np.int64)
    prio = np.array([r.priority for r in recs], dtype=np.intp)
    statuses = [r.status for r in recs]
    ok = np.array([s == "ok" for s in statuses], dtype=bool)
    n_ok = int(ok.sum())
    n_rejected = statuses.count("rejected")

    if duration_s is None:
        if n:
            end = np.fmax(np.fmax(arrival, dispatch), np.fmax(first, finish))
            duration_s = float(end.max() - arrival.min())
        else:
            duration_s = 0.0

    def rate(x: float) -> float:
        return x / duration_s if duration_s > 0 else _NAN

    # latencies (NaN where undefined); tpot counts as 0 for the SLO with < 2 outputs
    ttft = first - arrival
    e2e = finish - arrival
    queue = dispatch - arrival
    multi = out > 1
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(multi, (finish - first) / np.maximum(out - 1, 1), _NAN)
    tpot_slo = np.where(multi, tpot, 0.0)

    slos = [r.slo for r in recs]
    met = ok.copy()
    for attr, got in (("ttft_s", ttft), ("tpot_s", tpot_slo), ("e2e_s", e2e)):
        bound = _floats([None if s is None else getattr(s, attr) for s in slos])
        free = np.isnan(bound)
        with np.errstate(invalid="ignore"):
            met &= free | (got <= bound)
    n_met = int(met.sum())

    def pct(a: np.ndarray) -> Percentiles:
        return Percentiles.of(a[ok & ~np.isnan(a)])

    # attainment per class
    by_prio_n = np.bincount(prio, minlength=NUM_PRIORITIES)
    by_prio_met = np.bincount(prio, weights=met, minlength=NUM_PRIORITIES)
    by_priority = {p: float(by_prio_met[p] / by_prio_n[p])
                   for p in range(NUM_PRIORITIES) if by_prio_n[p]}
    tenants, tidx = _index([r.tenant for r in recs])
    t_n = np.bincount(tidx, minlength=len(tenants))
    t_met = np.bincount(tidx, weights=met, minlength=len(tenants))
    by_tenant = {t: float(t_met[i] / t_n[i]) for t, i in sorted(tenants.items())}

    causes: dict[str, int] = {}
    for r in recs:
        if r.status == "rejected":
            causes[r.reject_cause] = causes.get(r.reject_cause, 0) + 1

    # per-instance usage
    inst_ids, iidx = _index([r.instance_id for r in recs])
    inst_ids.pop(None, None)
    order_ids = list(specs) + sorted(i for i in inst_ids if i not in specs)
    has_iv = ~np.isnan(dispatch) & ~np.isnan(finish)
    usage: dict[str, InstanceUsage] = {}
    for iid in order_ids:
        k = inst_ids.get(iid)
        mine = iidx == k if k is not None else np.zeros(n, dtype=bool)
        iv = mine & has_iv
        s, e = dispatch[iv], finish[iv]
        order = np.argsort(s, kind="stable")
        union = _union_length(s[order], e[order])
        conc = rate(float(np.sum(e - s)))
        spec = specs.get(iid)
        usage[iid] = InstanceUsage(
            instance_id=iid, requests=int(mine.sum()), busy_fraction=rate(union),
            mean_concurrency=conc,
            utilization=None if spec is None else conc / spec.max_inflight)

    ok_prompt = int(prompt[ok].sum())
    ok_out = int(out[ok].sum())
    ok_tokens = ok_prompt + ok_out
    instance_cost = (sum(s.price_per_hour_usd for s in specs.values()) * duration_s / 3600.0
                     if specs else None)
    per_mtok = (instance_cost / ok_tokens * 1e6
                if instance_cost is not None and ok_tokens > 0 else None)

    return Summary(
        total=n, ok=n_ok, rejected=n_rejected, failed=statuses.count("failed"),
        rejected_by_cause=dict(sorted(causes.items())), slo_met=n_met,
        retried=sum(1 for r in recs if r.attempts > 1),
        preemptions=sum(r.preemptions for r in recs), duration_s=float(duration_s),
        prompt_tokens=ok_prompt, output_tokens=ok_out,
        ttft_s=pct(ttft), tpot_s=pct(tpot), e2e_s=pct(e2e), queue_delay_s=pct(queue),
        slo_attainment=n_met / n if n else _NAN,
        attainment_by_priority=by_priority, attainment_by_tenant=by_tenant,
        goodput_rps=rate(n_met), goodput_tokens_per_s=rate(float(out[met].sum())),
        throughput_rps=rate(n_ok), output_tokens_per_s=rate(ok_out),
        total_tokens_per_s=rate(ok_tokens),
        prefix_cache_hit_ratio=int(cached[ok].sum()) / ok_prompt if ok_prompt else _NAN,
        record_cost_usd=float(sum(r.cost_usd for r in recs)),
        instance_cost_usd=instance_cost, cost_per_million_tokens_usd=per_mtok,
        instances=usage,
    )


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
