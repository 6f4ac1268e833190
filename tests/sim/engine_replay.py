"""Replay requests on one Engine without a control plane (test helper).

Same arrival semantics as the SimPy driver with zero network delay: a request arriving
during an iteration (or run) joins the next iteration; one arriving exactly when an
iteration starts joins the one after; an idle engine starts with everything arrived.
"""

from __future__ import annotations

from collections.abc import Iterable

from control_plane.engine import Engine
from control_plane.types import Request


def replay(engine: Engine, requests: Iterable[Request], *, check: bool = True) -> dict:
    """Run to completion; {request id: {first, finish, output, cached, preemptions}}.
    ``check``: verify the KV accounting after every planned stretch."""
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    out: dict[str, dict] = {}
    t, i = 0.0, 0
    while i < len(reqs) or engine.has_work():
        if not engine.busy:
            if not engine.has_work():
                t = max(t, reqs[i].arrival_s)
            while i < len(reqs) and reqs[i].arrival_s <= t:
                engine.add(reqs[i], t)
                i += 1
            engine.start(t)
            continue
        end = engine.plan_end_s
        if i < len(reqs) and reqs[i].arrival_s < end:
            engine.add(reqs[i], reqs[i].arrival_s)  # may cut a decode run
            i += 1
            continue
        o = engine.complete(end)
        t = end
        if check:
            engine.check()
        for rid, tf in o.first_tokens:
            out.setdefault(rid, {})["first"] = tf
        for rid, tf, n, cached, pre in o.finished:
            out[rid].update(finish=tf, output=n, cached=cached, preemptions=pre)
        if engine.has_work():
            engine.start(t)
    return out
