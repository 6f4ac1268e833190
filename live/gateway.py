"""OpenAI-compatible gateway in front of vLLM engines, driven by one ControlPlane.

Endpoints:

- ``POST /v1/completions``, ``POST /v1/chat/completions``: streamed and non-streamed,
  scheduled by the control plane (admission, global queue, routing), forwarded to the
  chosen engine (:mod:`live.gateway_forward`: failures, retries, streaming).
- ``GET /v1/models``: the union of the models the up engines serve.
- ``GET /health``: 200 while at least one instance is up, else 503; lists each health.
- ``GET /metrics``: the gateway's Prometheus metrics (:mod:`live.prom`).
- ``POST /admin/policy`` ``{"policy": spec}``: switch the queue policy at run time (queued
  requests move over; answers the ``PolicySwitch``); ``POST /admin/router``
  ``{"router": spec}``; ``POST /admin/health`` ``{"instance": id, "health":
  "up"|"draining"|"down"}``; ``GET /admin/state``; ``GET /admin/records[?clear=1]`` (JSON
  lines of :class:`~control_plane.records.RequestRecord`, the simulator's format). With
  ``admin_token`` set these need ``Authorization: Bearer <token>``.

Scheduling hints come from headers (:mod:`live.headers`); the body is validated and the
prompt length estimated without a tokenizer (:mod:`live.gateway_body`). Bad headers or
bodies are answered 400 with an OpenAI-style error naming the header or field; rejections
429 (queue full, shed, preempted, budget), 503 (no instance up, SLO infeasible, queue
timeout) or 502 (retries exhausted), the message being the control plane's reason.

Clock: the event loop's monotonic ``loop.time()``, minus its value when the gateway
started (so record times start near 0). Background timers: metric scrapes feeding
``observe`` (:mod:`live.metrics_scrape`), health probes calling ``set_health`` and the
``tick`` (:mod:`live.gateway_monitor`).

Bounded memory: the control plane's queue bounds (``control.max_queue``, per priority)
bound the requests held, each at most ``max_body_bytes`` (larger bodies: 413); streams are
passed through without buffering; finished requests are kept as records in a ring of
``max_records``. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from control_plane.actions import Dispatch, Outcome, PolicySwitch, Reject, Retry
from control_plane.errors import ControlPlaneError
from control_plane.manager import Action, ControlPlane
from control_plane.types import EngineStats, Health, Request
from live.client import EngineClient, EngineTimeouts, normalize_url
from live.gateway_admin import add_routes
from live.gateway_body import CHAT, COMPLETIONS, BodyError, parse_body
from live.gateway_forward import end_stream, release, serve_request
from live.gateway_monitor import HealthChecker, Ticker
from live.gateway_records import DONE, INFLIGHT, QUEUED, Pending, RecordRing, slo_met
from live.headers import ATTEMPTS, INSTANCE, REQUEST_ID, HeaderError, parse_hints
from live.http_server import HttpRequest, HttpServer, Response, StreamResponse, error_json
from live.metrics_scrape import MetricsScraper
from live.prom import GatewayMetrics

__all__ = ["Gateway", "GatewayConfig"]

log = logging.getLogger("live.gateway")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Gateway settings (the control plane's are in its own ControlPlaneConfig).

    ``pass_priority``: send the request's priority to vLLM in the body (engines started
    with ``--scheduling-policy priority``). ``health_fail_threshold``: consecutive failed
    ``/health`` probes that mark an instance down. ``default_max_tokens``: output estimate
    when the body has no ``max_tokens``. ``slo_window_s``: window of the SLO attainment
    gauge. ``admin_token``: required on ``/admin/*`` when set.
    """

    scrape_interval_s: float = 0.5
    health_interval_s: float = 1.0
    health_fail_threshold: int = 2
    tick_interval_s: float = 0.5
    pass_priority: bool = False
    chars_per_token: float = 4.0
    prefix_block_chars: int = 64
    default_max_tokens: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    max_records: int = 100_000
    slo_window_s: float = 60.0
    timeouts: EngineTimeouts = field(default_factory=EngineTimeouts)
    admin_token: str | None = None

    def __post_init__(self) -> None:
        for name in ("scrape_interval_s", "health_interval_s", "tick_interval_s",
                     "chars_per_token", "slo_window_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"GatewayConfig.{name}={v!r}: must be a number > 0")
        for name in ("health_fail_threshold", "prefix_block_chars", "default_max_tokens",
                     "max_body_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GatewayConfig.{name}={v!r}: must be an integer >= 1")


class Gateway:
    """The gateway: an HTTP server (:mod:`live.http_server`) around one
    :class:`ControlPlane`. ``await listen(host, port)`` starts it (clients, timers, server);
    ``await close()`` stops it."""

    def __init__(self, cp: ControlPlane, urls: Mapping[str, str] | None = None,
                 config: GatewayConfig | None = None) -> None:
        self.cp = cp
        self.config = cfg = config or GatewayConfig()
        specs = {v.instance_id: v.spec for v in cp.cluster.instances}
        urls = dict(urls) if urls is not None else {
            iid: s.url for iid, s in specs.items() if s.url}
        missing = sorted(set(specs) - set(urls))
        extra = sorted(set(urls) - set(specs))
        if missing or extra:
            raise ValueError(f"engine URLs must match the instances {sorted(specs)}: "
                             f"missing {missing}, unknown {extra}")
        for iid, url in urls.items():
            if normalize_url(url).startswith("https://"):
                raise ValueError(f"instance {iid}: engine URL {url!r}: the gateway forwards "
                                 "over plain http://host:port")
        self.clients = {iid: EngineClient(urls[iid], timeouts=cfg.timeouts,
                                          pass_priority=cfg.pass_priority) for iid in specs}
        self.pending: dict[str, Pending] = {}
        self.records = RecordRing(specs, cfg.max_records)
        self.metrics = GatewayMetrics(lambda: self.cp, self.now, slo_window_s=cfg.slo_window_s)
        self.scraper = MetricsScraper(self.clients, self._observe, cfg.scrape_interval_s,
                                      on_failure=self._scrape_failed)
        self.health = HealthChecker(self.clients, self._health_changed,
                                    cfg.health_interval_s, cfg.health_fail_threshold)
        self.ticker = Ticker(self._tick, cfg.tick_interval_s)
        self.metrics.scrape_failures = lambda: self.scraper.failures
        self.metrics.health_failures = lambda: self.health.failures
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._seq = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self.server = self._make_server()

    # -- clock, ids ---------------------------------------------------------------------
    def now(self) -> float:
        """Seconds on the loop's monotonic clock since the gateway started."""
        if self._loop is None:
            raise RuntimeError("the gateway is not started")
        return self._loop.time() - self._t0

    def _next_id(self) -> str:
        while True:
            self._seq += 1
            rid = f"gw-{self._seq}"
            if rid not in self.pending:
                return rid

    def reply_headers(self, p: Pending) -> dict[str, str]:
        h = {REQUEST_ID: p.request.request_id}
        if p.instance is not None:
            h[INSTANCE] = p.instance
            h[ATTEMPTS] = str(p.attempts)
        return h

    def probe(self, instance_id: str) -> None:
        """A request could not reach the engine: probe its health now."""
        self.health.probe_now(instance_id)

    # -- life cycle ---------------------------------------------------------------------
    def _make_server(self) -> HttpServer:
        server = HttpServer(max_body_bytes=self.config.max_body_bytes)
        server.add("POST", "/v1/completions", self._completions)
        server.add("POST", "/v1/chat/completions", self._chat)
        add_routes(server, self)
        return server

    async def start(self) -> None:
        """Start the clients and the timers (done by :meth:`listen`)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        for c in self.clients.values():
            await c.start()
        self.scraper.start()
        self.health.start()
        self.ticker.start()

    async def stop(self) -> None:
        await self.ticker.stop()
        await self.health.stop()
        await self.scraper.stop()
        for c in self.clients.values():
            await c.close()

    async def listen(self, host: str = "127.0.0.1", port: int = 8000) -> int:
        """Start, then serve on ``host:port`` (0: any free port); returns the port."""
        await self.start()
        return await self.server.listen(host, port)

    async def close(self) -> None:
        """Stop serving (running requests are cancelled and settled), then stop."""
        await self.server.close()
        if self._loop is not None:
            await self.stop()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Return once ``predicate()`` holds, re-checked after every control-plane event;
        TimeoutError after ``timeout_s``."""
        if predicate():
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"condition not met within {timeout_s}s") from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # -- actions ------------------------------------------------------------------------
    def execute(self, actions: list[Action]) -> None:
        """Carry out the control plane's actions in order (see :mod:`control_plane.actions`)."""
        i = 0
        while i < len(actions):
            a = actions[i]
            i += 1
            cls = type(a)
            if cls is PolicySwitch:
                log.info("policy %s -> %s (%s)", a.from_policy, a.to_policy, a.cause)
                continue
            rid = a.request.request_id
            p = self.pending.get(rid)
            if p is None:
                continue
            if cls is Dispatch:
                p.state = INFLIGHT
                p.instance = a.instance_id
                p.attempt = a.attempt
                p.attempts += 1
                if p.dispatch_s is None:
                    p.dispatch_s = self.now()
                if p.gone:  # its client left while it was queued
                    p.state = DONE
                    del self.pending[rid]
                    actions = [*actions, *self.cp.complete(rid, self.now(), Outcome(
                        ok=False, retryable=False, error="client gone before dispatch"))]
                else:
                    p.ready = True
                    p.wake()
            elif cls is Retry:
                p.state = QUEUED
                p.ready = False
                if p.forwarding == a.attempt and p.task is not None:
                    p.forwarding = 0
                    p.abort = a.reason
                    p.task.cancel()
            elif cls is Reject:
                p.state = DONE
                p.reject = a
                p.ready = False
                if not p.recorded:
                    p.recorded = True
                    self.records.add(p, "rejected", cause=a.cause.value, detail=a.detail)
                    self.metrics.finished(p.request.priority, self.now(), False)
                if p.gone:
                    del self.pending[rid]
                else:
                    p.wake()
        if self._waiters:
            for pred, fut in list(self._waiters):
                if not fut.done() and pred():
                    fut.set_result(None)

    def finished_ok(self, p: Pending, now: float, out_tokens: int, ttft_s: float | None) -> None:
        r = p.request
        a = r.arrival_s
        self.metrics.finished(r.priority, now, slo_met(r, "ok", p.first_s, now, out_tokens),
                              ttft_s=ttft_s, e2e_s=now - a,
                              queue_s=None if p.dispatch_s is None else p.dispatch_s - a)

    def _safely(self, what: str, fn: Callable[[], list[Action]]) -> None:
        try:
            self.execute(fn())
        except Exception:  # a timer must survive a bug in one event
            log.exception("gateway: %s failed", what)

    def _observe(self, instance_id: str, stats: EngineStats) -> None:
        self._safely("observe", lambda: self.cp.observe(instance_id, stats, self.now()))

    def _scrape_failed(self, instance_id: str, why: str) -> None:
        log.debug("scrape of %s failed: %s", instance_id, why)

    def _health_changed(self, instance_id: str, up: bool, reason: str) -> None:
        log.warning("instance %s %s: %s", instance_id, "up" if up else "down", reason)
        self._safely("set_health", lambda: self.cp.set_health(
            instance_id, Health.UP if up else Health.DOWN, self.now(), reason))

    def _tick(self) -> None:
        self._safely("tick", lambda: self.cp.tick(self.now()))

    # -- OpenAI API ---------------------------------------------------------------------
    async def _completions(self, http: HttpRequest) -> Response | StreamResponse:
        return await self._handle(http, COMPLETIONS)

    async def _chat(self, http: HttpRequest) -> Response | StreamResponse:
        return await self._handle(http, CHAT)

    async def _handle(self, http: HttpRequest, kind: str) -> Response | StreamResponse:
        now = self.now()
        cfg = self.config
        try:
            hints = parse_hints(http.headers)
        except HeaderError as exc:
            return error_json(400, str(exc), param=exc.header)
        try:
            body = parse_body(http.body, kind, chars_per_token=cfg.chars_per_token,
                              prefix_block_chars=cfg.prefix_block_chars,
                              priority=hints.priority if cfg.pass_priority else None)
        except BodyError as exc:
            return error_json(400, str(exc), param=exc.param)
        rid = hints.request_id
        if rid is None:
            rid = self._next_id()
        elif rid in self.pending:
            return error_json(409, f"header {REQUEST_ID}: {rid!r} is already queued or "
                                  f"in flight", param=REQUEST_ID)
        try:
            request = Request(
                rid, now, hints.prompt_tokens or body.prompt_tokens,
                output_tokens=hints.output_tokens,
                max_tokens=body.max_tokens or cfg.default_max_tokens,
                priority=hints.priority, tenant=hints.tenant, session_id=hints.session_id,
                prefix_hashes=body.prefix_hashes, slo=hints.slo,
                cost_budget_usd=hints.cost_budget_usd)
        except ControlPlaneError as exc:
            return error_json(400, str(exc), param=getattr(exc, "field", None))
        p = Pending(request, body, asyncio.current_task())
        self.pending[rid] = p
        reason, cause = "the gateway ended the request", "gateway_error"
        try:
            self.execute(self.cp.submit(request, now))
            return await serve_request(self, http, p)
        except asyncio.CancelledError:
            reason, cause = "client disconnected", "client_disconnected"
            self.metrics.client_disconnects += 1
            raise
        except Exception as exc:
            log.exception("gateway: request %s failed", rid)
            reason = f"gateway error: {type(exc).__name__}: {exc}"
            if p.started is not None:
                await end_stream(p.started, reason)
                return p.started
            return error_json(500, reason, type_="internal_error",
                                  headers=self.reply_headers(p))
        finally:
            release(self, p, reason, cause)
