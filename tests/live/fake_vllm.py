"""A small scripted OpenAI-compatible upstream that speaks like a vLLM server.

Serves ``/v1/completions`` and ``/v1/chat/completions`` (streamed in vLLM's SSE format:
one chunk per token, a finish chunk, the usage chunk when ``stream_options.include_usage``
is set, then ``data: [DONE]``), ``/metrics`` with vLLM metric names, ``/health`` and
``/v1/models`` on 127.0.0.1 at an ephemeral port. Behaviour is scripted per engine:
``mode`` ("ok", "status500", "status400", "drop": close the connection without an answer,
"drop_headers": send the SSE headers then close, "die_after": stream ``die_after`` tokens
then cut the connection), ``gate`` (hold every request before its first token until
:meth:`FakeVllm.release`), ``healthy``, and the load ``/metrics`` reports.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

MODEL = "fake-model"


class FakeVllm:
    def __init__(self, name: str, *, tokens: int = 4, token_delay_s: float = 0.0) -> None:
        self.name = name
        self.tokens = tokens
        self.token_delay_s = token_delay_s
        self.mode = "ok"
        self.die_after = 2
        self.healthy = True
        self.metrics_status = 200
        self.running: int | None = None  # None: report the requests in progress
        self.waiting = 0
        self.kv_usage = 0.0
        self.prefix_hits = 0
        self.prefix_queries = 0
        self.bodies: list[dict] = []  # every request body, in arrival order
        self.finished: list[str] = []  # prompts of the requests answered in full
        self.active = 0
        self.max_active = 0
        self._gate: asyncio.Event | None = None
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- control ------------------------------------------------------------------------
    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def wait_arrivals(self, n: int, timeout_s: float = 5.0) -> None:
        if len(self.bodies) >= n:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        await asyncio.wait_for(fut, timeout_s)

    def prompts(self) -> list[str]:
        return [_prompt_of(b) for b in self.bodies]

    # -- server -------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[-1][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._gate is not None:
            self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 0, "owned_by": "vllm",
             "root": MODEL, "max_model_len": 2048}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics_status != 200:
            return web.Response(status=self.metrics_status, text="broken")
        running = self.active if self.running is None else self.running
        lines = []
        for name, kind, values in (
                ("vllm:num_requests_running", "gauge", (running, 0)),
                ("vllm:num_requests_waiting", "gauge", (self.waiting, 0)),
                ("vllm:kv_cache_usage_perc", "gauge", (self.kv_usage, self.kv_usage)),
                ("vllm:prefix_cache_queries", "counter", (self.prefix_queries, 0)),
                ("vllm:prefix_cache_hits", "counter", (self.prefix_hits, 0))):
            lines.append(f"# HELP {name} {name}.")
            lines.append(f"# TYPE {name} {kind}")
            suffix = "_total" if kind == "counter" else ""
            for engine, v in enumerate(values):
                lines.append(f'{name}{suffix}{{engine="{engine}",model_name="{MODEL}"}} '
                             f"{float(v)}")
        lines += ["# HELP vllm:e2e_request_latency_seconds Histogram.",
                  "# TYPE vllm:e2e_request_latency_seconds histogram",
                  'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 3.0',
                  'vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 4.0',
                  'vllm:e2e_request_latency_seconds_count{model_name="m"} 4.0',
                  'vllm:e2e_request_latency_seconds_sum{model_name="m"} 2.5']
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        for n, fut in list(self._waiters):
            if len(self.bodies) >= n and not fut.done():
                fut.set_result(None)
                self._waiters.remove((n, fut))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self._gate is not None:
                await self._gate.wait()
            if self.mode == "status500":
                return web.json_response({"object": "error", "message": "engine broke",
                                          "type": "InternalServerError", "code": 500},
                                         status=500)
            if self.mode == "status400":
                return web.json_response({"object": "error", "message": "prompt too long",
                                          "type": "BadRequestError", "param": None,
                                          "code": 400}, status=400)
            if self.mode == "drop":
                request.transport.abort()
                raise asyncio.CancelledError
            n = min(body.get("max_tokens") or body.get("max_completion_tokens")
                    or self.tokens, self.tokens)
            if body.get("stream"):
                return await self._stream(request, body, chat, n)
            for _ in range(n):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
            self.finished.append(_prompt_of(body))
            return web.json_response(_full(body, chat, n, self.name))
        finally:
            self.active -= 1

    async def _stream(self, request: web.Request, body: dict, chat: bool,
                      n: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode == "drop_headers":
            request.transport.abort()
            raise asyncio.CancelledError
        rid, created = f"cmpl-{len(self.bodies)}", int(time.time())
        if chat:
            await resp.write(_event(_chunk(rid, created, chat, {"role": "assistant",
                                                                "content": ""}, None)))
        for k in range(n):
            if self.mode == "die_after" and k == self.die_after:
                request.transport.abort()
                raise asyncio.CancelledError
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            await resp.write(_event(_chunk(rid, created, chat, _piece(self.name, k, chat),
                                           "length" if k == n - 1 else None)))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": rid, "object": "chat.completion.chunk" if chat else
                     "text_completion", "created": created, "model": MODEL, "choices": [],
                     "usage": {"prompt_tokens": 7, "total_tokens": 7 + n,
                               "completion_tokens": n}}
            await resp.write(_event(usage))
        await resp.write(b"data: [DONE]\n\n")
        self.finished.append(_prompt_of(body))
        await resp.write_eof()
        return resp


def _prompt_of(body: dict) -> str:
    if "messages" in body:
        return str(body["messages"][-1].get("content"))
    return str(body.get("prompt"))


def _text(name: str, k: int) -> str:
    return f" {name}{k}"


def _piece(name: str, k: int, chat: bool) -> dict:
    return {"content": _text(name, k)} if chat else {"text": _text(name, k)}


def _chunk(rid: str, created: int, chat: bool, piece: dict, finish: str | None) -> dict:
    if chat:
        choice = {"index": 0, "delta": piece, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, **piece, "logprobs": None, "finish_reason": finish,
                  "stop_reason": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": MODEL, "choices": [choice]}


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _full(body: dict, chat: bool, n: int, name: str) -> dict:
    text = "".join(_text(name, k) for k in range(n))
    usage = {"prompt_tokens": 7, "total_tokens": 7 + n, "completion_tokens": n,
             "prompt_tokens_details": {"cached_tokens": 0}}
    if chat:
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": "length"}], "usage": usage}
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                         "stop_reason": None}], "usage": usage}


def expected_text(name: str, n: int) -> str:
    return "".join(_text(name, k) for k in range(n))
