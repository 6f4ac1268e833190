"""Compact per-request outcomes (numeric columns) for runs too large to keep RequestRecords.

:class:`RecordColumns` stores what :func:`control_plane.metrics.summarize` needs, about 60
bytes per request instead of a RequestRecord object, and :meth:`RecordColumns.summary`
computes the same :class:`~control_plane.metrics.Summary` with the same numpy operations in
the same order (a test checks equality with ``summarize`` on the records of the same run).
Request ids and reject details are not kept.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from control_plane.metrics import InstanceUsage, Percentiles, Summary
from control_plane.types import NUM_PRIORITIES, SLO, InstanceSpec, Request

__all__ = ["RecordColumns"]

_NAN = float("nan")
_STATUS = {"ok": 0, "rejected": 1, "failed": 2}


def _union_length(start: np.ndarray, end: np.ndarray) -> float:
    if start.size == 0:
        return 0.0
    reach = np.maximum.accumulate(end)
    new = np.empty(start.size, dtype=bool)
    new[0] = True
    new[1:] = start[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, start.size - 1)
    return float(np.sum(reach[last] - start[first]))


class RecordColumns:
    """Append-only columns of request outcomes (times NaN when absent), ~60 bytes each."""

    def __init__(self, instance_ids: Sequence[str],
                 usd_per_token: Sequence[float] | None = None) -> None:
        self.instance_ids = list(instance_ids)
        self.usd_per_token = list(usd_per_token or [0.0] * len(self.instance_ids))
        self._t = tuple(array("d") for _ in range(4))  # arrival, dispatch, first, finish
        self._n = tuple(array("i") for _ in range(5))  # prompt, output, cached, pre, tenant
        self._m = tuple(array("h") for _ in range(3))  # attempts, instance, cause
        self._s = tuple(array("b") for _ in range(2))  # status, priority
        self._slo = array("i")
        self._tenants: dict[str, int] = {}
        self._causes: dict[str, int] = {}
        self._slos: dict[SLO, int] = {}

    def __len__(self) -> int:
        return len(self._t[0])

    def append(self, r: Request, status: str, cause: str | None, instance: int | None,
               dispatch_s: float | None, first_token_s: float | None,
               finish_s: float | None, output_tokens: int, attempts: int, preemptions: int,
               cached: int) -> None:
        """One request's outcome (``cost_usd`` follows from the instance's price)."""
        t, n, m, s = self._t, self._n, self._m, self._s
        t[0].append(r.arrival_s)
        t[1].append(_NAN if dispatch_s is None else dispatch_s)
        t[2].append(_NAN if first_token_s is None else first_token_s)
        t[3].append(_NAN if finish_s is None else finish_s)
        n[0].append(r.prompt_tokens)
        n[1].append(output_tokens)
        n[2].append(cached)
        n[3].append(preemptions)
        tenants = self._tenants
        n[4].append(tenants.setdefault(r.tenant, len(tenants)))
        m[0].append(attempts)
        m[1].append(-1 if instance is None else instance)
        if cause is None:
            m[2].append(-1)
        else:
            causes = self._causes
            m[2].append(causes.setdefault(cause, len(causes)))
        s[0].append(_STATUS[status])
        s[1].append(int(r.priority))
        slo = r.slo
        if slo is None:
            self._slo.append(-1)
        else:
            slos = self._slos
            self._slo.append(slos.setdefault(slo, len(slos)))

    def summary(self, *, instances: Sequence[InstanceSpec] | None = None,
                duration_s: float | None = None) -> Summary:
        """The Summary ``summarize`` gives for the same records (up to float summation
        order), computing one latency column at a time to bound memory."""
        arrival, dispatch, first, finish = (np.frombuffer(a, dtype=float) for a in self._t)
        prompt, out, cached, pre, tenant_i = (np.frombuffer(a, dtype=np.int32)
                                              for a in self._n)
        attempts, inst_i, cause_i = (np.frombuffer(a, dtype=np.int16) for a in self._m)
        status = np.frombuffer(self._s[0], dtype=np.int8)
        prio = np.frombuffer(self._s[1], dtype=np.int8)
        slo_i = np.frombuffer(self._slo, dtype=np.int32)
        n = len(self)
        specs = {s.instance_id: s for s in instances or ()}
        ok = status == 0
        n_ok = int(ok.sum())
        n_rejected = int((status == 1).sum())
        if duration_s is None:
            if n:
                end = max(float(np.fmax.reduce(a)) for a in (arrival, dispatch, first, finish))
                duration_s = end - float(arrival.min())
            else:
                duration_s = 0.0

        def rate(x: float) -> float:
            return x / duration_s if duration_s > 0 else _NAN

        slo_list = list(self._slos)
        met = ok.copy()

        def meet(attr: str, got: np.ndarray) -> None:
            nonlocal met
            if not slo_list:
                return
            table = np.array([_NAN] + [_NAN if getattr(s, attr) is None else getattr(s, attr)
                                       for s in slo_list], dtype=float)
            bound = table[slo_i + 1]
            with np.errstate(invalid="ignore"):
                met &= np.isnan(bound) | (got <= bound)

        def pct(a: np.ndarray) -> Percentiles:
            return Percentiles.of(a[ok & ~np.isnan(a)])

        x = first - arrival
        ttft = pct(x)
        meet("ttft_s", x)
        x = finish - arrival
        e2e = pct(x)
        meet("e2e_s", x)
        x = dispatch - arrival
        queue = pct(x)
        multi = out > 1
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(multi, (finish - first) / np.maximum(out - 1, 1), _NAN)
        tpot = pct(x)
        meet("tpot_s", np.where(multi, x, 0.0))
        del x
        n_met = int(met.sum())

        by_prio_n = np.bincount(prio, minlength=NUM_PRIORITIES)
        by_prio_met = np.bincount(prio[met], minlength=NUM_PRIORITIES)
        by_priority = {p: float(by_prio_met[p] / by_prio_n[p])
                       for p in range(NUM_PRIORITIES) if by_prio_n[p]}
        ntn = len(self._tenants)
        t_n = np.bincount(tenant_i, minlength=ntn)
        t_met = np.bincount(tenant_i[met], minlength=ntn)
        by_tenant = {t: float(t_met[i] / t_n[i]) for t, i in sorted(self._tenants.items())}

        names = list(self._causes)
        rej = cause_i[status == 1]
        counts = np.bincount(rej, minlength=len(names)) if rej.size else np.zeros(len(names))
        causes = {names[k]: int(c) for k, c in enumerate(counts) if c}

        seen = sorted({self.instance_ids[k] for k in np.unique(inst_i[inst_i >= 0])})
        order_ids = list(specs) + [i for i in seen if i not in specs]
        index = {iid: k for k, iid in enumerate(self.instance_ids)}
        has_iv = ~np.isnan(dispatch) & ~np.isnan(finish)
        usage: dict[str, InstanceUsage] = {}
        cost = 0.0
        for iid in order_ids:
            k = index.get(iid)
            mine = inst_i == k if k is not None else np.zeros(n, dtype=bool)
            if k is not None:
                served = mine & ok
                cost += float(np.sum(prompt[served], dtype=np.int64)
                              + np.sum(out[served], dtype=np.int64)) * self.usd_per_token[k]
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

        ok_prompt = int(prompt[ok].sum(dtype=np.int64))
        ok_out = int(out[ok].sum(dtype=np.int64))
        ok_tokens = ok_prompt + ok_out
        instance_cost = (sum(s.price_per_hour_usd for s in specs.values()) * duration_s / 3600.0
                         if specs else None)
        per_mtok = (instance_cost / ok_tokens * 1e6
                    if instance_cost is not None and ok_tokens > 0 else None)
        return Summary(
            total=n, ok=n_ok, rejected=n_rejected, failed=int((status == 2).sum()),
            rejected_by_cause=dict(sorted(causes.items())), slo_met=n_met,
            retried=int((attempts > 1).sum()), preemptions=int(pre.sum(dtype=np.int64)),
            duration_s=float(duration_s), prompt_tokens=ok_prompt, output_tokens=ok_out,
            ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, queue_delay_s=queue,
            slo_attainment=n_met / n if n else _NAN,
            attainment_by_priority=by_priority, attainment_by_tenant=by_tenant,
            goodput_rps=rate(n_met),
            goodput_tokens_per_s=rate(float(out[met].sum(dtype=np.int64))),
            throughput_rps=rate(n_ok), output_tokens_per_s=rate(ok_out),
            total_tokens_per_s=rate(ok_tokens),
            prefix_cache_hit_ratio=(int(cached[ok].sum(dtype=np.int64)) / ok_prompt
                                    if ok_prompt else _NAN),
            record_cost_usd=cost,
            instance_cost_usd=instance_cost, cost_per_million_tokens_usd=per_mtok,
            instances=usage,
        )
