"""Simulator vs the live path without vLLM: the gateway in front of emulated engines.

The same requests go

- through :func:`sim.simulate` (the engine model, :mod:`control_plane.engine`, in
  simulated time; ``network_delay_s`` one way between gateway and engine), and
- through the live gateway (:class:`live.gateway.Gateway`, the same policy and router) in
  front of emulated engines (:class:`live.emulate.EmulatedEngine`: the same engine model run
  in real time and served as vLLM's OpenAI API on loopback ports), driven in real time by
  the replay client (:func:`live.replay.replay`; client-side records),

with the same engine settings, iteration-time predictor, scrape and tick intervals. Both
sides run one engine model, so the comparison measures the live machinery (HTTP hops, the
event loop's timer lateness, real-time metric scrapes, the client's send lag) against the
simulator's model of it; how close the engine model is to a real vLLM is what
``benchmarks/fidelity.py`` measures with real engines. Everything runs in this process, in a
worker thread with its own event loop (so it also works under a notebook's running loop).

A live run is only a measurement if the machine kept real time: its ``max_send_lag_s`` (the
latest a request was sent after its arrival) and ``max_engine_late_s`` (the latest an
iteration's tokens went out after its planned end) say how late things got. A run later than
``max_late_s`` (another job took the CPUs) is repeated up to ``retries`` times; the run's row
says how many attempts it took and whether the kept one ``kept_real_time``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd

from control_plane import ControlPlane, InstanceSpec, Request
from control_plane.engine import EngineConfig
from control_plane.perf.base import LinearPredictor
from control_plane.records import RequestRecord
from live.emulate import EmulatedEngine
from live.emulate_api import EmulatorServer
from live.gateway import Gateway, GatewayConfig
from live.replay import ReplayConfig, replay
from sagellm.capacity import cluster_capacity_rps
from sagellm.results import records_frame
from sim import InstanceSim, SimConfig, simulate
from workloads import Uniform, arrivals, shared_system_prompts, transform
from workloads.trace import Trace

__all__ = ["LIVE", "MODEL", "SIM", "EmulatedSetup", "LiveRunner", "compare_emulated",
           "emulated_workload"]

SIM, LIVE = "sim", "live (emulated engines)"
MODEL = "emulated"   # the served model name


@dataclass(frozen=True, slots=True)
class EmulatedSetup:
    """The emulated cluster: ``engines`` identical engines with ``engine`` settings and
    ``predictor`` iteration times; the driver intervals of both sides."""

    engines: int = 2
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(
        max_num_seqs=8, max_num_batched_tokens=1024, num_gpu_blocks=4000))
    predictor: LinearPredictor = field(default_factory=lambda: LinearPredictor(
        overhead_s=0.02, per_token_s=1e-4, per_context_s=2e-7))
    max_inflight: int = 64
    network_delay_s: float = 0.001
    scrape_interval_s: float = 0.1
    tick_interval_s: float = 0.1

    @property
    def names(self) -> list[str]:
        return [f"e{k}" for k in range(self.engines)]

    def specs(self, urls: dict[str, str] | None = None) -> list[InstanceSpec]:
        return [InstanceSpec(n, url=(urls or {}).get(n), max_inflight=self.max_inflight)
                for n in self.names]

    def instances(self) -> list[InstanceSim]:
        return [InstanceSim(s, self.engine, self.predictor) for s in self.specs()]

    def capacity_rps(self, trace: Trace) -> float:
        """Estimated request rate the engines sustain for ``trace``'s lengths."""
        return cluster_capacity_rps(self.instances(), trace.prompt_tokens, trace.output_tokens)


def emulated_workload(requests: int, seed: int = 0) -> Trace:
    """Short requests sized for real-time runs: Poisson arrivals (1 request/s, rescaled by
    :func:`compare_emulated`), one of 4 shared 256-token system prompts + a 64-512-token
    user message, 8-32 output tokens."""
    return shared_system_prompts(arrivals.poisson(1.0, n=requests, seed=seed), n_prompts=4,
                                 system_tokens=256, user_tokens=Uniform(64, 512),
                                 output_tokens=Uniform(8, 32), seed=seed, name="emulated-mix")


# (requests, setup, policy, router) -> (the live records, the latest send after its arrival,
# the latest iteration end after its planned end), in seconds
LiveRunner = Callable[[list[Request], EmulatedSetup, object, object],
                      tuple[list[RequestRecord], float, float]]


async def _live(requests: list[Request], setup: EmulatedSetup, policy: object,
                router: object) -> tuple[list[RequestRecord], float, float]:
    servers = [EmulatorServer(EmulatedEngine(setup.engine, setup.predictor), MODEL)
               for _ in setup.names]
    gw = None
    try:
        urls = {}
        for name, srv in zip(setup.names, servers, strict=True):
            await srv.listen()
            urls[name] = srv.url
        gw = Gateway(ControlPlane(setup.specs(urls), policy, router),
                     config=GatewayConfig(scrape_interval_s=setup.scrape_interval_s,
                                          tick_interval_s=setup.tick_interval_s,
                                          health_interval_s=0.5))
        port = await gw.listen("127.0.0.1", 0)
        res = await replay(requests, f"http://127.0.0.1:{port}", ReplayConfig(model=MODEL))
        late = max(s.engine.max_late_s for s in servers)
        return res.records, res.max_send_lag_s, late
    finally:
        if gw is not None:
            await gw.close()
        for srv in servers:
            await srv.close()


def _run_live(requests: list[Request], setup: EmulatedSetup, policy: object,
              router: object) -> tuple[list[RequestRecord], float, float]:
    """:func:`_live` on a fresh event loop in a worker thread, the garbage collector paused
    (a full collection mid-run is a pause of the whole process)."""
    gc.collect()
    gc.disable()
    try:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _live(requests, setup, policy, router)).result()
    finally:
        gc.enable()


def _frame(records: list[RequestRecord], **labels: object) -> pd.DataFrame:
    df = records_frame(records)
    for k, (name, value) in enumerate(labels.items()):
        df.insert(k, name, value)
    return df


def compare_emulated(trace: Trace, *, loads: tuple[float, ...] = (0.5,),
                     routers: tuple = ("least_loaded",), policy: object = "fifo",
                     setup: EmulatedSetup | None = None, max_late_s: float = 0.05,
                     retries: int = 2, live: LiveRunner | None = None,
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``trace`` at each load (fraction of :meth:`EmulatedSetup.capacity_rps`) with each
    router through both sides. Returns (records of every run with ``source``, ``load``,
    ``router`` and ``offered_rps`` leading, one row per run with its lateness, attempts and
    counts); see the module doc for ``max_late_s`` and ``retries``. ``live``: runs the live
    side (default: gateway, engines and client on one event loop in this process)."""
    run_live = live or _run_live
    setup = setup or EmulatedSetup()
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries={retries!r}: must be an integer >= 0")
    if len(trace) < 2 or not trace.duration_s > 0:
        raise ValueError(f"{trace.name}: needs at least 2 requests spread over time")
    capacity = setup.capacity_rps(trace)
    rate = len(trace) / trace.duration_s
    frames, runs = [], []
    for load in loads:
        scaled = transform.scale_rate(trace, load * capacity / rate)
        requests = list(scaled.requests())
        offered = load * capacity
        for router in routers:
            label = router if isinstance(router, str) else str(router.get("type"))
            sim = simulate(requests, setup.instances(), policy=policy, router=router,
                           config=SimConfig(network_delay_s=setup.network_delay_s,
                                            scrape_interval_s=setup.scrape_interval_s,
                                            tick_interval_s=setup.tick_interval_s,
                                            keep_series=False))
            attempts = 0
            while True:
                attempts += 1
                got, send_lag, engine_late = run_live(requests, setup, policy, router)
                if max(send_lag, engine_late) <= max_late_s or attempts > retries:
                    break
            common = {"load": float(load), "router": label, "offered_rps": offered}
            frames += [_frame(sim.records, source=SIM, **common),
                       _frame(got, source=LIVE, **common)]
            runs.append({**common, "requests": len(requests),
                         "sim_ok": sum(r.status == "ok" for r in sim.records),
                         "live_ok": sum(r.status == "ok" for r in got),
                         "max_send_lag_s": send_lag, "max_engine_late_s": engine_late,
                         "attempts": attempts,
                         "kept_real_time": max(send_lag, engine_late) <= max_late_s})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(runs)
