"""SimPy driver: replays requests through a ControlPlane on modelled instances.

The driver owns simulated time. It submits each request at its arrival, executes the
manager's actions (Dispatch starts a serving process, Retry interrupts one, Reject records
the reason), scrapes every instance's stats into ``observe`` every ``scrape_interval_s``
(so routers see stale engine stats as in live mode) and calls ``tick`` every
``tick_interval_s``. Deterministic: no wall clock, no unseeded randomness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import simpy

from control_plane import (
    ControlPlane,
    ControlPlaneConfig,
    Dispatch,
    EngineStats,
    InstanceSpec,
    Outcome,
    PolicySwitch,
    Reject,
    Request,
    Retry,
)
from control_plane.manager import ControlPlaneCounters
from control_plane.metrics import RequestRecord, Summary, summarize
from sim.request_level import RequestLevelModel

__all__ = ["SimConfig", "SimResult", "simulate"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    scrape_interval_s: float = 0.5
    tick_interval_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("scrape_interval_s", "tick_interval_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"SimConfig.{name}={v!r}: must be a number > 0")


@dataclass(slots=True)
class SimResult:
    records: list[RequestRecord]
    instances: tuple[InstanceSpec, ...]
    switches: list[PolicySwitch]
    counters: ControlPlaneCounters
    end_s: float

    def summary(self) -> Summary:
        return summarize(self.records, instances=self.instances)


@dataclass(slots=True)
class _Track:
    request: Request
    dispatch_s: float | None = None
    first_token_s: float | None = None
    instance_id: str | None = None
    attempts: int = 0
    process: simpy.Process | None = None
    cost_usd: float = 0.0
    extra: dict = field(default_factory=dict)


class _Run:
    def __init__(self, cp: ControlPlane, model: RequestLevelModel, config: SimConfig) -> None:
        self.cp = cp
        self.model = model
        self.config = config
        self.env = simpy.Environment()
        self.specs = {v.instance_id: v.spec for v in cp.cluster.instances}
        self.running = dict.fromkeys(self.specs, 0)
        self.kv_tokens = dict.fromkeys(self.specs, 0)
        self.tracks: dict[str, _Track] = {}
        self.records: list[RequestRecord] = []
        self.arrivals_done = False
        self.all_done = self.env.event()

    # -- actions ----------------------------------------------------------------------
    def execute(self, actions) -> None:
        now = self.env.now
        for a in actions:
            if isinstance(a, Dispatch):
                t = self.tracks[a.request.request_id]
                if t.dispatch_s is None:
                    t.dispatch_s = now
                t.attempts += 1
                t.instance_id = a.instance_id
                t.process = self.env.process(self.serve(t, a.instance_id))
            elif isinstance(a, Retry):
                t = self.tracks[a.request.request_id]
                if t.process is not None and t.process.is_alive:
                    t.process.interrupt(a.reason)
                t.process = None
            elif isinstance(a, Reject):
                t = self.tracks.pop(a.request.request_id)
                self.records.append(RequestRecord.from_request(
                    t.request, status="rejected", reject_cause=a.cause.value,
                    reject_detail=a.detail, instance_id=t.instance_id,
                    dispatch_s=t.dispatch_s, attempts=t.attempts))
        self.check_done()

    def check_done(self) -> None:
        if self.arrivals_done and not self.tracks and not self.all_done.triggered:
            self.all_done.succeed()

    # -- processes --------------------------------------------------------------------
    def serve(self, t: _Track, iid: str):
        env, model, spec, r = self.env, self.model, self.specs[iid], t.request
        started = False
        tokens = r.prompt_tokens + r.expected_output_tokens
        try:
            running = self.running[iid]
            self.running[iid] = running + 1
            self.kv_tokens[iid] += tokens
            started = True
            yield env.timeout(model.ttft_s(r, spec, running))
            t.first_token_s = env.now
            out = r.expected_output_tokens
            yield env.timeout(model.tpot_s(spec, self.running[iid] - 1) * (out - 1)
                              + model.network_delay_s)
        except simpy.Interrupt:
            if started:
                self.running[iid] -= 1
                self.kv_tokens[iid] -= tokens
            return
        self.running[iid] -= 1
        self.kv_tokens[iid] -= tokens
        now = env.now
        del self.tracks[r.request_id]
        self.records.append(RequestRecord.from_request(
            r, status="ok", output_tokens=r.expected_output_tokens, instance_id=iid,
            dispatch_s=t.dispatch_s, first_token_s=t.first_token_s, finish_s=now,
            attempts=t.attempts, cost_usd=tokens * spec.usd_per_token))
        self.execute(self.cp.complete(r.request_id, now, Outcome(
            ttft_s=t.first_token_s - r.arrival_s, e2e_s=now - r.arrival_s,
            output_tokens=r.expected_output_tokens)))

    def arrivals(self, requests: Iterable[Request]):
        env = self.env
        for r in requests:
            if r.arrival_s > env.now:
                yield env.timeout(r.arrival_s - env.now)
            if r.request_id in self.tracks:
                raise ValueError(f"duplicate request id {r.request_id!r} in the workload")
            self.tracks[r.request_id] = _Track(r)
            self.execute(self.cp.submit(r, env.now))
        self.arrivals_done = True
        self.check_done()

    def scraper(self):
        env, cp = self.env, self.cp
        while not self.all_done.triggered:
            for iid, spec in self.specs.items():
                cap = spec.kv_capacity_tokens
                kv = min(1.0, self.kv_tokens[iid] / cap) if cap else 0.0
                self.execute(cp.observe(iid, EngineStats(self.running[iid], 0, kv), env.now))
            yield env.timeout(self.config.scrape_interval_s)

    def ticker(self):
        env = self.env
        while not self.all_done.triggered:
            yield env.timeout(self.config.tick_interval_s)
            self.execute(self.cp.tick(env.now))


def simulate(requests: Iterable[Request], instances: Iterable[InstanceSpec], *,
             policy: object = "fifo", router: object = "round_robin",
             control: ControlPlaneConfig | dict | None = None,
             model: RequestLevelModel | None = None,
             config: SimConfig | None = None) -> SimResult:
    """Run the workload to completion (every request finished or rejected)."""
    specs = tuple(instances)
    cp = ControlPlane(specs, policy=policy, router=router, config=control)
    run = _Run(cp, model or RequestLevelModel(), config or SimConfig())
    env = run.env
    env.process(run.arrivals(requests))
    env.process(run.scraper())
    env.process(run.ticker())
    env.run(until=run.all_done)
    run.records.sort(key=lambda rec: (rec.arrival_s, rec.request_id))
    return SimResult(run.records, specs, list(cp.switches), cp.counters, env.now)
