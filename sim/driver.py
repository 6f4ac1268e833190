"""SimPy driver: replays requests through a ControlPlane on modelled instances.

The driver owns simulated time. It submits each request at its arrival, executes the
manager's actions (Dispatch sends the request to an instance, Retry cancels an attempt,
Reject records the reason), scrapes every instance's engine stats into ``observe`` every
``scrape_interval_s`` (routers see stale engine stats, as in live mode) and calls ``tick``
every ``tick_interval_s``. Deterministic: no wall clock, no unseeded randomness.

Service models:

- the default, :class:`~sim.config.EngineModel`: each instance runs a
  :class:`~control_plane.engine.Engine` (vLLM v1 scheduler semantics, paged KV, prefix caching,
  preemption) timed by an iteration-time predictor, in :mod:`sim.cluster`: requests cross a
  network delay gateway -> engine and back; ``failures`` take instances down (their
  in-flight requests are retried elsewhere by the control plane and counted in
  ``attempts``) and back up, empty;
- :class:`~sim.request_level.RequestLevelModel`: the coarse request-level model.

Memory: with ``SimConfig(keep_records=False)`` per-request outcomes go to compact columns
(:class:`~sim.columns.RecordColumns`) that still give the full :class:`Summary`; the
workload iterable is consumed lazily (pass a generator, e.g. ``Trace.requests()``).
"""

from __future__ import annotations

import dataclasses
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
from sim.cluster import ClusterRun, InstanceSeries
from sim.columns import RecordColumns
from sim.config import EngineModel, InstanceSim, SimConfig
from sim.request_level import RequestLevelModel

__all__ = ["SimResult", "simulate"]


@dataclass(slots=True)
class SimResult:
    records: list[RequestRecord]
    instances: tuple[InstanceSpec, ...]
    switches: list[PolicySwitch]
    counters: ControlPlaneCounters
    end_s: float
    series: dict[str, InstanceSeries] = field(default_factory=dict)
    columns: RecordColumns | None = None  # keep_records=False: the compact records
    # per instance: engine iterations run and preemptions (engine model)
    engine_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    # SimConfig.track_admissions: request id -> start of the iteration that first scheduled
    # it on the engine that served it
    admissions: dict[str, float] = field(default_factory=dict)

    def summary(self) -> Summary:
        if self.columns is not None:
            return self.columns.summary(instances=self.instances)
        return summarize(self.records, instances=self.instances)


# -- the request-level model ------------------------------------------------------------
@dataclass(slots=True)
class _RTrack:
    request: Request
    dispatch_s: float | None = None
    first_token_s: float | None = None
    instance_id: str | None = None
    attempts: int = 0
    process: simpy.Process | None = None


class _RequestLevelRun:
    def __init__(self, cp: ControlPlane, model: RequestLevelModel, config: SimConfig) -> None:
        self.cp = cp
        self.model = model
        self.config = config
        self.env = simpy.Environment()
        self.specs = {v.instance_id: v.spec for v in cp.cluster.instances}
        self.running = dict.fromkeys(self.specs, 0)
        self.kv_tokens = dict.fromkeys(self.specs, 0)
        self.tracks: dict[str, _RTrack] = {}
        self.records: list[RequestRecord] = []
        self.arrivals_done = False
        self.all_done = self.env.event()

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
        if self.arrivals_done and not self.tracks and not self.all_done.triggered:
            self.all_done.succeed()

    def serve(self, t: _RTrack, iid: str):
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
            self.tracks[r.request_id] = _RTrack(r)
            self.execute(self.cp.submit(r, env.now))
        self.arrivals_done = True
        if not self.tracks and not self.all_done.triggered:
            self.all_done.succeed()

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


def simulate(requests: Iterable[Request], instances: Iterable[InstanceSpec | InstanceSim], *,
             policy: object = "fifo", router: object = "round_robin",
             control: ControlPlaneConfig | dict | None = None,
             model: EngineModel | RequestLevelModel | None = None,
             config: SimConfig | None = None,
             failures: Iterable[tuple[str, float, float | None]] = (),
             hash_block_size: int | None = None) -> SimResult:
    """Run the workload to completion (every request finished, rejected or failed).

    ``hash_block_size``: tokens per block of the requests' ``prefix_hashes`` (a Trace's
    ``block_size``, e.g. 512 for Mooncake); engines whose ``EngineConfig.hash_block_size`` is
    None take it (else they read the hashes as their own 16-token blocks).

    ``instances``: InstanceSpecs (engine settings from ``model``) or InstanceSims.
    ``model``: None or an :class:`EngineModel` (iteration-level engines, the default) or a
    :class:`RequestLevelModel`. ``failures``: ``(instance_id, down_at_s, up_at_s or None)``.
    """
    config = config or SimConfig()
    model = model if model is not None else EngineModel()
    failures = list(failures)
    if isinstance(model, RequestLevelModel):
        if any(isinstance(x, InstanceSim) for x in instances) or failures:
            raise ValueError("InstanceSim and failures need the engine model")
        specs = tuple(instances)
        cp = ControlPlane(specs, policy=policy, router=router, config=control)
        rrun = _RequestLevelRun(cp, model, config)
        env = rrun.env
        env.process(rrun.arrivals(requests))
        env.process(rrun.scraper())
        env.process(rrun.ticker())
        env.run(until=rrun.all_done)
        rrun.records.sort(key=lambda rec: (rec.arrival_s, rec.request_id))
        return SimResult(rrun.records, specs, list(cp.switches), cp.counters, env.now)
    if not isinstance(model, EngineModel):
        raise TypeError(f"model must be an EngineModel or a RequestLevelModel, got {model!r}")
    sims = [x if isinstance(x, InstanceSim) else model.instance_for(x) for x in instances]
    if hash_block_size is not None:
        sims = [dataclasses.replace(x, engine=dataclasses.replace(
                    x.engine, hash_block_size=hash_block_size))
                if x.engine.hash_block_size is None else x for x in sims]
    specs = tuple(x.spec for x in sims)
    cp = ControlPlane(specs, policy=policy, router=router, config=control)
    run = ClusterRun(cp, sims, config, failures)
    run.run(requests)
    run.records.sort(key=lambda rec: (rec.arrival_s, rec.request_id))
    engines = {x.iid: {"steps": x.engine.steps + x.lost[0],
                       "preemptions": x.engine.preemptions + x.lost[1]} for x in run.insts}
    run.drain_admissions()
    return SimResult(run.records, specs, list(cp.switches), cp.counters, run.env.now,
                     run.series() if config.keep_series else {}, run.columns, engines,
                     run.admissions)
