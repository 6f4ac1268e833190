"""A lean HTTP/1.1 server for the gateway: asyncio protocol + the ``httptools`` parser.

Why not a web framework: the gateway's budget is tens of microseconds of CPU per request
(``benchmarks/bench_gateway.py`` measures it side by side with the Rust ``vllm-router``).
Answering a fixed body on uvloop cost about 42 us of CPU per request with aiohttp's server
and 14 us with a bare httptools protocol on these machines. Parsing is ``httptools`` (the
llhttp parser that uvicorn uses too); this module only frames messages and runs handlers.

What it does:

- keep-alive and pipelining (requests on one connection are answered in order; reading
  pauses while more than a few are waiting), HTTP/1.0, ``Connection: close``,
  ``Expect: 100-continue``, ``HEAD``;
- each request runs in its own task; when the client disconnects before the answer is
  complete the task is cancelled (the handler sees ``CancelledError``);
- bodies over ``max_body_bytes`` get 413 before they are read to the end (the connection is
  then closed), unparsable requests 400, unknown paths 404, wrong methods 405 (``Allow``);
- :class:`StreamResponse` sends a chunked response as it is written (the status line and
  headers go out with the first chunk), waiting while the client's socket buffer is full
  (bounded memory with slow readers);
- idle keep-alive connections are closed after ``keepalive_s``.

Errors the server itself answers are OpenAI-style JSON (``{"error": {"message", "type",
"param", "code"}}``), the gateway's error format.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from urllib.parse import parse_qs

import httptools

__all__ = ["HttpRequest", "HttpServer", "Response", "StreamResponse", "error_json",
           "json_response"]

log = logging.getLogger("live.http_server")

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_MAX_PIPELINED = 16  # requests parsed ahead of the one being answered; reading pauses above


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


def _head(status: int, headers: Mapping[str, str], extra: str) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return _status_line(status) + (lines + extra + "\r\n").encode("latin-1")


def error_json(status: int, message: str, *, type_: str = "invalid_request_error",
               param: str | None = None, code: object = None,
               headers: Mapping[str, str] | None = None) -> Response:
    """An OpenAI-style JSON error response."""
    body = {"error": {"message": message, "type": type_, "param": param,
                      "code": status if code is None else code}}
    return Response(status, json.dumps(body).encode(), headers=headers,
                    content_type="application/json")


def json_response(obj: object, status: int = 200) -> Response:
    return Response(status, json.dumps(obj).encode(), content_type="application/json")


class HttpRequest:
    """One parsed request. ``headers``: a dict with lower-case names (a repeated header
    keeps its last value); ``body``: all of it (bounded by ``max_body_bytes``)."""

    __slots__ = ("_conn", "_query", "body", "headers", "method", "path", "query_string")

    def __init__(self, conn: _Connection, method: str, path: str, query_string: str,
                 headers: dict[str, str], body: bytes) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """The query parameters (the last value of a repeated one)."""
        if self._query is None:
            self._query = {k: v[-1] for k, v in parse_qs(self.query_string).items()}
        return self._query


class Response:
    """A complete response (sent with ``Content-Length``)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int = 200, body: bytes = b"", *,
                 headers: Mapping[str, str] | None = None,
                 content_type: str | None = None) -> None:
        self.status = status
        self.body = body
        h = dict(headers) if headers else {}
        if content_type is not None:
            h["content-type"] = content_type
        self.headers = h


class StreamResponse:
    """A chunked response written piece by piece: ``await prepare(request)``, then
    ``await write(data)`` any number of times and ``await write_eof(last)``. Writing to a
    client that has gone raises ``ConnectionResetError``."""

    __slots__ = ("_conn", "_eof", "_head", "headers", "status")

    def __init__(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers) if headers else {}
        self._conn: _Connection | None = None
        self._head: bytes | None = None
        self._eof = False

    @property
    def prepared(self) -> bool:
        return self._conn is not None

    async def prepare(self, request: HttpRequest) -> None:
        """Bind to the request's connection; the head goes out with the first write."""
        if self._conn is None:
            self._conn = request._conn
            self._head = _head(self.status, self.headers, "transfer-encoding: chunked\r\n")

    def _frame(self, data: bytes) -> bytes:
        out = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if self._head is not None:
            out, self._head = self._head + out, None
        return out

    async def write(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("StreamResponse.write before prepare")
        if self._eof:
            raise RuntimeError("StreamResponse.write after write_eof")
        if data or self._head is not None:
            await conn.send(self._frame(data))

    async def write_eof(self, data: bytes = b"") -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("StreamResponse.write_eof before prepare")
        if self._eof:
            return
        self._eof = True
        await conn.send(self._frame(data) + b"0\r\n\r\n")


Handler = Callable[[HttpRequest], Awaitable["Response | StreamResponse"]]


class HttpServer:
    """Routes ``(method, path)`` to handlers and serves them (see the module doc)."""

    def __init__(self, *, max_body_bytes: int = 8 * 1024 * 1024, keepalive_s: float = 75.0,
                 server_header: str = "sagellm") -> None:
        self.max_body_bytes = max_body_bytes
        self.keepalive_s = keepalive_s
        self.server_header = server_header
        self.routes: dict[str, dict[str, Handler]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes.setdefault(path, {})[method.upper()] = handler

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start serving; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, close every connection (cancelling running handlers) and wait
        for the handlers to finish."""
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = []
        for c in list(self._conns):
            if c.task is not None:
                tasks.append(c.task)
            c.abort()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _route(self, req: HttpRequest) -> Handler | Response:
        methods = self.routes.get(req.path)
        if methods is None:
            return error_json(404, f"no route for {req.path}", type_="not_found")
        h = methods.get(req.method)
        if h is None and req.method == "HEAD":
            h = methods.get("GET")
        if h is None:
            return error_json(405, f"{req.method} is not allowed on {req.path}",
                              headers={"allow": ", ".join(sorted(methods))})
        return h


class _Connection(asyncio.Protocol):
    """One client connection: parse, run handlers one at a time, write answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None  # the running handler
        self.queue: deque[HttpRequest | Response] = deque()  # parsed, not yet answered
        self.closed = False
        self.paused = False  # reading paused (pipelined backlog)
        self.drain: asyncio.Future | None = None  # set while the transport's buffer is full
        self.idle: asyncio.TimerHandle | None = None
        self.keep_alive = True
        self.refusing = False  # a final error was queued: parse nothing more
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._refused: Response | None = None  # an answer decided before the body's end

    # -- transport events ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._conns.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._conns.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        if self.drain is not None and not self.drain.done():
            self.drain.set_exception(ConnectionResetError("the client closed the connection"))
        self.queue.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        d, self.drain = self.drain, None
        if d is not None and not d.done():
            d.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.refusing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(error_json(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._refuse(error_json(400, f"malformed HTTP request: {exc}"))

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- parser callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._refused = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        h = self._headers
        length = h.get("content-length")
        limit = self.server.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            self._refused = error_json(413, f"request body exceeds {limit} bytes")
            self._refuse(self._refused)
            return
        if h.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused is not None:
            return
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            self._refused = error_json(
                413, f"request body exceeds {self.server.max_body_bytes} bytes")
            self._refuse(self._refused)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._refused is not None or self.refusing or self.closed:
            return
        path, _, query = self._url.decode("latin-1").partition("?")
        req = HttpRequest(self, self.parser.get_method().decode("latin-1"), path, query,
                          self._headers, b"".join(self._body))
        if not self.parser.should_keep_alive():
            self.keep_alive = False
        self.queue.append(req)
        if self.task is None:
            self._next()
        elif len(self.queue) > _MAX_PIPELINED and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()

    # -- answering ---------------------------------------------------------------------
    def _refuse(self, resp: Response) -> None:
        """Answer ``resp`` after the requests before it, then close the connection."""
        self.keep_alive = False
        self.refusing = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.queue.append(resp)
        if self.task is None:
            self._next()

    def _next(self) -> None:
        if not self.queue or self.closed:
            self.task = None
            if not self.closed:
                if not self.keep_alive:
                    self.transport.close()
                else:
                    if self.paused:
                        self.paused = False
                        self.transport.resume_reading()
                    self._arm_idle()
            return
        item = self.queue.popleft()
        self.task = self.loop.create_task(self._answer(item))

    def _arm_idle(self) -> None:
        if self.idle is None:
            self.idle = self.loop.call_later(self.server.keepalive_s, self.abort)

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)
        if self.drain is not None:
            await self.drain

    def _write_response(self, resp: Response, head_only: bool, last: bool) -> None:
        extra = f"content-length: {len(resp.body)}\r\n"
        if last:
            extra += "connection: close\r\n"
        head = _head(resp.status, resp.headers, extra)
        self.transport.write(head if head_only else head + resp.body)

    async def _answer(self, item: HttpRequest | Response) -> None:
        head_only = False
        try:
            if isinstance(item, Response):
                resp: Response | StreamResponse = item
            else:
                head_only = item.method == "HEAD"
                handler = self.server._route(item)
                if isinstance(handler, Response):
                    resp = handler
                else:
                    try:
                        resp = await handler(item)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.exception("handler for %s %s failed", item.method, item.path)
                        resp = error_json(500, f"internal error: {type(exc).__name__}: {exc}",
                                          type_="internal_error")
            if self.closed:
                return
            if isinstance(resp, StreamResponse):
                if resp._conn is None:
                    await resp.prepare(item)  # type: ignore[arg-type]
                await resp.write_eof()
            else:
                last = not self.keep_alive and len(self.queue) == 0
                self._write_response(resp, head_only, last)
                if self.drain is not None:
                    await self.drain
        except (asyncio.CancelledError, ConnectionError):
            self.abort()
            return
        finally:
            if self.task is asyncio.current_task():
                self.task = None
        self._next()
