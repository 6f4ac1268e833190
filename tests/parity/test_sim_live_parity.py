"""Sim/live parity: one trace, one scripted backend, identical dispatch decisions.

The trace (30 requests: sessions, priorities, varied prompt/output lengths) runs first
through :func:`sim.simulate` with a request-level model whose service time of each request
is fixed by a script (no contention terms, no network delay). The simulator's run fixes the
order of events: arrivals and completions, by simulated time (the script keeps them apart).

The same trace then runs through the live gateway against fake vLLM engines that hold each
request until the test releases it. The test replays the simulator's event order: an
arrival sends the request (token counts, priority, session and id in headers) and waits
until the control plane has taken it; a completion releases that request at its engine and
waits until the control plane has seen it complete. Timers (scrapes, health, ticks) run as
usual: with these routers and policies they cannot change a decision (engines report no
waiting work and no KV capacity is set), which is part of what the test checks.

Decisions are recorded by a :class:`Router` wrapper (``on_dispatch`` runs on every
dispatch the control plane makes) and compared as ``(request_id, instance_id)`` sequences.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from control_plane import ControlPlane, InstanceSpec, Request
from control_plane.routing import Router, create_router
from live.gateway import Gateway, GatewayConfig
from sim import simulate
from sim.config import SimConfig
from sim.request_level import RequestLevelModel
from tests.live.fake_vllm import MODEL, FakeVllm
from tests.live.harness import FAST, run

NAMES = ("a", "b", "c")
SEED = 7
N = 30


# -- the trace ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    rid: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    priority: int
    session: str | None
    service_s: float


def trace() -> list[Item]:
    items = []
    for i in range(N):
        items.append(Item(
            rid=f"r{i:02d}", arrival_s=float(i),
            prompt_tokens=64 + (i * 37) % 200,
            output_tokens=1 + (i * 13) % 17,
            priority=(i * 3) % 5,
            session=None if i % 4 == 3 else f"s{i % 5}",
            # distinct fractional parts keep every event at its own simulated time
            service_s=2.0 + ((i * 7) % 11) * 0.5 + 0.0137 * (i + 1)))
    return items


def requests(items: list[Item]) -> list[Request]:
    return [Request(x.rid, x.arrival_s, x.prompt_tokens, output_tokens=x.output_tokens,
                    max_tokens=x.output_tokens, priority=x.priority, session_id=x.session)
            for x in items]


# -- recording ---------------------------------------------------------------------------
class Recorder(Router):
    """Delegates to a router and records every dispatch in order."""

    def __init__(self, inner: Router) -> None:
        self.inner = inner
        self.name = inner.name
        self.decisions: list[tuple[str, str]] = []

    def route(self, request, candidates, cluster, rng):
        return self.inner.route(request, candidates, cluster, rng)

    def on_dispatch(self, request, instance, now):
        self.decisions.append((request.request_id, instance.instance_id))
        self.inner.on_dispatch(request, instance, now)

    def on_finish(self, request, instance, outcome, now):
        self.inner.on_finish(request, instance, outcome, now)


def specs(max_inflight: int, urls: dict[str, str] | None = None) -> list[InstanceSpec]:
    urls = urls or {}
    return [InstanceSpec(n, url=urls.get(n), max_inflight=max_inflight) for n in NAMES]


# -- sim side ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScriptedModel(RequestLevelModel):
    """Service time of each request taken from the script; no contention, no network."""

    service_s: dict = field(default_factory=dict)

    def ttft_s(self, request, spec, running):
        return self.service_s[request.request_id]

    def tpot_s(self, spec, running):
        return 0.0


def run_sim(items, policy, router, max_inflight):
    rec = Recorder(create_router(router))
    model = ScriptedModel(prefill_slowdown=0.0, decode_slowdown=0.0, network_delay_s=0.0,
                          service_s={x.rid: x.service_s for x in items})
    res = simulate(requests(items), specs(max_inflight), policy=policy, router=rec,
                   control={"seed": SEED}, model=model,
                   config=SimConfig(scrape_interval_s=0.5, tick_interval_s=0.5))
    assert all(r.status == "ok" for r in res.records)
    assert res.counters.completed == len(items)
    events = []
    for r in res.records:
        events.append((r.arrival_s, 0, r.request_id))
        events.append((r.finish_s, 1, r.request_id))
    events.sort()
    times = [t for t, _, _ in events]
    assert all(b - a > 1e-6 for a, b in itertools.pairwise(times)), "events must not tie"
    by_id = {r.request_id: r for r in res.records}
    return rec.decisions, [("arrive" if k == 0 else "finish", rid) for _, k, rid in events], \
        by_id


# -- live side ---------------------------------------------------------------------------
class ScriptedVllm(FakeVllm):
    """Holds each request (keyed by its prompt) until :meth:`finish` releases it."""

    def __init__(self, name: str) -> None:
        super().__init__(name, tokens=1)
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, prompt: str) -> asyncio.Event:
        return self.gates.setdefault(prompt, asyncio.Event())

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp caches the body for the handler
        await self.gate(str(body["prompt"])).wait()
        return await super()._completions(request)


async def run_live(items, events, policy, router, max_inflight):
    engines = {n: ScriptedVllm(n) for n in NAMES}
    rec = Recorder(create_router(router))
    http = aiohttp.ClientSession()
    gw = None
    try:
        urls = {n: await e.start() for n, e in engines.items()}
        cp = ControlPlane(specs(max_inflight, urls), policy, rec, {"seed": SEED})
        gw = Gateway(cp, config=GatewayConfig(**FAST))
        port = await gw.listen("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/v1/completions"
        item = {x.rid: x for x in items}

        async def send(x: Item) -> int:
            headers = {"x-request-id": x.rid, "x-priority": str(x.priority),
                       "x-prompt-tokens": str(x.prompt_tokens),
                       "x-output-tokens": str(x.output_tokens)}
            if x.session is not None:
                headers["x-session-id"] = x.session
            body = {"model": MODEL, "prompt": f"prompt of {x.rid}",
                    "max_tokens": x.output_tokens}
            async with http.post(url, json=body, headers=headers) as r:
                await r.read()
                return r.status

        tasks = []
        arrived = finished = 0
        for kind, rid in events:
            if kind == "arrive":
                arrived += 1
                tasks.append(asyncio.create_task(send(item[rid])))
                await gw.wait_until(lambda n=arrived: cp.counters.submitted == n, 10.0)
            else:
                finished += 1
                for e in engines.values():
                    e.gate(f"prompt of {rid}").set()
                await gw.wait_until(lambda n=finished: cp.counters.completed == n, 10.0)
        statuses = await asyncio.gather(*tasks)
        assert statuses == [200] * len(items)
        return rec.decisions, {rid: e.name for e in engines.values()
                               for rid in (b["prompt"].split()[-1] for b in e.bodies)}
    finally:
        await http.close()
        if gw is not None:
            await gw.close()
        for e in engines.values():
            await e.stop()


CASES = [
    ("fifo", "round_robin", 2),
    ("fifo", "least_loaded", 2),
    ("fifo", "session_affinity", 2),
    ("fifo", "power_of_two", 2),
    ("fifo", "least_loaded", 64),
    ("priority", "round_robin", 2),
    ("priority", "least_loaded", 2),
    ("priority", "power_of_two", 1),
    ("priority", "session_affinity", 1),
]


@pytest.mark.parametrize(("policy", "router", "max_inflight"), CASES,
                         ids=[f"{p}-{r}-{m}" for p, r, m in CASES])
def test_sim_and_live_take_the_same_dispatch_decisions(policy, router, max_inflight):
    items = trace()
    sim_decisions, events, sim_records = run_sim(items, policy, router, max_inflight)
    assert len(sim_decisions) == N
    live_decisions, live_engine_of = run(run_live(items, events, policy, router,
                                                  max_inflight))
    assert live_decisions == sim_decisions
    # the engines really served what was decided, and the sim recorded the same placement
    assert live_engine_of == {rid: iid for rid, iid in sim_decisions}
    assert {rid: r.instance_id for rid, r in sim_records.items()} == live_engine_of


def test_the_trace_exercises_queueing_and_spread():
    """Guards the trace itself: with limits, requests wait and go out of arrival order."""
    items = trace()
    decisions, _, records = run_sim(items, "priority", "round_robin", 1)
    queued = [r for r in records.values() if r.dispatch_s > r.arrival_s + 1e-9]
    assert len(queued) >= 10
    assert [rid for rid, _ in decisions] != sorted(rid for rid, _ in decisions)
    for router in ("round_robin", "least_loaded", "session_affinity", "power_of_two"):
        decisions, _, _ = run_sim(items, "fifo", router, 2)
        assert len({iid for _, iid in decisions}) == len(NAMES)
