"""Compact per-request outcomes (numeric columns) for runs too large to keep RequestRecords.

:class:`RecordColumns` stores what :func:`control_plane.metrics.summarize` needs, about 60
bytes per request instead of a RequestRecord object. :meth:`RecordColumns.summary` hands
zero-copy views of its arrays, as :class:`~control_plane.summary_core.SummaryColumns`, to
:func:`~control_plane.summary_core.summarize_columns`, the computation ``summarize`` uses
too (a test checks equality with ``summarize`` on the records of the same run). Request ids
and reject details are not kept.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from control_plane.records import STATUSES
from control_plane.summary_core import Summary, SummaryColumns, summarize_columns
from control_plane.types import SLO, InstanceSpec, Request

__all__ = ["RecordColumns"]

_NAN = float("nan")
_STATUS = {s: k for k, s in enumerate(STATUSES)}  # the codes SummaryColumns uses


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
        """The Summary ``summarize`` gives for the same records."""
        return summarize_columns(self.summary_columns(), instances=instances,
                                 duration_s=duration_s)

    def summary_columns(self) -> SummaryColumns:
        """Zero-copy views of the columns (valid until the next :meth:`append`), plus the
        per-request cost (ok requests: tokens x the instance's price per token)."""
        arrival, dispatch, first, finish = (np.frombuffer(a, dtype=float) for a in self._t)
        prompt, out, cached, pre, tenant = (np.frombuffer(a, dtype=np.int32) for a in self._n)
        attempts, inst, cause = (np.frombuffer(a, dtype=np.int16) for a in self._m)
        status, prio = (np.frombuffer(a, dtype=np.int8) for a in self._s)
        price = np.array([*self.usd_per_token, 0.0], dtype=float)  # [-1]: never dispatched
        cost = np.add(prompt, out, dtype=np.int64) * price[inst]
        cost[status != _STATUS["ok"]] = 0.0
        return SummaryColumns(
            arrival_s=arrival, dispatch_s=dispatch, first_token_s=first, finish_s=finish,
            prompt_tokens=prompt, output_tokens=out, cached_prompt_tokens=cached,
            preemptions=pre, attempts=attempts, status=status, priority=prio,
            tenant=tenant, tenant_names=tuple(self._tenants),
            instance=inst, instance_ids=tuple(self.instance_ids),
            reject_cause=cause, reject_causes=tuple(self._causes),
            slo=np.frombuffer(self._slo, dtype=np.int32), slos=tuple(self._slos),
            cost_usd=cost)
