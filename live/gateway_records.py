"""Per-request state of the gateway and the bounded ring of finished requests' records.

A :class:`Pending` mirrors where the control plane holds a request (``QUEUED``,
``INFLIGHT``, ``DONE``) and what its HTTP handler is doing. Records are kept as small
tuples in a ring of ``max_records`` (the oldest drop out) and turned into
:class:`~control_plane.records.RequestRecord` (the simulator's format) only when asked for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from control_plane.records import RequestRecord
from control_plane.types import InstanceSpec, Request

if TYPE_CHECKING:
    from control_plane.actions import Reject
    from live.gateway_body import ParsedBody

__all__ = ["DONE", "INFLIGHT", "QUEUED", "Pending", "RecordRing"]

QUEUED, INFLIGHT, DONE = 0, 1, 2


class Pending:
    """One request between its arrival and the end of its HTTP exchange (or, when its
    client left while the control plane still queued it, until the control plane lets
    go of it)."""

    __slots__ = ("abort", "attempt", "attempts", "body", "dispatch_s", "first_s", "forwarding",
                 "gone", "instance", "ready", "recorded", "reject", "request", "started",
                 "state", "task", "waiter")

    def __init__(self, request: Request, body: ParsedBody, task: asyncio.Task | None) -> None:
        self.request = request
        self.body = body
        self.task = task
        self.state = QUEUED
        self.instance: str | None = None  # the latest dispatch
        self.attempt = 0  # its attempt number
        self.attempts = 0  # dispatches so far
        self.ready = False  # a dispatch the handler has not acted on yet
        self.waiter: asyncio.Future | None = None
        self.reject: Reject | None = None
        self.forwarding = 0  # the attempt the handler is forwarding now (0: none)
        self.abort: str | None = None  # why the gateway cancelled that attempt
        self.gone = False  # the handler has returned
        self.started = None  # the client's StreamResponse once the stream started
        self.recorded = False
        self.dispatch_s: float | None = None
        self.first_s: float | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


def slo_met(request: Request, status: str, first_s: float | None, finish_s: float | None,
            output_tokens: int) -> bool:
    """As :attr:`RequestRecord.slo_met` (the same rule, without building a record)."""
    if status != "ok":
        return False
    slo = request.slo
    if slo is None:
        return True
    a = request.arrival_s
    ttft = None if first_s is None else first_s - a
    e2e = None if finish_s is None else finish_s - a
    if output_tokens > 1:
        tpot = None if first_s is None or finish_s is None else (
            (finish_s - first_s) / (output_tokens - 1))
    else:
        tpot = 0.0
    return slo.met(ttft, tpot, e2e)


class RecordRing:
    """The last ``max_records`` finished requests (see the module doc)."""

    def __init__(self, specs: dict[str, InstanceSpec], max_records: int = 100_000) -> None:
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 0:
            raise ValueError(f"max_records must be an integer >= 0, got {max_records!r}")
        self._usd = {iid: s.usd_per_token for iid, s in specs.items()}
        self._ring: deque[tuple] = deque(maxlen=max_records)
        self.total = 0

    def add(self, p: Pending, status: str, *, cause: str | None = None, detail: str = "",
            finish_s: float | None = None, output_tokens: int = 0,
            prompt_tokens: int | None = None, cached_tokens: int = 0) -> None:
        self.total += 1
        r = p.request  # its scalars only: a Request holds the prompt's prefix hashes
        self._ring.append((r.request_id, r.tenant, r.priority, r.arrival_s, r.prompt_tokens,
                           r.slo, status, cause, detail, p.instance, p.dispatch_s,
                           p.first_s if status == "ok" else None, finish_s, output_tokens,
                           p.attempts, prompt_tokens, cached_tokens))

    def __len__(self) -> int:
        return len(self._ring)

    def clear(self) -> None:
        self._ring.clear()

    def records(self) -> Iterator[RequestRecord]:
        for (rid, tenant, priority, arrival_s, estimate, slo, status, cause, detail, iid,
             dispatch_s, first_s, finish_s, out, attempts, prompt, cached) in list(self._ring):
            prompt = estimate if prompt is None else prompt
            if dispatch_s is None:
                iid = None
            if first_s is not None and finish_s is None:
                first_s = None
            cost = 0.0
            if status == "ok" and iid is not None:
                cost = (prompt + out) * self._usd.get(iid, 0.0)
            yield RequestRecord(
                request_id=rid, tenant=tenant, priority=int(priority),
                arrival_s=arrival_s, prompt_tokens=prompt, output_tokens=out, slo=slo,
                instance_id=iid, dispatch_s=dispatch_s, first_token_s=first_s,
                finish_s=finish_s, status=status, reject_cause=cause, reject_detail=detail,
                attempts=attempts, cached_prompt_tokens=min(cached, prompt), cost_usd=cost)
