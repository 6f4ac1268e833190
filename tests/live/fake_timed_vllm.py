"""A fake vLLM server with a continuous-batching engine and a *known* iteration-time model.

For calibration tests: ``/v1/completions`` (token-id prompts, ``max_tokens``, streaming),
``/health``, ``/v1/models``, ``/version`` and ``/metrics`` with the histogram totals vLLM
exports. The engine loop schedules like vLLM (running decodes first, then waiting
prefills FCFS within ``max_batched_tokens`` and ``max_num_seqs``, chunking the last one),
and each iteration lasts ``model.iteration_s(Batch(...))`` *virtual* seconds, slept in real
time (``pace`` x that) so that concurrent clients see a real schedule. Engine-side
timestamps (queue, prefill, decode, inference, TTFT, e2e) use the virtual clock, so they
hold the model's times exactly whatever the machine's load; a request arriving during an
iteration gets the virtual time the real time since its start maps to. A request
whose client disconnects is aborted, as vLLM does (streamed or not). ``api_s`` is a real
delay the fake "API server" adds before a request reaches the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

from control_plane.engine import SharedHostPredictor
from control_plane.perf.base import Batch

MODEL = "timed-model"


@dataclass
class _Req:
    prompt: int
    max_tokens: int
    arrival_vt: float
    done: asyncio.Event
    out: asyncio.Queue
    computed: int = 0
    generated: int = 0
    scheduled_vt: float | None = None
    first_vt: float | None = None
    last_vt: float = 0.0
    aborted: bool = False


class TimedVllm:
    def __init__(self, model, *, max_batched_tokens: int = 4096, max_num_seqs: int = 16,
                 max_model_len: int = 2048, api_s: float = 0.0, pace: float = 1.0,
                 late_stats: bool = False) -> None:
        self.model = model
        self.max_batched_tokens = max_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.api_s = api_s
        self.pace = pace
        self.vt = 0.0
        self._step_real = 0.0
        self._step_len = 0.0
        self.last_step_end = float("-inf")   # real time, for a neighbour's spin
        self.waiting: list[_Req] = []
        self.running: list[_Req] = []
        self._chunked: list[_Req] = []   # prompts in the iteration in progress
        self.hist = {k: [0.0, 0] for k in ("queue", "prefill", "decode", "inference", "ttft",
                                           "e2e", "itl", "iter")}
        self.counters = {"success": 0, "generated": 0, "prompt": 0}
        # late_stats: /metrics shows the figures as of the last time the engine was idle,
        # like an API server too slow to report a run before it has ended
        self.late_stats = late_stats
        self._shown = self._copy()
        self.batches: list[Batch] = []
        self.aborted = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- server ---------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[-1][1]}"
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self.url

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for r in self.waiting + self.running:   # let their handlers end
            r.done.set()
            r.out.put_nowait(r.max_tokens)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "fake-1"})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": MODEL, "object": "model", "max_model_len": self.max_model_len}]})

    def _copy(self) -> tuple[dict, dict, int, int]:
        # like vLLM, a request whose prompt the iteration in progress computes is running
        prefilling = sum(1 for r in self._chunked if r not in self.waiting)
        return ({k: list(v) for k, v in self.hist.items()}, dict(self.counters),
                len(self.running) + prefilling, len(self.waiting))

    async def _metrics(self, request: web.Request) -> web.Response:
        names = {"queue": "vllm:request_queue_time_seconds",
                 "prefill": "vllm:request_prefill_time_seconds",
                 "decode": "vllm:request_decode_time_seconds",
                 "inference": "vllm:request_inference_time_seconds",
                 "ttft": "vllm:time_to_first_token_seconds",
                 "e2e": "vllm:e2e_request_latency_seconds",
                 "itl": "vllm:inter_token_latency_seconds",
                 "iter": "vllm:iteration_tokens_total"}
        lab = f'{{engine="0",model_name="{MODEL}"}}'
        hist, counters, running, waiting = self._shown if self.late_stats else self._copy()
        lines = [f"vllm:num_requests_running{lab} {running}",
                 f"vllm:num_requests_waiting{lab} {waiting}",
                 f"vllm:prefix_cache_hits_total{lab} 0.0",
                 f"vllm:num_preemptions_total{lab} 0.0",
                 f"vllm:generation_tokens_total{lab} {counters['generated']}",
                 f"vllm:prompt_tokens_total{lab} {counters['prompt']}",
                 'vllm:request_success_total{engine="0",finished_reason="length",'
                 f'model_name="{MODEL}"}} {counters["success"]}',
                 'vllm:request_success_total{engine="0",finished_reason="stop",'
                 f'model_name="{MODEL}"}} 0.0']
        for key, name in names.items():
            s, n = hist[key]
            lines += [f"# TYPE {name} histogram", f"{name}_sum{lab} {s!r}",
                      f"{name}_count{lab} {float(n)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt, n = body["prompt"], int(body["max_tokens"])
        if isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            return await self._batch(prompt, n, body)
        if not isinstance(prompt, list) or len(prompt) + n > self.max_model_len:
            return web.json_response({"error": "bad prompt"}, status=400)
        if self.api_s:
            await asyncio.sleep(self.api_s)
        req = _Req(len(prompt), n, self._now_vt(), asyncio.Event(), asyncio.Queue())
        self.waiting.append(req)
        self._wake.set()
        usage = {"prompt_tokens": req.prompt, "completion_tokens": n,
                 "total_tokens": req.prompt + n}
        if not body.get("stream"):
            try:
                await req.done.wait()
            except asyncio.CancelledError:       # the client left: abort
                self._abort(req)
                raise
            return web.json_response({"id": "x", "object": "text_completion", "choices": [
                {"index": 0, "text": "t" * n, "finish_reason": "length"}], "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        try:
            while sent < n:
                sent += await req.out.get()
                await resp.write(b'data: {"choices":[{"index":0,"text":"t"}]}\n\n')
        except (asyncio.CancelledError, ConnectionError):   # the client left: abort
            self._abort(req)
            raise
        await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode()
                         + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _batch(self, prompts: list[list[int]], n: int, body: dict) -> web.Response:
        """Several prompts in one non-streamed request: they reach the engine together."""
        if body.get("stream") or any(len(p) + n > self.max_model_len for p in prompts):
            return web.json_response({"error": "bad prompt"}, status=400)
        if self.api_s:
            await asyncio.sleep(self.api_s)
        reqs = [_Req(len(p), n, self._now_vt(), asyncio.Event(), asyncio.Queue())
                for p in prompts]
        self.waiting.extend(reqs)
        self._wake.set()
        try:
            await asyncio.gather(*(r.done.wait() for r in reqs))
        except asyncio.CancelledError:
            for r in reqs:
                self._abort(r)
            raise
        total = sum(r.prompt for r in reqs)
        return web.json_response({"id": "x", "object": "text_completion", "choices": [
            {"index": k, "text": "t" * n, "finish_reason": "length"}
            for k in range(len(reqs))], "usage": {
                "prompt_tokens": total, "completion_tokens": n * len(reqs),
                "total_tokens": total + n * len(reqs)}})

    def _abort(self, req: _Req) -> None:
        self.aborted += 1
        req.aborted = True
        for queue in (self.waiting, self.running):
            if req in queue:
                queue.remove(req)

    # -- engine ---------------------------------------------------------------------------
    def _now_vt(self) -> float:
        if self._step_len <= 0:
            return self.vt
        return self.vt + min(self._step_len, (time.monotonic() - self._step_real) / self.pace)

    def _observe(self, key: str, value: float) -> None:
        self.hist[key][0] += value
        self.hist[key][1] += 1

    async def _loop(self) -> None:
        while True:
            if not self.waiting and not self.running:
                self._shown = self._copy()
                self._wake.clear()
                await self._wake.wait()
            budget = self.max_batched_tokens
            decodes = list(self.running)
            budget -= len(decodes)
            ctx = sum(r.prompt + r.generated for r in decodes)
            chunks = []
            while (self.waiting and budget > 0
                   and len(self.running) + len(chunks) < self.max_num_seqs):
                r = self.waiting[0]
                take = min(r.prompt - r.computed, budget)
                chunks.append((r, take))
                budget -= take
                if r.computed + take < r.prompt:
                    break
                self.waiting.pop(0)
            ptok = sum(t for _, t in chunks)
            patt = sum(t * (r.computed + t) for r, t in chunks)
            batch = Batch(ptok, patt, len(decodes), ctx)
            self.batches.append(batch)
            for r, _ in chunks:
                if r.scheduled_vt is None:
                    r.scheduled_vt = self.vt
            d = self.model.iteration_s(batch)
            self._chunked = [r for r, _ in chunks]
            self._step_real, self._step_len = time.monotonic(), d
            await asyncio.sleep(d * self.pace)
            self.vt += d
            self._step_len = 0.0
            self.last_step_end = time.monotonic()
            self._chunked = []
            self._observe("iter", ptok + len(decodes))
            for r in decodes:
                if not r.aborted:
                    self._token(r)
            for r, t in chunks:
                if r.aborted:
                    continue
                r.computed += t
                if r.computed == r.prompt:
                    self.counters["prompt"] += r.prompt
                    self.running.append(r)
                    self._token(r)

    def _token(self, r: _Req) -> None:
        r.generated += 1
        self.counters["generated"] += 1
        if r.first_vt is None:
            r.first_vt = self.vt
            self._observe("ttft", self.vt - r.arrival_vt)
        else:
            self._observe("itl", self.vt - r.last_vt)
        r.last_vt = self.vt
        r.out.put_nowait(1)
        if r.generated == r.max_tokens:
            self.running.remove(r)
            for key, v in (("queue", r.scheduled_vt - r.arrival_vt),
                           ("prefill", r.first_vt - r.scheduled_vt),
                           ("decode", r.last_vt - r.first_vt),
                           ("inference", r.last_vt - r.scheduled_vt),
                           ("e2e", r.last_vt - r.arrival_vt)):
                self._observe(key, v)
            self.counters["success"] += 1
            r.done.set()


@contextlib.contextmanager
def served_in_thread(engine: TimedVllm) -> Iterator[str]:
    """Serve ``engine`` from its own event loop in a thread (for callers that run their own
    loop, such as a CLI command under test); yields its URL and stops it on exit."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(engine.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield engine.url
    finally:
        asyncio.run_coroutine_threadsafe(engine.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


SPIN_S = 0.3   # Neighboured fakes' "worker" spins this long after its last iteration


class Neighboured:
    """``base``'s iteration time, slowed as SharedHostPredictor says (``slow``: its six
    slowdowns) by what the other fake engine (``others[0]``, filled in once it exists)
    does when this one's iteration starts: prefilling if its iteration in progress has
    prompt tokens, else decoding (the simulator's rule); spinning if it has none but ended
    one less than SPIN_S ago."""

    def __init__(self, base, slow, others: list) -> None:
        self.p = SharedHostPredictor(base, slow)
        self.others = others

    def iteration_s(self, batch: Batch) -> float:
        o = self.others[0]
        busy = o._step_len > 0
        prefilling = busy and o.batches[-1].prefill_tokens > 0
        spinning = not busy and time.monotonic() - o.last_step_end < SPIN_S
        self.p.set_neighbours(int(busy and not prefilling), int(prefilling), int(spinning))
        return self.p.iteration_s(batch)


def neighbour_pair(base, slow, **kw) -> tuple[TimedVllm, TimedVllm]:
    """Two TimedVllm fakes on one "machine": the first is ``base`` slowed by ``slow`` (six
    slowdowns, :class:`Neighboured`) by what the second does; the second runs ``base``
    undisturbed. ``kw`` goes to both (e.g. ``pace``)."""
    box_a: list = []
    box_b: list = []
    engine = TimedVllm(Neighboured(base, slow, box_b), **kw)
    other = TimedVllm(Neighboured(base, (0,) * 6, box_a), **kw)
    box_a.append(engine)
    box_b.append(other)
    return engine, other
