"""The engine-model cluster in SimPy: instances running :class:`~control_plane.engine.Engine`, the
control plane's actions carried out over a network delay, periodic scrapes and ticks, and
injected failures.

Event order at equal times (so that results do not depend on how the engines' iterations
are batched into events, and fast-forward equals step-by-step exactly): iteration ends
first (by instance index), then ordinary events (arrivals, deliveries, responses, scrapes,
ticks, failures; in creation order), then wake-ups of idle engines. A request delivered at
``t`` therefore joins the first iteration that starts after ``t``, or the one an idle
engine starts at ``t``. Events are plain callbacks at absolute times (no process per
request): a request costs a handful of events whatever its length.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from heapq import heappush

import numpy as np
import simpy

from control_plane import (
    ControlPlane,
    Dispatch,
    EngineStats,
    Outcome,
    Reject,
    Request,
    Retry,
)
from control_plane.engine import Engine, SharedHostPredictor, neighbour_slowdowns, spin_s
from control_plane.engine.contention import DECODING, IDLE, PREFILLING, SPINNING, host_counts
from control_plane.metrics import RequestRecord
from control_plane.types import Health
from sim.columns import RecordColumns
from sim.config import EngineModel, InstanceSim, SimConfig

__all__ = ["ClusterRun", "InstanceSeries"]

_NORMAL = 1
_END_PRIO = -1_000_000  # + instance index: iteration ends before anything else
_WAKE_PRIO = 2  # + instance index: idle engines start after the ordinary events


@dataclass(frozen=True, slots=True)
class InstanceSeries:
    """One instance sampled at every scrape: time, whether it was up, the control
    plane's global queue length and in-flight count for the instance, and the engine's
    running / waiting requests and KV usage (zeros while down)."""

    time_s: np.ndarray
    up: np.ndarray
    cp_queued: np.ndarray
    cp_inflight: np.ndarray
    running: np.ndarray
    waiting: np.ndarray
    kv_usage: np.ndarray


class _Env(simpy.Environment):
    def call_at(self, at: float, priority: int, fn, arg) -> None:
        """Call ``fn(event)`` (``event.arg`` is ``arg``) at the absolute time ``at`` (a
        delay would round: ``now + (at - now)`` need not equal ``at``)."""
        if at < self._now:
            raise ValueError(f"cannot schedule at {at!r} < now {self._now!r}")
        heappush(self._queue, (at, priority, next(self._eid), _Call(fn, arg)))


class _Call:
    """A triggered event with one callback: all ``Environment.step`` needs of an event
    (cheaper than a simpy.Event, let alone a process per request)."""

    __slots__ = ("_ok", "arg", "callbacks")

    def __init__(self, fn, arg) -> None:
        self.callbacks = [fn]
        self._ok = True
        self.arg = arg


class _Track:
    __slots__ = ("attempt", "attempts", "cached", "dispatch_s", "first_token_s", "inst",
                 "preemptions", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.dispatch_s = None
        self.first_token_s = None
        self.inst = None
        self.attempts = 0
        self.attempt = 0  # bumped on every dispatch / retry: stale messages are dropped
        self.preemptions = 0
        self.cached = 0


class _Inst:
    __slots__ = ("cfg", "down", "end_prio", "engine", "host", "idx", "iid", "lost",
                 "predictor", "series", "spec", "spin_s", "spins", "usd_per_token",
                 "version", "wake", "wake_prio", "work")

    def __init__(self, idx: int, sim: InstanceSim, fast_forward: bool,
                 track_admissions: bool = False) -> None:
        self.idx = idx
        self.spec = sim.spec
        self.iid = sim.spec.instance_id
        self.cfg = sim.engine
        self.predictor = sim.predictor or EngineModel.predictor_for(sim.spec)
        self.engine = Engine(self.cfg, self.predictor, fast_forward=fast_forward,
                             track_admissions=track_admissions)
        self.usd_per_token = sim.spec.usd_per_token
        self.down = False
        self.lost = [0, 0]  # iterations and preemptions of engines lost to failures
        self.version = 0
        self.wake = False
        self.end_prio = _END_PRIO + idx
        self.wake_prio = _WAKE_PRIO + idx
        self.series = tuple(array("d") for _ in range(7))
        self.work = IDLE
        self.host: list[_Inst] | None = None  # the others on its host, when they contend
        self.spin_s = spin_s(self.predictor)  # spinning after its last iteration
        self.spins = 0  # spin periods begun (a timer ends only the latest)


class ClusterRun:
    """One run of the engine model: call :meth:`run` with the workload, then read
    ``records`` (or ``columns``), :meth:`series` and the instances' engines."""

    def __init__(self, cp: ControlPlane, insts: Sequence[InstanceSim], config: SimConfig,
                 failures: Sequence[tuple[str, float, float | None]]) -> None:
        self.cp = cp
        self.config = config
        self.env = _Env()
        self.delay = float(config.network_delay_s)
        self.insts = [_Inst(i, s, config.fast_forward, config.track_admissions)
                      for i, s in enumerate(insts)]
        self.admissions: dict[str, float] = {}
        self.by_id = {x.iid: x for x in self.insts}
        self._share_hosts(insts)
        self.tracks: dict[str, _Track] = {}
        self.records: list[RequestRecord] = []
        self.columns = None if config.keep_records else RecordColumns(
            [x.iid for x in self.insts], [x.usd_per_token for x in self.insts])
        self.arrivals_done = False
        self.all_done = self.env.event()
        self._it = None
        for iid, down_s, up_s in failures:
            if iid not in self.by_id:
                raise ValueError(f"failure of unknown instance {iid!r}; known: "
                                 f"{', '.join(self.by_id)}")
            if not down_s >= 0 or (up_s is not None and not up_s > down_s):
                raise ValueError(f"failure of {iid!r}: need 0 <= down_at_s < up_at_s, got "
                                 f"({down_s!r}, {up_s!r})")
            self._at(down_s, _NORMAL, self._down, self.by_id[iid])
            if up_s is not None:
                self._at(up_s, _NORMAL, self._up, self.by_id[iid])

    def _share_hosts(self, sims: Sequence[InstanceSim]) -> None:
        """Instances sharing a host whose predictors know neighbour slowdowns get a
        :class:`SharedHostPredictor`; the others run as before."""
        hosts: dict[str, list[_Inst]] = {}
        for inst, s in zip(self.insts, sims, strict=True):
            if s.host is not None:
                hosts.setdefault(s.host, []).append(inst)
        for group in hosts.values():
            slow = [neighbour_slowdowns(x.predictor) for x in group]
            if len(group) < 2 or not any(map(any, slow)):
                continue
            for inst, sd in zip(group, slow, strict=True):
                inst.host = [x for x in group if x is not inst]
                if any(sd):
                    inst.predictor = SharedHostPredictor(inst.predictor, sd)
                    inst.engine = self._new_engine(inst)

    def _new_engine(self, inst: _Inst) -> Engine:
        c = self.config
        return Engine(inst.cfg, inst.predictor, fast_forward=c.fast_forward,
                      track_admissions=c.track_admissions)

    def drain_admissions(self, inst: _Inst | None = None) -> None:
        """Move the engines' admission logs into :attr:`admissions` (a request admitted by
        several engines, retried, keeps its latest admission: the serving engine's)."""
        adm = self.admissions
        for x in (self.insts if inst is None else (inst,)):
            log = x.engine.admissions
            if log:
                for rid, t in log:
                    if t >= adm.get(rid, t):
                        adm[rid] = t
                log.clear()

    def _work(self, inst: _Inst, work: int, spin: bool = True) -> None:
        """``inst`` now does ``work`` (IDLE, DECODING, PREFILLING, SPINNING): its host's
        other engines change speed (a decode run in progress ends with its current
        iteration, see Engine.retime). An engine that stops working spins for its
        ``spin_s`` first (if any), then idles (``spin=False``: at once)."""
        if spin and work == IDLE and inst.spin_s > 0 and inst.work != IDLE:
            if inst.work == SPINNING:
                return   # spins on until its timer
            work = SPINNING
            inst.spins += 1
            self._at(self.env.now + inst.spin_s, _NORMAL, self._spun, (inst, inst.spins))
        if work == inst.work:
            return
        inst.work = work
        now = self.env.now
        for other in inst.host:
            p = other.predictor
            if type(p) is not SharedHostPredictor:
                continue
            eng = other.engine
            end = eng.plan_end_s
            if not p.respeed(eng, host_counts(x.work for x in other.host), now):
                continue
            if eng.busy and eng.plan_end_s != end:
                other.version += 1
                self._at(eng.plan_end_s, other.end_prio, self._end, (other, other.version))

    def _spun(self, ev) -> None:
        inst, spins = ev.arg
        if spins == inst.spins and inst.work == SPINNING:
            self._work(inst, IDLE, spin=False)

    def _at(self, at: float, prio: int, fn, arg) -> None:
        self.env.call_at(at, prio, fn, arg)

    # -- actions ----------------------------------------------------------------------
    def execute(self, actions) -> None:
        now = self.env.now
        for a in actions:
            cls = type(a)
            if cls is Dispatch:
                t = self.tracks[a.request.request_id]
                if t.dispatch_s is None:
                    t.dispatch_s = now
                t.attempts += 1
                t.attempt += 1
                inst = self.by_id[a.instance_id]
                t.inst = inst
                self._at(now + self.delay, _NORMAL, self._deliver, (t, inst, t.attempt))
            elif cls is Retry:
                t = self.tracks[a.request.request_id]
                t.attempt += 1
                t.first_token_s = None
                inst = self.by_id[a.from_instance]
                if not inst.down:
                    self._abort(inst, a.request.request_id)
            elif cls is Reject:
                t = self.tracks.pop(a.request.request_id)
                self._record(t, "rejected", cause=a.cause.value, detail=a.detail)
        if self.arrivals_done and not self.tracks:
            self._finish_run()

    def _finish_run(self) -> None:
        if not self.all_done.triggered:
            self.all_done.succeed()

    def _record(self, t: _Track, status: str, *, cause: str | None = None, detail: str = "",
                finish_s: float | None = None, output_tokens: int = 0) -> None:
        r = t.request
        inst = t.inst
        first = t.first_token_s if status == "ok" else None
        if self.columns is not None:
            self.columns.append(r, status, cause, None if inst is None else inst.idx,
                                t.dispatch_s, first, finish_s, output_tokens, t.attempts,
                                t.preemptions, t.cached)
            return
        cost = 0.0
        if status == "ok":
            cost = (r.prompt_tokens + output_tokens) * inst.usd_per_token
        self.records.append(RequestRecord.from_request(
            r, status=status, reject_cause=cause, reject_detail=detail,
            instance_id=None if inst is None else inst.iid, dispatch_s=t.dispatch_s,
            first_token_s=first, finish_s=finish_s, output_tokens=output_tokens,
            attempts=t.attempts, preemptions=t.preemptions, cached_prompt_tokens=t.cached,
            cost_usd=cost))

    # -- requests -----------------------------------------------------------------------
    def _next_arrival(self) -> None:
        r = next(self._it, None)
        if r is None:
            self.arrivals_done = True
            if not self.tracks:
                self._finish_run()
            return
        now = self.env.now
        self._at(r.arrival_s if r.arrival_s > now else now, _NORMAL, self._arrive, r)

    def _arrive(self, ev) -> None:
        r = ev.arg
        if r.request_id in self.tracks:
            raise ValueError(f"duplicate request id {r.request_id!r} in the workload")
        self.tracks[r.request_id] = _Track(r)
        self.execute(self.cp.submit(r, self.env.now))
        self._next_arrival()

    def _deliver(self, ev) -> None:
        t, inst, attempt = ev.arg
        if attempt != t.attempt:
            return  # retried while in transit
        now = self.env.now
        eng = inst.engine
        r = t.request
        if not eng.fits(r):
            del self.tracks[r.request_id]
            detail = (f"{r.request_id}: {r.prompt_tokens}+{r.expected_output_tokens} tokens "
                      f"exceed {inst.iid}'s KV capacity / batch limits")
            self._record(t, "failed", cause="too_long", detail=detail)
            self.execute(self.cp.complete(r.request_id, now, Outcome(
                ok=False, retryable=False, error=detail)))
            return
        if not eng.busy:
            eng.add(r, now)
            if not inst.wake:
                inst.wake = True
                self._at(now, inst.wake_prio, self._wake, (inst, inst.version))
            return
        end = eng.plan_end_s
        eng.add(r, now)
        if eng.plan_end_s != end:
            inst.version += 1
            self._at(eng.plan_end_s, inst.end_prio, self._end, (inst, inst.version))

    def _abort(self, inst: _Inst, rid: str) -> None:
        eng = inst.engine
        end = eng.plan_end_s
        if eng.abort(rid, self.env.now) and eng.busy and eng.plan_end_s != end:
            inst.version += 1
            self._at(eng.plan_end_s, inst.end_prio, self._end, (inst, inst.version))

    # -- engines ------------------------------------------------------------------------
    def _start(self, inst: _Inst) -> None:
        end = inst.engine.start(self.env.now)
        if end is not None:
            self._at(end, inst.end_prio, self._end, (inst, inst.version))
        if inst.host is not None:
            self._work(inst, IDLE if end is None else
                       PREFILLING if inst.engine.prefilling else DECODING)

    def _wake(self, ev) -> None:
        inst, version = ev.arg
        if version != inst.version:
            return
        inst.wake = False
        if not inst.engine.busy:
            self._start(inst)

    def _end(self, ev) -> None:
        inst, version = ev.arg
        if version != inst.version:
            return
        now = self.env.now
        out = inst.engine.complete(now)
        tracks, delay = self.tracks, self.delay
        for rid, t_first in out.first_tokens:
            tracks[rid].first_token_s = t_first + delay
        for rid, _, out_tokens, cached, preemptions in out.finished:
            t = tracks[rid]
            t.preemptions += preemptions
            t.cached = cached
            if delay:
                self._at(now + delay, _NORMAL, self._respond, (t, t.attempt, out_tokens))
            else:
                self._done(t, out_tokens)
        self._start(inst)

    def _respond(self, ev) -> None:
        t, attempt, out_tokens = ev.arg
        if attempt == t.attempt:
            self._done(t, out_tokens)

    def _done(self, t: _Track, out_tokens: int) -> None:
        now = self.env.now
        r = t.request
        rid = r.request_id
        del self.tracks[rid]
        self._record(t, "ok", finish_s=now, output_tokens=out_tokens)
        arrival = r.arrival_s
        self.execute(self.cp.complete(rid, now, Outcome(
            ttft_s=t.first_token_s - arrival, e2e_s=now - arrival, output_tokens=out_tokens,
            cached_prompt_tokens=t.cached)))

    # -- failures -----------------------------------------------------------------------
    def _down(self, ev) -> None:
        inst = ev.arg
        if inst.down:
            return
        inst.down = True
        inst.version += 1  # drop the pending iteration end / wake-up
        inst.wake = False
        inst.lost[0] += inst.engine.steps
        inst.lost[1] += inst.engine.preemptions
        self.drain_admissions(inst)
        inst.engine = self._new_engine(inst)
        if inst.host is not None:
            self._work(inst, IDLE, spin=False)  # a dead engine's worker does not spin
        self.execute(self.cp.set_health(inst.iid, Health.DOWN, self.env.now,
                                        "failure injected"))

    def _up(self, ev) -> None:
        inst = ev.arg
        if not inst.down:
            return
        inst.down = False
        self.execute(self.cp.set_health(inst.iid, Health.UP, self.env.now,
                                        "recovered (empty)"))

    # -- timers -------------------------------------------------------------------------
    def _scrape(self, ev) -> None:
        now = self.env.now
        cp = self.cp
        keep = self.config.keep_series
        views = cp.cluster.instances
        for inst in self.insts:
            st = EngineStats() if inst.down else inst.engine.stats(now)
            if keep:
                s = inst.series
                s[0].append(now)
                s[1].append(0.0 if inst.down else 1.0)
                s[2].append(cp.cluster.queued)
                s[3].append(views[inst.idx].inflight)
                s[4].append(st.running)
                s[5].append(st.waiting)
                s[6].append(st.kv_usage)
            if not inst.down:
                self.execute(cp.observe(inst.iid, st, now))
        if not self.all_done.triggered:
            self._at(now + self.config.scrape_interval_s, _NORMAL, self._scrape, None)

    def _tick(self, ev) -> None:
        now = self.env.now
        self.execute(self.cp.tick(now))
        if not self.all_done.triggered:
            self._at(now + self.config.tick_interval_s, _NORMAL, self._tick, None)

    def run(self, requests: Iterable[Request]) -> None:
        self._it = iter(requests)
        self._at(0.0, _NORMAL, self._scrape, None)
        self._at(self.config.tick_interval_s, _NORMAL, self._tick, None)
        self._next_arrival()
        self.env.run(until=self.all_done)

    def series(self) -> dict[str, InstanceSeries]:
        out = {}
        for inst in self.insts:
            s = inst.series
            out[inst.iid] = InstanceSeries(
                np.frombuffer(s[0], dtype=float).copy(), np.frombuffer(s[1]) > 0,
                np.frombuffer(s[2]).astype(np.int64), np.frombuffer(s[3]).astype(np.int64),
                np.frombuffer(s[4]).astype(np.int64), np.frombuffer(s[5]).astype(np.int64),
                np.frombuffer(s[6], dtype=float).copy())
        return out
