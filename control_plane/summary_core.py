"""The one implementation of a run's summary, over compact numeric columns.

:class:`SummaryColumns` holds per-request outcomes as parallel numpy arrays (strings coded as
small ints against name tables); :func:`summarize_columns` turns them into a
:class:`Summary`. Both ways of keeping outcomes build these columns and call it:
:func:`control_plane.metrics.summarize` from :class:`~control_plane.records.RequestRecord`
objects, and the simulator's compact ``RecordColumns`` from its own arrays (without copying).
The conventions (what counts, NaN for undefined) are in :mod:`control_plane.metrics`.

Memory: the core materialises one full-length float temporary at a time (the latency
columns are computed one after the other), so a million-request summary stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from control_plane.errors import ValidationError
from control_plane.records import STATUSES
from control_plane.types import NUM_PRIORITIES, SLO, InstanceSpec, _check_number

__all__ = ["InstanceUsage", "Percentiles", "Summary", "SummaryColumns", "summarize_columns"]

_NAN = math.nan
_OK, _REJECTED, _FAILED = (STATUSES.index(s) for s in ("ok", "rejected", "failed"))


def _json(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


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
    """Aggregate of a set of records (see :mod:`control_plane.metrics` for conventions).

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


_ARRAYS = ("arrival_s", "dispatch_s", "first_token_s", "finish_s", "prompt_tokens",
           "output_tokens", "cached_prompt_tokens", "preemptions", "attempts", "status",
           "priority", "tenant", "instance", "reject_cause", "slo", "cost_usd")
_TABLES = ("tenant_names", "instance_ids", "reject_causes")


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryColumns:
    """Per-request outcomes as parallel 1-D numpy arrays, one element per request, in the
    meaning of the :class:`~control_plane.records.RequestRecord` field of the same name.

    Times (``*_s``, float) are NaN when absent. Token counts, ``preemptions``, ``attempts``
    and ``priority`` are ints of any width. Codes are ints: ``status`` indexes
    :data:`~control_plane.records.STATUSES`; ``tenant`` indexes ``tenant_names``;
    ``instance`` indexes ``instance_ids`` (-1: never dispatched); ``reject_cause`` indexes
    ``reject_causes`` (-1: none); ``slo`` indexes ``slos`` (-1: no SLO). ``cost_usd`` is
    float. Arrays may be read-only views (``np.frombuffer``); they are never written to.
    """

    arrival_s: np.ndarray
    dispatch_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_prompt_tokens: np.ndarray
    preemptions: np.ndarray
    attempts: np.ndarray
    status: np.ndarray
    priority: np.ndarray
    tenant: np.ndarray
    tenant_names: Sequence[str]
    instance: np.ndarray
    instance_ids: Sequence[str]
    reject_cause: np.ndarray
    reject_causes: Sequence[str]
    slo: np.ndarray
    slos: Sequence[SLO]
    cost_usd: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        for name in _ARRAYS:
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.ndim != 1 or a.size != n:
                raise ValidationError("SummaryColumns", name, type(a).__name__,
                                      f"must be a 1-D numpy array of length {n}")
        for name in _TABLES:
            names = getattr(self, name)
            if len(set(names)) != len(names):
                raise ValidationError("SummaryColumns", name, list(names), "has duplicates")

    def __len__(self) -> int:
        return self.arrival_s.size


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


def _sequential_sum(a: np.ndarray) -> float:
    """Left-to-right float sum (as Python's ``sum``; numpy's own sum is pairwise)."""
    return float(np.cumsum(a, dtype=float)[-1]) if a.size else 0.0


def _ratios(codes: np.ndarray, met: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.bincount(codes, minlength=size), np.bincount(codes[met], minlength=size)


def summarize_columns(cols: SummaryColumns, *,
                      instances: Sequence[InstanceSpec] | None = None,
                      duration_s: float | None = None) -> Summary:
    """Summarise columns; arguments and defaults as :func:`control_plane.metrics.summarize`
    (``duration_s``: latest timestamp minus earliest arrival; ``instances``: prices and
    ``max_inflight``; instances seen only in the columns follow the specs, sorted)."""
    if duration_s is not None:
        _check_number("summarize", "duration_s", duration_s, strict=True)
    specs: dict[str, InstanceSpec] = {}
    for s in instances or ():
        if s.instance_id in specs:
            raise ValidationError("summarize", "instances", s.instance_id, "duplicate id")
        specs[s.instance_id] = s
    c = cols
    n = len(c)
    arrival, dispatch, first, finish = c.arrival_s, c.dispatch_s, c.first_token_s, c.finish_s
    prompt, out, status = c.prompt_tokens, c.output_tokens, c.status
    ok = status == _OK
    n_ok = int(np.count_nonzero(ok))
    if duration_s is None:
        if n:
            end = np.fmax.reduce([np.fmax.reduce(a) for a in (arrival, dispatch, first, finish)])
            duration_s = float(end) - float(arrival.min())
        else:
            duration_s = 0.0

    def rate(x: float) -> float:
        return x / duration_s if duration_s > 0 else _NAN

    # SLO: one bound per table entry (NaN = unconstrained), gathered per column when needed
    met = ok.copy()

    def bounds(attr: str) -> np.ndarray | None:
        table = [_NAN if getattr(s, attr) is None else getattr(s, attr) for s in c.slos]
        if all(math.isnan(b) for b in table):
            return None
        return np.array([_NAN, *table], dtype=float)[c.slo + 1]

    def meet(bound: np.ndarray | None, got: np.ndarray) -> None:
        if bound is not None:
            with np.errstate(invalid="ignore"):
                np.logical_and(met, np.isnan(bound) | (got <= bound), out=met)

    def pct(a: np.ndarray) -> Percentiles:
        return Percentiles.of(a[ok & ~np.isnan(a)])

    # latencies, one full-length column at a time; tpot counts as 0 for the SLO with < 2
    # outputs, and an absent time gives NaN, which misses any bound
    x = first - arrival
    ttft = pct(x)
    meet(bounds("ttft_s"), x)
    x = finish - arrival
    e2e = pct(x)
    meet(bounds("e2e_s"), x)
    x = dispatch - arrival
    queue = pct(x)
    multi = out > 1
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(multi, (finish - first) / np.maximum(out - 1, 1), _NAN)
    tpot = pct(x)
    bound = bounds("tpot_s")
    if bound is not None:
        meet(bound, np.where(multi, x, 0.0))
    del x, bound, multi
    n_met = int(np.count_nonzero(met))

    # attainment per class (classes without requests are left out)
    p_n, p_met = _ratios(c.priority, met, NUM_PRIORITIES)
    by_priority = {p: float(p_met[p] / p_n[p]) for p in range(p_n.size) if p_n[p]}
    t_n, t_met = _ratios(c.tenant, met, len(c.tenant_names))
    by_tenant = {t: float(t_met[i] / t_n[i])
                 for i, t in sorted(enumerate(c.tenant_names), key=lambda it: it[1]) if t_n[i]}

    rejected = status == _REJECTED
    n_rejected = int(np.count_nonzero(rejected))
    rej = c.reject_cause[rejected]
    counts = np.bincount(rej[rej >= 0], minlength=len(c.reject_causes))
    del rejected, rej
    causes = {name: int(counts[k]) for k, name in enumerate(c.reject_causes) if counts[k]}

    # per-instance usage
    inst = c.instance
    ids = list(c.instance_ids)
    seen = sorted({ids[k] for k in np.unique(inst[inst >= 0]).tolist()})
    order_ids = list(specs) + [i for i in seen if i not in specs]
    index = {iid: k for k, iid in enumerate(ids)}
    has_iv = ~np.isnan(dispatch) & ~np.isnan(finish)
    usage: dict[str, InstanceUsage] = {}
    for iid in order_ids:
        k = index.get(iid)
        mine = inst == k if k is not None else np.zeros(n, dtype=bool)
        iv = mine & has_iv
        s, e = dispatch[iv], finish[iv]
        order = np.argsort(s, kind="stable")
        union = _union_length(s[order], e[order])
        conc = rate(float(np.sum(e - s)))
        spec = specs.get(iid)
        usage[iid] = InstanceUsage(
            instance_id=iid, requests=int(np.count_nonzero(mine)), busy_fraction=rate(union),
            mean_concurrency=conc,
            utilization=None if spec is None else conc / spec.max_inflight)
    del has_iv

    ok_prompt = int(prompt[ok].sum(dtype=np.int64))
    ok_out = int(out[ok].sum(dtype=np.int64))
    ok_tokens = ok_prompt + ok_out
    instance_cost = (sum(s.price_per_hour_usd for s in specs.values()) * duration_s / 3600.0
                     if specs else None)
    per_mtok = (instance_cost / ok_tokens * 1e6
                if instance_cost is not None and ok_tokens > 0 else None)

    return Summary(
        total=n, ok=n_ok, rejected=n_rejected, failed=int(np.count_nonzero(status == _FAILED)),
        rejected_by_cause=dict(sorted(causes.items())), slo_met=n_met,
        retried=int(np.count_nonzero(c.attempts > 1)),
        preemptions=int(c.preemptions.sum(dtype=np.int64)), duration_s=float(duration_s),
        prompt_tokens=ok_prompt, output_tokens=ok_out,
        ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, queue_delay_s=queue,
        slo_attainment=n_met / n if n else _NAN,
        attainment_by_priority=by_priority, attainment_by_tenant=by_tenant,
        goodput_rps=rate(n_met), goodput_tokens_per_s=rate(float(out[met].sum(dtype=np.int64))),
        throughput_rps=rate(n_ok), output_tokens_per_s=rate(ok_out),
        total_tokens_per_s=rate(ok_tokens),
        prefix_cache_hit_ratio=(int(c.cached_prompt_tokens[ok].sum(dtype=np.int64)) / ok_prompt
                                if ok_prompt else _NAN),
        record_cost_usd=_sequential_sum(c.cost_usd),
        instance_cost_usd=instance_cost, cost_per_million_tokens_usd=per_mtok,
        instances=usage,
    )
