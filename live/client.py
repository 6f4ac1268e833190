"""Client for one vLLM OpenAI-compatible server: completions, chat, health, metrics, models.

One :class:`EngineClient` per engine owns one ``aiohttp.ClientSession`` (keep-alive
connection pool) for the life of the gateway; create it inside the running event loop
(:meth:`EngineClient.start`) and :meth:`EngineClient.close` it at the end.

Streaming is passed through as it arrives: :meth:`EngineClient.stream` yields the raw SSE
bytes of each network read (``iter_any``), never buffering the response. Streams ask for
``stream_options: {include_usage: true}`` so the final chunk carries the token counts.

Request priority (0 most important) is passed down in the body's ``priority`` field only
when the client is built with ``pass_priority=True``: vLLM accepts it only when started
with ``--scheduling-policy priority`` and answers 400 otherwise.

Timeouts (:class:`EngineTimeouts`): ``connect_s`` to open a connection, ``read_s`` the
longest silence while reading a response (a non-streamed completion is silent until it is
complete, so this bounds a whole non-streamed generation), ``health_s`` / ``scrape_s`` for
the whole ``/health`` / ``/metrics`` exchange.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from live.upstream import UpstreamPool, UpstreamResponse

__all__ = ["EngineClient", "EngineError", "EngineTimeouts", "normalize_url"]

_JSON = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class EngineTimeouts:
    connect_s: float = 5.0
    read_s: float = 600.0
    health_s: float = 2.0
    scrape_s: float = 2.0


class EngineError(Exception):
    """An engine answered with an error status; ``status`` and ``body`` say what."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"engine answered HTTP {status}: {body[:500]}")


def normalize_url(url: str) -> str:
    """``http://host:port`` from an engine URL (a trailing ``/`` or ``/v1`` is dropped)."""
    u = url.strip().rstrip("/")
    if u.endswith("/v1"):
        u = u[:-3]
    if "://" not in u:
        u = "http://" + u
    parsed = URL(u)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"engine URL {url!r} must be http(s)://host:port")
    return u


class EngineClient:
    """HTTP client for one engine (see the module doc)."""

    def __init__(self, base_url: str, *, timeouts: EngineTimeouts | None = None,
                 pass_priority: bool = False, max_connections: int = 0) -> None:
        self.base_url = normalize_url(base_url)
        self.timeouts = timeouts or EngineTimeouts()
        self.pass_priority = pass_priority
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._pool: UpstreamPool | None = None
        base = URL(self.base_url)
        prefix = base.path.rstrip("/")
        self.paths = {"completions": prefix + "/v1/completions",
                      "chat": prefix + "/v1/chat/completions"}
        self.urls = {
            "completions": base / "v1" / "completions",
            "chat": base / "v1" / "chat" / "completions",
            "models": base / "v1" / "models",
            "health": base / "health",
            "metrics": base / "metrics",
        }
        t = self.timeouts
        self._request_timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s,
                                                      sock_read=t.read_s)
        self._health_timeout = aiohttp.ClientTimeout(total=t.health_s)
        self._scrape_timeout = aiohttp.ClientTimeout(total=t.scrape_s)

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=4,
                                        ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=conn,
                                                  timeout=self._request_timeout)
        if self._pool is None and URL(self.base_url).scheme == "http":
            t = self.timeouts
            self._pool = UpstreamPool(self.base_url, connect_s=t.connect_s, read_s=t.read_s)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> EngineClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"EngineClient({self.base_url}) is not started")
        return self._session

    # -- raw (the gateway's path) -------------------------------------------------------
    async def forward(self, kind: str, body: bytes) -> UpstreamResponse:
        """The gateway's forwarding path: POST prepared body bytes to ``/v1/completions``
        (``kind`` "completions") or ``/v1/chat/completions`` ("chat") on the lean keep-alive
        pool (:mod:`live.upstream`; plain http engines). The caller reads and releases the
        response."""
        if self._pool is None:
            raise RuntimeError(f"EngineClient({self.base_url}) is not started, or its URL is "
                               "not http:// (the forwarding path speaks plain HTTP)")
        return await self._pool.post(self.paths[kind], body)

    async def post(self, kind: str, body: bytes) -> aiohttp.ClientResponse:
        """POST prepared body bytes to ``/v1/completions`` (``kind`` "completions") or
        ``/v1/chat/completions`` ("chat"). The caller reads and releases the response."""
        return await self.session.post(self.urls[kind], data=body, headers=_JSON)

    def body(self, payload: Mapping[str, Any], priority: int | None = None) -> bytes:
        """JSON body for ``payload`` with priority (when passed down) and, for streams,
        ``stream_options.include_usage``."""
        data = dict(payload)
        if self.pass_priority and priority is not None:
            data["priority"] = int(priority)
        if data.get("stream"):
            opts = dict(data.get("stream_options") or {})
            opts["include_usage"] = True
            data["stream_options"] = opts
        return json.dumps(data, separators=(",", ":")).encode()

    # -- convenience API ----------------------------------------------------------------
    async def create(self, kind: str, payload: Mapping[str, Any],
                     priority: int | None = None) -> dict[str, Any]:
        """A non-streamed completion ("completions") or chat completion ("chat")."""
        payload = {**payload, "stream": False}
        async with await self.post(kind, self.body(payload, priority)) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise EngineError(resp.status, data.decode(errors="replace"))
            return json.loads(data)

    async def stream(self, kind: str, payload: Mapping[str, Any],
                     priority: int | None = None) -> AsyncIterator[bytes]:
        """A streamed completion: the raw SSE bytes of each read, as they arrive (a read
        may hold several events or part of one; the last events are the usage chunk and
        ``data: [DONE]``)."""
        payload = {**payload, "stream": True}
        async with await self.post(kind, self.body(payload, priority)) as resp:
            if resp.status != 200:
                raise EngineError(resp.status, (await resp.read()).decode(errors="replace"))
            async for chunk in resp.content.iter_any():
                yield chunk

    async def health(self) -> bool:
        """True when ``GET /health`` answers 200 within ``timeouts.health_s``."""
        return await self.health_error() is None

    async def health_error(self) -> str | None:
        """None when ``GET /health`` answers 200 within ``timeouts.health_s``, else why not."""
        try:
            async with self.session.get(self.urls["health"],
                                        timeout=self._health_timeout) as resp:
                await resp.read()
                return None if resp.status == 200 else f"HTTP {resp.status}"
        except TimeoutError:
            return f"no answer within {self.timeouts.health_s:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}".rstrip(": ")

    async def metrics_text(self) -> str:
        """The Prometheus text of ``GET /metrics`` (raises on failure or non-200)."""
        async with self.session.get(self.urls["metrics"], timeout=self._scrape_timeout) as r:
            data = await r.read()
            if r.status != 200:
                raise EngineError(r.status, data.decode(errors="replace"))
            return data.decode()

    async def models(self) -> dict[str, Any]:
        """``GET /v1/models`` (raises on failure or non-200)."""
        async with self.session.get(self.urls["models"], timeout=self._scrape_timeout) as r:
            data = await r.read()
            if r.status != 200:
                raise EngineError(r.status, data.decode(errors="replace"))
            return json.loads(data)
