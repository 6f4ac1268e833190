"""A lean HTTP/1.1 client for the gateway's requests to one engine (keep-alive pool).

The gateway forwards every completion through :meth:`UpstreamPool.post`; health checks,
scrapes and model listings stay on aiohttp (:mod:`live.client`), where a few hundred
microseconds do not matter. Responses are parsed by ``httptools`` (llhttp); chunked and
``Content-Length`` bodies arrive de-chunked through :meth:`UpstreamResponse.readany` as the
engine sends them, never buffered beyond ``_HIGH_WATER`` bytes (reading from the engine
pauses until the gateway has passed them on).

Failures raise :class:`UpstreamError` (a ``ConnectionError``): cannot connect (after
``connect_s``), the connection closed before the response ended, an unparsable response;
``TimeoutError`` when the engine is silent for ``read_s`` while a response is awaited or
read. A request sent on a reused keep-alive connection that the engine had closed in the
meantime (no byte of the response came back) is sent once more on a new connection, so an
engine's idle timeout never shows up as a failure.

Connections idle for more than ``keepalive_s`` (default 4 s, below uvicorn's 5 s
``timeout_keep_alive`` that vLLM's API server uses) are not reused.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools
from yarl import URL

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]

_HIGH_WATER = 1 << 20  # bytes buffered from the engine before reading pauses
_LOW_WATER = 1 << 18


class UpstreamError(ConnectionError):
    """The engine's connection failed (see the module doc)."""


class UpstreamResponse:
    """One response: ``status``, ``headers`` (lower-case names), then the body through
    :meth:`readany` / :meth:`read`; :meth:`release` when done (always)."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _UpConn) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def readany(self) -> bytes:
        """The next piece of the body as it arrived; ``b""`` at its end."""
        return await self._conn.next_chunk()

    async def read(self, limit: int | None = None) -> bytes:
        """The body to its end (or its first ``limit`` bytes)."""
        parts = []
        size = 0
        while limit is None or size < limit:
            chunk = await self._conn.next_chunk()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    def release(self) -> None:
        """Give the connection back to the pool (closed instead when the body was not
        read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pool._release(conn)


class _UpConn(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.error: BaseException | None = None
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.got_bytes = False
        self.head: asyncio.Future | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None
        self.complete = False
        self.keep_alive = True
        self.paused = False
        self.last_io = self.loop.time()
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- transport events ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            why = f": {exc}" if exc else ""
            self._fail(UpstreamError(f"the engine closed the connection before the "
                                     f"response ended{why}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_io = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed HTTP response from the engine: {exc}"))
            self.transport.close()

    # -- parser callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        h = self.head
        if h is not None and not h.done():
            h.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- helpers -----------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        for f in (self.head, self.waiter):
            if f is not None and not f.done():
                f.set_exception(exc)

    def _check_silence(self) -> None:
        """The read timer: fail when nothing came for ``read_s`` (re-armed otherwise)."""
        self.timer = None
        if self.complete or self.closed:
            return
        read_s = self.pool.read_s
        quiet = self.loop.time() - self.last_io
        if quiet >= read_s:
            self._fail(TimeoutError(f"the engine sent nothing for {read_s:g} s"))
            self.transport.close()
        else:
            self.timer = self.loop.call_later(read_s - quiet, self._check_silence)

    async def next_chunk(self) -> bytes:
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered < _LOW_WATER:
                    self.paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, data: bytes) -> None:
        """Send one request and wait for the response's head."""
        self.last_io = self.loop.time()
        self.head = self.loop.create_future()
        self.timer = self.loop.call_later(self.pool.read_s, self._check_silence)
        self.transport.write(data)
        try:
            await self.head
        finally:
            self.head = None


class UpstreamPool:
    """Keep-alive connections to one engine (``base_url`` ``http://host:port``)."""

    def __init__(self, base_url: str, *, connect_s: float = 5.0, read_s: float = 600.0,
                 keepalive_s: float = 4.0, max_idle: int = 256) -> None:
        u = URL(base_url)
        if u.scheme != "http" or not u.host:
            raise ValueError(f"engine URL {base_url!r}: the gateway's forwarding path "
                             "speaks plain http://host:port")
        self.host = u.host
        self.port = u.port or 80
        self.connect_s = connect_s
        self.read_s = read_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self._host_header = f"{self.host}:{self.port}"
        self._idle: list[_UpConn] = []
        self._closed = False

    async def _connect(self) -> _UpConn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _UpConn(self), self.host, self.port), self.connect_s)
        except TimeoutError:
            raise UpstreamError(f"cannot connect to http://{self._host_header} within "
                                f"{self.connect_s:g} s") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to http://{self._host_header}: "
                                f"{exc.strerror or exc}") from None
        return conn

    def _reusable(self) -> _UpConn | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.transport.close()
        return None

    async def post(self, path: str, body: bytes,
                   content_type: str = "application/json") -> UpstreamResponse:
        """POST ``body`` to ``path``; returns once the response's head has arrived."""
        if self._closed:
            raise UpstreamError("the connection pool is closed")
        data = (f"POST {path} HTTP/1.1\r\nhost: {self._host_header}\r\n"
                f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
                ).encode("latin-1") + body
        conn = self._reusable()
        if conn is not None:
            try:
                await conn.send(data)
                return UpstreamResponse(conn)
            except UpstreamError:
                if conn.got_bytes:
                    raise
                conn.transport.close()  # closed by the engine while idle: once more, anew
        conn = await self._connect()
        try:
            await conn.send(data)
        except BaseException:
            conn.transport.close()
            raise
        return UpstreamResponse(conn)

    def _release(self, conn: _UpConn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if (self._closed or conn.closed or not conn.complete or not conn.keep_alive
                or conn.error is not None or len(self._idle) >= self.max_idle):
            conn.transport.close()
            return
        conn.reset()
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()
