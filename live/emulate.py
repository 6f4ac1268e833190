"""An emulated vLLM engine: the simulator's engine model run in real time on the event loop.

:class:`EmulatedEngine` drives one :class:`control_plane.engine.Engine` (vLLM v1 scheduler
semantics: token budget, chunked prefill, ``max_num_seqs``, paged KV blocks, prefix
caching, preemption by recompute) with the loop's monotonic clock, one iteration at a time:
an iteration planned at ``t`` ends at ``t + predictor(batch)``; the task sleeps until then
and hands the tokens of that iteration to the request streams (:class:`TokenStream`), so a
client sees the first token when the prefill's iteration ends and then one token per
iteration, as from a real engine. :mod:`live.emulate_api` serves it as vLLM's OpenAI API.

The engine's clock follows the model, not the wake-ups: the next iteration starts at the
previous one's planned end, so timer latency (the loop wakes a fraction of a millisecond
late) delays when tokens are sent but never accumulates. A request arriving while the
engine is in an iteration joins the next one, as in the simulator; one that arrives
while the loop is late (after the planned end, before the loop got there) joins at its
arrival time as the model says. If the loop falls more than ``max_lag_s`` behind (an
overloaded process), the engine's clock jumps to real time (counted in ``resyncs``, and a
warning logged at most every ``WARN_EVERY_S``) rather than racing to catch up.

Differences from vLLM: outputs have exactly the requested length (as with
``ignore_eos``); no stop strings, sampling, logprobs or ``n`` > 1; the prompt's length is
exact for token ids and estimated for text (see :mod:`live.emulate_api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import replace

from control_plane.engine import Engine, EngineConfig, StepOutcome
from control_plane.engine.contention import DECODING, IDLE, PREFILLING
from control_plane.perf.base import IterationPredictor
from control_plane.prefix import DEFAULT_BLOCK_SIZE
from control_plane.types import Request
from live.emulate_metrics import EngineCounters, EngineLoad

__all__ = ["EmulatedEngine", "EngineRefused", "TokenStream"]

log = logging.getLogger(__name__)
WARN_EVERY_S = 10.0


class EngineRefused(ValueError):
    """The request can never run on this engine (more KV blocks than it has, or without
    chunked prefill more tokens than the batch budget)."""


class TokenStream:
    """One request's output as the engine produces it: ``tokens`` so far, ``done`` when
    all ``output_tokens`` are out (``cached_tokens``: its prefix-cache hit) or it ended
    early (``error``). Times are on the loop's clock."""

    __slots__ = ("_event", "arrival_s", "cached_tokens", "done", "error", "finish_s",
                 "first_token_s", "last_token_s", "output_tokens", "prompt_tokens",
                 "request_id", "scheduled_s", "tokens")

    def __init__(self, request_id: str, arrival_s: float, prompt_tokens: int,
                 output_tokens: int) -> None:
        self.request_id = request_id
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.tokens = 0
        self.scheduled_s: float | None = None  # first scheduled (vLLM's scheduled_ts)
        self.first_token_s: float | None = None
        self.last_token_s: float | None = None
        self.finish_s: float | None = None
        self.cached_tokens = 0
        self.done = False
        self.error: str | None = None
        self._event = asyncio.Event()

    async def wait(self, seen: int) -> int:
        """Wait until more than ``seen`` tokens are out or the stream is done; the count."""
        while self.tokens <= seen and not self.done:
            self._event.clear()
            await self._event.wait()
        return self.tokens

    def _advance(self, tokens: int, now: float) -> None:
        self.tokens = tokens
        self.last_token_s = now
        self._event.set()

    def _end(self, now: float, error: str | None = None) -> None:
        self.done = True
        self.finish_s = now
        self.error = error
        self._event.set()


class EmulatedEngine:
    """One engine model in real time (see the module doc). Call :meth:`start` on the running
    loop, then :meth:`submit` / :meth:`abort`; :meth:`stop` ends it. Prompts' prefix hashes
    are per block of ``control_plane.prefix.DEFAULT_BLOCK_SIZE`` (16) tokens, as
    :func:`control_plane.prefix.block_hashes` and the gateway make them, whatever the
    engine's KV ``block_size`` (``config.hash_block_size`` is set to match)."""

    def __init__(self, config: EngineConfig, predictor: IterationPredictor, *,
                 max_lag_s: float = 0.05) -> None:
        if not max_lag_s >= 0:
            raise ValueError(f"max_lag_s={max_lag_s!r}: must be >= 0")
        config = replace(config, hash_block_size=DEFAULT_BLOCK_SIZE)
        self.config = config
        self.predictor = predictor
        self.max_lag_s = float(max_lag_s)
        self.engine = Engine(config, predictor, fast_forward=False, track_admissions=True)
        self.counters = EngineCounters()
        self.resyncs = 0  # times the clock jumped to real time (loop more than max_lag_s late)
        self.max_late_s = 0.0  # latest an iteration's tokens went out after its planned end
        self.failed: str | None = None  # why the iteration loop died (then /health is 503)
        self._pending: dict[str, TokenStream] = {}  # no token yet
        self._active: dict[str, TokenStream] = {}  # first token out
        self._inbox: deque[Request] = deque()  # arrived while the loop was late or idle
        self._wake = asyncio.Event()
        self._t = 0.0  # the engine's clock: where the next iteration may start
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.host = None   # an EmulatedHost (live.emulate_host) when it shares a machine
        self.host_index = 0
        self.label = "emulated engine"  # in its warnings (the server sets its URL)
        self._warn_after = -math.inf  # falling behind is logged at most every WARN_EVERY_S

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._t = self._loop.time()
            self._task = self._loop.create_task(self._run(), name="emulated engine")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        now = self.now()
        for s in [*self._pending.values(), *self._active.values()]:
            s._end(now, "the engine stopped")
        self._pending.clear()
        self._active.clear()
        self._inbox.clear()

    def now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    # -- requests -----------------------------------------------------------------------
    def submit(self, request_id: str, prompt_tokens: int, output_tokens: int, *,
               priority: int = 0, prefix_hashes: tuple[int, ...] = (),
               arrival_s: float | None = None) -> TokenStream:
        """A request arrives now (``arrival_s``: at that time of :meth:`now`, no later than
        now; the prompts of one batched API request arrive together). ``prefix_hashes``:
        chained hashes of its prompt's blocks of 16 tokens (prefix caching). Raises
        EngineRefused when it could never run here, ValueError on a duplicate id or bad
        figures."""
        if self._task is None or self.failed is not None:
            raise RuntimeError("the emulated engine is not running"
                               + (f" (it failed: {self.failed})" if self.failed else ""))
        if request_id in self._pending or request_id in self._active:
            raise ValueError(f"request {request_id!r} is already in the engine")
        now = self.now()
        if arrival_s is not None:
            if not arrival_s <= now:
                raise ValueError(f"arrival_s={arrival_s!r}: later than now ({now!r})")
            now = arrival_s
        req = Request(request_id, now, prompt_tokens, output_tokens=output_tokens,
                      priority=priority, prefix_hashes=prefix_hashes)
        eng = self.engine
        if not eng.fits(req):
            c = self.config
            raise EngineRefused(
                f"{prompt_tokens} prompt + {output_tokens} output tokens do not fit this "
                f"engine ({c.num_gpu_blocks} KV blocks of {c.block_size} tokens"
                + ("" if c.enable_chunked_prefill else
                   f", {c.max_num_batched_tokens} tokens per batch without chunked prefill")
                + ")")
        stream = TokenStream(request_id, now, prompt_tokens, output_tokens)
        self._pending[request_id] = stream
        end = eng.plan_end_s
        if eng.busy and end is not None and now < end:
            eng.add(req, now)  # joins the iteration after the one in progress
        else:
            self._inbox.append(req)
            self._wake.set()
        return stream

    def abort(self, request_id: str) -> bool:
        """The client left: free the request's blocks now. False if it is not in the
        engine (finished, aborted or unknown)."""
        stream = self._pending.pop(request_id, None) or self._active.pop(request_id, None)
        if stream is None:
            return False
        now = self.now()
        for i, r in enumerate(self._inbox):
            if r.request_id == request_id:
                del self._inbox[i]
                break
        else:
            self.engine.abort(request_id, now)
        stream._end(now, "aborted")
        return True

    def load(self) -> EngineLoad:
        """What ``/metrics`` reports now (arrivals not yet handed to the model count as
        waiting)."""
        eng = self.engine
        st = eng.stats()
        return EngineLoad(st.running, st.waiting + len(self._inbox), st.kv_usage,
                          eng.preemptions, eng.prefix_queries, eng.prefix_hits)

    @property
    def in_flight(self) -> int:
        """Requests in the engine (waiting or running)."""
        return len(self._pending) + len(self._active)

    # -- the iteration loop -------------------------------------------------------------
    def _take_inbox(self, upto_s: float, inclusive: bool) -> None:
        inbox, eng = self._inbox, self.engine
        while inbox and (inbox[0].arrival_s <= upto_s if inclusive
                         else inbox[0].arrival_s < upto_s):
            r = inbox.popleft()
            eng.add(r, r.arrival_s)

    async def _run(self) -> None:
        try:
            await self._iterate()
        except Exception as exc:  # a bug in the model: fail the requests, report unhealthy
            log.exception("emulated engine failed")
            self.failed = f"{type(exc).__name__}: {exc}"
            now = self.now()
            for s in [*self._pending.values(), *self._active.values()]:
                s._end(now, f"the engine failed: {self.failed}")
            self._pending.clear()
            self._active.clear()
            self._inbox.clear()

    async def _iterate(self) -> None:
        loop = asyncio.get_running_loop()
        eng, inbox = self.engine, self._inbox
        while True:
            if not eng.has_work():
                if self.host is not None:   # out of work: its neighbours speed up
                    self.host.set_work(self.host_index, IDLE, self._t)
                if not inbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # an idle engine starts when its first request arrives
                t = max(self._t, inbox[0].arrival_s)
                self._take_inbox(t, inclusive=True)
            else:  # requests arriving exactly at t have missed this iteration
                t = self._t
                self._take_inbox(t, inclusive=False)
            end = eng.start(t)
            if end is None:
                raise RuntimeError("the engine model planned nothing although it has work")
            tokens = eng.step_tokens
            if self.host is not None:   # timed: now its neighbours slow down
                self.host.set_work(self.host_index,
                                   PREFILLING if eng.prefilling else DECODING, t)
            self._take_inbox(end, inclusive=False)  # arrived during it: join the next one
            await asyncio.sleep(max(0.0, end - loop.time()))  # yields even when late
            now = loop.time()
            out = eng.complete(end)
            self._emit(out, end)
            for k in range(out.steps):   # vLLM's: prompt tokens computed + tokens generated
                self.counters.iteration_tokens.observe(
                    tokens + (len(out.first_tokens) if k == 0 else 0))
            late = now - end
            self.max_late_s = max(self.max_late_s, late)
            if late > self.max_lag_s:
                self.resyncs += 1
                self._t = now
                if now >= self._warn_after:
                    self._warn_after = now + WARN_EVERY_S
                    log.warning("%s fell %.0f ms behind real time (resyncs so far: %d): the "
                                "process is overloaded, and its latencies include the stalls",
                                self.label, late * 1e3, self.resyncs)
            else:
                self._t = end

    def _emit(self, out: StepOutcome, end: float) -> None:
        """Hand the tokens of the iteration(s) that ended at ``end`` to the streams."""
        eng, c = self.engine, self.counters
        pending, active = self._pending, self._active
        adm = eng.admissions
        if adm:
            for rid, t in adm:
                s = pending.get(rid)
                if s is not None:   # first admissions only (the engine logs no others)
                    s.scheduled_s = t
                    c.queue_time.observe(t - s.arrival_s)
            adm.clear()
        for rid, _ in out.first_tokens:
            s = pending.pop(rid, None)
            if s is not None:
                s.first_token_s = end
                c.ttft.observe(end - s.arrival_s)
                if s.scheduled_s is not None:
                    c.prefill_time.observe(end - s.scheduled_s)
                c.prompt_tokens += s.prompt_tokens
                active[rid] = s
        for rid, _, n_out, cached, _ in out.finished:
            s = active.pop(rid, None)
            if s is None:
                continue
            self._progress(s, n_out, end)
            s.cached_tokens = cached
            c.success += 1
            c.e2e.observe(end - s.arrival_s)
            if s.first_token_s is not None:
                c.decode_time.observe(end - s.first_token_s)
            if s.scheduled_s is not None:
                c.inference_time.observe(end - s.scheduled_s)
            s._end(end)
        for s in active.values():
            n = eng.output_tokens(s.request_id)
            if n is not None and n > s.tokens:
                self._progress(s, n, end)

    def _progress(self, s: TokenStream, n: int, end: float) -> None:
        c = self.counters
        if s.last_token_s is not None and n > s.tokens:
            c.itl.observe(end - s.last_token_s)
        c.generation_tokens += n - s.tokens
        s._advance(n, end)
