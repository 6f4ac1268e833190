"""vLLM's OpenAI-compatible HTTP API in front of an :class:`~live.emulate.EmulatedEngine`.

Routes, as a vLLM server has them:

- ``POST /v1/completions`` and ``POST /v1/chat/completions``: streamed (SSE, vLLM's chunk
  format: chat opens with an empty ``assistant`` delta; one chunk per engine iteration with
  the tokens it produced, several tokens in one chunk when the writer fell behind; the
  last token's chunk carries ``finish_reason: "length"``; with
  ``stream_options.include_usage`` a final chunk with empty ``choices`` and ``usage``,
  with ``continuous_usage_stats`` usage in every chunk; then ``data: [DONE]``) or not;
- ``GET /v1/models``, ``/health`` (200; 503 if the engine model failed), ``/load``
  (``{"server_load": requests in the engine}``), ``/version``, ``/metrics`` (vLLM's
  names, see :mod:`live.emulate_metrics`).

A request: the body is validated as the gateway does (:func:`live.gateway_body.parse_body`;
a bad body is answered 400 with vLLM's error object whose ``param`` names the field; an
unknown model 404). The prompt's length is exact for token ids; text counts the gateway's
estimate (characters / 4, chat + 4 per message), or ``x-prompt-tokens`` when the client
sends it. Prefix caching sees the prompt's content: token ids hashed per 16-token block,
text per 64 characters (the gateway's hashes). The output has exactly ``max_tokens``
(chat: ``max_completion_tokens`` first) tokens, each ``token_text``; without it, 16 for
completions (vLLM's default) and ``max_model_len - prompt`` for chat (``default_max_tokens``
when no ``max_model_len`` is set). ``priority`` needs ``scheduling_policy="priority"``
(else 400, as in vLLM) and must be 0..4. A batched completions prompt (a list of strings
or of token-id lists) makes one engine request per prompt, as vLLM does, answered with one
choice per prompt (``index``) and the usage summed; streamed, it is refused (400), as is
``n`` > 1.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from control_plane.prefix import DEFAULT_BLOCK_SIZE
from live.emulate import EmulatedEngine, EngineRefused, TokenStream
from live.emulate_metrics import CONTENT_TYPE, EngineMetricsText
from live.gateway_body import CHAT, COMPLETIONS, BodyError, parse_body, prompt_size
from live.headers import PROMPT_TOKENS
from live.vllm_env import DEFAULT_VLLM_VERSION

__all__ = ["EmulatorServer"]

CHARS_PER_TOKEN = 4
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
_MAX_HASH_BLOCKS = 1 << 30
_HASH_BLOCK_CHARS = DEFAULT_BLOCK_SIZE * CHARS_PER_TOKEN   # the gateway's text blocks
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


class _ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def _error(status: int, message: str, param: str | None) -> web.Response:
    type_ = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return web.json_response({"error": {"message": message, "type": type_, "param": param,
                                        "code": status}}, status=status)


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _int_field(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _ApiError(400, f"{name} must be an integer in {lo}..{hi}, got {v!r}", name)
    return v


class EmulatorServer:
    """One emulated vLLM server: :meth:`listen` starts the engine and the HTTP site."""

    def __init__(self, engine: EmulatedEngine, model_name: str, *,
                 max_model_len: int | None = None, default_max_tokens: int = 256,
                 token_text: str = " tok") -> None:
        self.engine = engine
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.default_max_tokens = default_max_tokens
        self.token_text = token_text
        cfg = engine.config
        self.metrics = EngineMetricsText(model_name, engine.load, engine.counters, cache_info={
            "block_size": cfg.block_size, "num_gpu_blocks": cfg.num_gpu_blocks,
            "enable_prefix_caching": cfg.enable_prefix_caching},
            lateness=lambda: (engine.max_late_s, engine.resyncs))
        self.requests = 0  # served, for ids
        self.url = ""
        self.app = web.Application()
        r = self.app.router
        r.add_post("/v1/completions", self._completions)
        r.add_post("/v1/chat/completions", self._chat)
        r.add_get("/v1/models", self._models)
        r.add_get("/health", self._health)
        r.add_get("/load", self._load)
        r.add_get("/version", self._version)
        r.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start the engine and serve on ``host:port`` (0: any free port); the port."""
        self.engine.start()
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        port = self._runner.addresses[-1][1]
        self.url = f"http://{host}:{port}"
        self.engine.label = f"emulated engine {self.url}"
        return port

    async def close(self) -> None:
        await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- small routes -------------------------------------------------------------------
    async def _health(self, http: web.Request) -> web.Response:
        if self.engine.failed is not None:
            return web.Response(status=503, text=self.engine.failed)
        return web.Response(status=200)

    async def _load(self, http: web.Request) -> web.Response:
        return web.json_response({"server_load": self.engine.in_flight})

    async def _version(self, http: web.Request) -> web.Response:
        return web.json_response({"version": f"{DEFAULT_VLLM_VERSION}+emulated"})

    async def _metrics(self, http: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"content-type": CONTENT_TYPE})

    async def _models(self, http: web.Request) -> web.Response:
        m = self.model_name
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "vllm", "root": m,
             "parent": None, "permission": [],
             "max_model_len": self.max_model_len or self.engine.config.kv_capacity_tokens}]})

    # -- generation ---------------------------------------------------------------------
    async def _completions(self, http: web.Request) -> web.StreamResponse:
        return await self._generate(http, COMPLETIONS)

    async def _chat(self, http: web.Request) -> web.StreamResponse:
        return await self._generate(http, CHAT)

    def _admit(self, raw: bytes, headers, kind: str) -> tuple[dict, list[TokenStream]]:
        """Validate, size and submit the request (a batched completions prompt: one engine
        request per prompt, as vLLM makes them); raises _ApiError."""
        try:
            parsed = parse_body(raw, kind, chars_per_token=CHARS_PER_TOKEN,
                                prefix_block_chars=_HASH_BLOCK_CHARS,
                                max_prefix_blocks=_MAX_HASH_BLOCKS)
        except BodyError as exc:
            raise _ApiError(400, str(exc), exc.param) from None
        body = json.loads(raw)
        if parsed.model != self.model_name:
            raise _ApiError(404, f"The model `{parsed.model}` does not exist.", "model")
        if _int_field(body, "n", 1, 1, 1 << 31) != 1:
            raise _ApiError(400, "n > 1 is not supported by the emulated engine", "n")
        prompt = body.get("prompt")
        batch = None
        if (kind == COMPLETIONS and isinstance(prompt, list) and prompt
                and not isinstance(prompt[0], int)):
            if parsed.stream:
                raise _ApiError(400, "streamed batched prompts are not supported by the "
                                "emulated engine", "stream")
            batch = []
            for k, one in enumerate(prompt):
                try:
                    batch.append(prompt_size(one, CHARS_PER_TOKEN, _HASH_BLOCK_CHARS,
                                             _MAX_HASH_BLOCKS))
                except BodyError as exc:
                    raise _ApiError(400, f"prompt[{k}]: {exc}", f"prompt[{k}]") from None
        prompt_tokens = parsed.prompt_tokens
        hint = headers.get(PROMPT_TOKENS)
        if hint is not None and batch is None:
            try:
                prompt_tokens = int(hint)
            except ValueError:
                prompt_tokens = 0
            if prompt_tokens < 1:
                raise _ApiError(400, f"header {PROMPT_TOKENS}: expected an integer >= 1, got "
                                f"{hint!r}", PROMPT_TOKENS)
        sizes = [(prompt_tokens, parsed.prefix_hashes)] if batch is None else batch
        max_len = self.max_model_len
        out = parsed.max_tokens
        if out is None:
            out = (COMPLETIONS_DEFAULT_MAX_TOKENS if kind == COMPLETIONS
                   else max(1, max_len - prompt_tokens) if max_len
                   else self.default_max_tokens)
        longest = max(n for n, _ in sizes)
        if max_len is not None and longest + out > max_len:
            field = "max_tokens" if kind == COMPLETIONS else "max_completion_tokens"
            raise _ApiError(400, f"This model's maximum context length is {max_len} tokens. "
                            f"However, you requested {longest + out} tokens "
                            f"({longest} in the prompt, {out} in the completion).",
                            field if parsed.max_tokens is not None else "prompt")
        policy = self.engine.config.scheduling_policy
        priority = _int_field(body, "priority", 0, -(1 << 31), 1 << 31)
        if priority and policy != "priority":
            raise _ApiError(400, f"priority {priority} needs priority scheduling (the engine "
                            "runs fcfs)", "priority")
        if not 0 <= priority <= 4:
            raise _ApiError(400, f"priority must be in 0..4 on the emulated engine, got "
                            f"{priority}", "priority")
        self.requests += 1
        rid = f"{'cmpl' if kind == COMPLETIONS else 'chatcmpl'}-{self.requests}"
        streams: list[TokenStream] = []
        now = self.engine.now()
        try:
            for k, (n, hashes) in enumerate(sizes):
                streams.append(self.engine.submit(rid if batch is None else f"{rid}-{k}", n,
                                                  out, priority=priority,
                                                  prefix_hashes=hashes, arrival_s=now))
        except (EngineRefused, RuntimeError) as exc:
            for st in streams:   # a batch is taken whole or not at all
                self.engine.abort(st.request_id)
            if isinstance(exc, EngineRefused):
                raise _ApiError(400, str(exc), "prompt") from None
            raise _ApiError(500, str(exc)) from None  # the engine failed or stopped
        return body, streams

    async def _generate(self, http: web.Request, kind: str) -> web.StreamResponse:
        raw = await http.read()
        try:
            body, streams = self._admit(raw, http.headers, kind)
        except _ApiError as exc:
            return _error(exc.status, str(exc), exc.param)
        try:
            if body.get("stream"):
                return await self._stream(http, body, streams[0], kind == CHAT)
            for stream in streams:
                while not stream.done:
                    await stream.wait(stream.tokens)
            for stream in streams:
                if stream.error is not None:
                    return _error(500, f"request {stream.request_id}: {stream.error}", None)
            return web.json_response(self._full(streams, kind == CHAT))
        finally:
            for stream in streams:
                if not stream.done:  # the client left (the handler was cancelled) or an error
                    self.engine.abort(stream.request_id)

    def _usage(self, s: TokenStream, final: bool) -> dict[str, Any]:
        u: dict[str, Any] = {"prompt_tokens": s.prompt_tokens,
                             "total_tokens": s.prompt_tokens + s.tokens,
                             "completion_tokens": s.tokens}
        if final:
            u["prompt_tokens_details"] = {"cached_tokens": s.cached_tokens}
        return u

    def _full(self, streams: list[TokenStream], chat: bool) -> dict:
        """The non-streamed response: one choice per prompt, usage summed over them."""
        s = streams[0]
        head = {"id": s.request_id if len(streams) == 1 else s.request_id.rsplit("-", 1)[0],
                "created": int(time.time()), "model": self.model_name}
        prompt = sum(x.prompt_tokens for x in streams)
        completion = sum(x.tokens for x in streams)
        usage = {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                 "completion_tokens": completion,
                 "prompt_tokens_details": {"cached_tokens": sum(x.cached_tokens
                                                                for x in streams)}}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant",
                                              "content": self.token_text * s.tokens},
                      "logprobs": None, "finish_reason": "length", "stop_reason": None}
            return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        choices = [{"index": k, "text": self.token_text * x.tokens, "logprobs": None,
                    "finish_reason": "length", "stop_reason": None}
                   for k, x in enumerate(streams)]
        return {**head, "object": "text_completion", "choices": choices, "usage": usage}

    async def _stream(self, http: web.Request, body: dict, s: TokenStream,
                      chat: bool) -> web.StreamResponse:
        opts = body.get("stream_options") or {}
        include_usage = opts.get("include_usage") is True
        continuous = include_usage and opts.get("continuous_usage_stats") is True
        head = {"id": s.request_id,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": self.model_name}
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        try:
            await resp.prepare(http)
            await self._send(resp, s, head, chat, include_usage, continuous)
        except ConnectionError:
            # the client left between two writes, before the server noticed (which cancels
            # the handler): vLLM aborts such a request; _generate's ``finally`` does
            pass
        return resp

    async def _send(self, resp: web.StreamResponse, s: TokenStream, head: dict, chat: bool,
                    include_usage: bool, continuous: bool) -> None:
        """The SSE events of ``s``, written as its tokens come, then ``[DONE]``."""
        if chat:
            first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                 "content": ""},
                                          "logprobs": None, "finish_reason": None}]}
            if continuous:
                first["usage"] = self._usage(s, False)
            await resp.write(_event(first))
        sent = 0
        while True:
            n = await s.wait(sent)
            if n > sent:
                text = self.token_text * (n - sent)
                finish = "length" if s.done and s.error is None and n >= s.output_tokens \
                    else None
                choice = ({"index": 0, "delta": {"content": text}, "logprobs": None,
                           "finish_reason": finish} if chat else
                          {"index": 0, "text": text, "logprobs": None,
                           "finish_reason": finish, "stop_reason": None})
                chunk = {**head, "choices": [choice]}
                if continuous:
                    chunk["usage"] = self._usage(s, False)
                sent = n
                await resp.write(_event(chunk))
            if s.done:
                break
        if s.error is not None:
            await resp.write(_event({"error": {"message": s.error, "type": "InternalServerError",
                                               "param": None, "code": 500}}))
            return
        if include_usage:
            await resp.write(_event({**head, "choices": [], "usage": self._usage(s, True)}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
