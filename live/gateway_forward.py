"""The gateway's request path: HTTP request -> control plane -> engine -> client.

Each request becomes a control-plane :class:`~control_plane.types.Request` and is
submitted; the handler then waits until the control plane dispatches it (at once, or from
the queue after a later ``complete`` / ``observe`` / ``tick``) or rejects it, forwards it
to the chosen engine and passes the answer through.

Failures:

- before the first byte reaches the client (cannot connect, HTTP 5xx, the connection drops
  before the first SSE event or before a non-streamed body is complete): reported to the
  control plane as retryable; it places the request on another instance (``Retry`` then
  ``Dispatch``) and the client never sees the failure, unless ``max_attempts`` runs out
  (HTTP 502 naming the instances and the last error);
- HTTP 4xx from the engine: passed to the client as is; not retried;
- after the stream started: the client gets an SSE event
  ``data: {"error": {"message": ..., "type": "upstream_error", "code": 502}}`` and the
  stream ends without ``data: [DONE]`` (the ``openai`` SDK raises ``APIError``);
- the control plane retries an attempt on its own (its instance was marked down): the
  handler's forwarding is cancelled (the engine's connection closed) and the request waits
  for its next dispatch; a stream that had started ends with the error event above;
- the client goes away: the engine's connection is closed and the attempt reported as
  failed (not retryable); a request still in the control plane's queue is cancelled there
  (``ControlPlane.cancel``), so it never reaches an engine.

Streams are passed through as SSE events arrive: the bytes of each read up to its last
complete event go out at once (a partial event waits for its end, so an error event can
never be glued to half an event). The usage chunk is read for the token counts and hidden
from clients that did not ask for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING

from control_plane.actions import Outcome, RejectCause
from live.gateway_records import DONE, INFLIGHT, QUEUED, Pending
from live.http_server import HttpRequest, Response, StreamResponse, error_json
from live.upstream import UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from live.gateway import Gateway

__all__ = ["REJECT_STATUS", "end_stream", "release", "serve_request"]

REJECT_STATUS = {
    RejectCause.QUEUE_FULL: 429, RejectCause.SHED: 429, RejectCause.PREEMPTED: 429,
    RejectCause.BUDGET_EXHAUSTED: 429, RejectCause.NO_INSTANCES: 503,
    RejectCause.SLO_INFEASIBLE: 503, RejectCause.QUEUE_TIMEOUT: 503,
    RejectCause.RETRIES_EXHAUSTED: 502,
}
_MAX_ERROR_BODY = 64 * 1024
_MAX_EVENT = 4 * 1024 * 1024  # an SSE event larger than this is an engine fault
_NET_ERRORS = (TimeoutError, OSError)  # UpstreamError is a ConnectionError
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_CACHED = re.compile(rb'"cached_tokens"\s*:\s*(\d+)')
_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


def _usage(data: bytes) -> tuple[int | None, int | None, int]:
    """(completion, prompt, cached) token counts from the last usage object in ``data``."""
    at = data.rfind(b'"usage"')
    if at < 0:
        return None, None, 0
    tail = data[at:]
    c, p, k = _COMPLETION.search(tail), _PROMPT.search(tail), _CACHED.search(tail)
    return (None if c is None else int(c.group(1)), None if p is None else int(p.group(1)),
            0 if k is None else int(k.group(1)))


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None,
                      "code": 502}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class _Stream:
    __slots__ = ("cached", "done", "error", "events", "out_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.done = False
        self.error: str | None = None
        self.events = 0
        self.out_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.cached = 0

    def scan(self, data: bytes, hide_usage: bool) -> bytes:
        """Note usage / [DONE] / error events in complete events ``data``; returns what
        to send (``data`` without a hidden usage chunk)."""
        self.events += data.count(b"data:")
        if b'"usage"' not in data and b"[DONE]" not in data and b'"error"' not in data:
            return data
        keep = []
        for ev in data.split(b"\n\n"):
            if not ev:
                continue
            if b"[DONE]" in ev and ev.strip().endswith(b"[DONE]"):
                self.done = True
            elif b'"usage"' in ev:
                c, p, k = _usage(ev)
                if c is not None:
                    self.out_tokens, self.prompt_tokens, self.cached = c, p, k
                    if hide_usage and _NO_CHOICES.search(ev):
                        continue
            elif b'"error"' in ev and self.error is None:
                self.error = ev.decode(errors="replace")[:500]
            keep.append(ev)
        return b"\n\n".join(keep) + b"\n\n" if keep else b""


async def serve_request(gw: Gateway, http: HttpRequest, p: Pending
                        ) -> Response | StreamResponse:
    """Wait for dispatches and forward until an answer (or a final error) goes out."""
    loop = asyncio.get_running_loop()
    while True:
        if p.reject is not None:
            a = p.reject
            status = REJECT_STATUS.get(a.cause, 503)
            return error_json(status, a.reason, type_="request_rejected",
                                  code=a.cause.value, headers=gw.reply_headers(p))
        if not p.ready:
            p.waiter = loop.create_future()
            try:
                await p.waiter
            finally:
                p.waiter = None
            continue
        p.ready = False
        iid, attempt = p.instance, p.attempt
        p.forwarding = attempt
        try:
            resp = await _attempt(gw, http, p, iid)
        except asyncio.CancelledError:
            reason = p.abort
            if reason is None or p.task is None:
                raise
            p.abort = None
            p.forwarding = 0
            if p.task.uncancel() > 0:
                raise
            gw.metrics.upstream_error(iid, "mid_stream" if p.started else "before_first_byte")
            if not p.started:
                continue  # the control plane re-queued it: wait for the next dispatch
            _record_failure(gw, p, "upstream_error", f"stream from {iid} cut: {reason}",
                            gw.now())
            resp = p.started
            await end_stream(resp, f"stream from {iid} cut: {reason}")
            return resp
        p.forwarding = 0
        if resp is not None:
            return resp


async def end_stream(resp: StreamResponse, message: str) -> None:
    with contextlib.suppress(Exception):  # the client is gone too, or it never started
        await resp.write(_sse_error(message))
        await resp.write_eof()


def _retry(gw: Gateway, p: Pending, error: str) -> None:
    """Report a retryable failure (nothing reached the client); the actions place it."""
    p.forwarding = 0
    p.state = QUEUED
    gw.execute(gw.cp.complete(p.request.request_id, gw.now(),
                              Outcome(ok=False, retryable=True, error=error)))


def _retry_lost(gw: Gateway, p: Pending, iid: str, stage: str, what: str,
                exc: BaseException) -> None:
    """The engine's connection failed before anything reached the client: count it under
    ``stage``, probe the engine's health now and report a retryable failure."""
    gw.metrics.upstream_error(iid, stage)
    gw.probe(iid)
    _retry(gw, p, f"{iid}: {what}: {type(exc).__name__}: {exc}")


def _record_failure(gw: Gateway, p: Pending, cause: str, detail: str, now: float) -> None:
    """Record ``p`` as failed, once."""
    if not p.recorded:
        gw.records.add(p, "failed", cause=cause, detail=detail, finish_s=now)
        p.recorded = True
        gw.metrics.finished(p.request.priority, now, False)


def _fail(gw: Gateway, p: Pending, cause: str, error: str) -> None:
    """Report a final failure after the client got (part of) an answer."""
    p.forwarding = 0
    p.state = DONE
    now = gw.now()
    _record_failure(gw, p, cause, error, now)
    gw.execute(gw.cp.complete(p.request.request_id, now,
                              Outcome(ok=False, retryable=False, error=error)))


def _complete(gw: Gateway, p: Pending, out_tokens: int, prompt_tokens: int | None,
              cached: int, *, streamed: bool) -> None:
    p.forwarding = 0
    p.state = DONE
    now = gw.now()
    r = p.request
    a = r.arrival_s
    ttft = p.first_s - a if streamed and p.first_s is not None else None
    if not streamed:
        p.first_s = now  # all tokens reach the client at once
    gw.records.add(p, "ok", finish_s=now, output_tokens=out_tokens,
                   prompt_tokens=prompt_tokens, cached_tokens=cached)
    p.recorded = True
    gw.finished_ok(p, now, out_tokens, ttft)
    gw.execute(gw.cp.complete(r.request_id, now, Outcome(
        ttft_s=ttft, e2e_s=now - a, output_tokens=out_tokens,
        cached_prompt_tokens=min(cached, r.prompt_tokens))))


async def _attempt(gw: Gateway, http: HttpRequest, p: Pending, iid: str
                   ) -> Response | StreamResponse | None:
    """One attempt on ``iid``: the client's response, or None after a retryable failure."""
    client = gw.clients[iid]
    try:
        up = await client.forward(p.body.kind, p.body.forward)
    except _NET_ERRORS as exc:
        _retry_lost(gw, p, iid, "connect", f"cannot connect to {client.base_url}", exc)
        return None
    try:
        if up.status != 200:
            try:
                data = await up.read(_MAX_ERROR_BODY)
            except _NET_ERRORS:
                data = b""
            text = data.decode(errors="replace")
            if up.status >= 500:
                gw.metrics.upstream_error(iid, "status")
                _retry(gw, p, f"{iid} answered HTTP {up.status}: {text[:300]}")
                return None
            _fail(gw, p, "engine_rejected", f"{iid} answered HTTP {up.status}: {text[:300]}")
            return Response(up.status, data, headers={
                "content-type": up.headers.get("content-type", "application/json"),
                **gw.reply_headers(p)})
        if p.body.stream:
            return await _stream(gw, http, p, iid, up)
        try:
            data = await up.read()
        except _NET_ERRORS as exc:
            _retry_lost(gw, p, iid, "before_first_byte", "response cut before its end", exc)
            return None
        out, prompt, cached = _usage(data)
        _complete(gw, p, out or 0, prompt, cached, streamed=False)
        return Response(200, data, headers={"content-type": "application/json",
                                            **gw.reply_headers(p)})
    finally:
        up.release()


async def _stream(gw: Gateway, http: HttpRequest, p: Pending, iid: str,
                  up: UpstreamResponse) -> StreamResponse | None:
    buf = b""
    cut = -1
    try:  # until the first complete event: failures here are retried transparently
        while cut < 0:
            chunk = await up.readany()
            if not chunk:
                raise UpstreamError("the engine closed the stream before its first event")
            buf += chunk
            cut = buf.rfind(b"\n\n")
            if cut < 0 and len(buf) > _MAX_EVENT:
                raise UpstreamError(f"no SSE event in {len(buf)} bytes")
    except _NET_ERRORS as exc:
        _retry_lost(gw, p, iid, "before_first_byte", "stream failed before its first event",
                    exc)
        return None
    p.first_s = gw.now()
    resp = StreamResponse(200, {**_SSE_HEADERS, **gw.reply_headers(p)})
    p.started = resp  # from here on a failure cannot be hidden from the client
    await resp.prepare(http)
    st = _Stream()
    hide = p.body.hide_usage
    out, buf = buf[:cut + 2], buf[cut + 2:]
    tail = b""
    while True:
        if out:
            send = st.scan(out, hide)
            if st.done:  # the last bytes go out with the end of the response: one send
                tail = send
                break
            if send:
                try:
                    await resp.write(send)
                except (OSError, RuntimeError) as exc:
                    gw.metrics.client_disconnects += 1
                    _fail(gw, p, "client_disconnected", f"client gone: {exc}")
                    return resp
        try:
            chunk = await up.readany()
            if not chunk:
                raise UpstreamError("the engine closed the stream before data: [DONE]")
        except _NET_ERRORS as exc:
            gw.metrics.upstream_error(iid, "mid_stream")
            gw.probe(iid)
            msg = (f"stream from {iid} failed after it started: {type(exc).__name__}: "
                   f"{exc}")
            _fail(gw, p, "upstream_error", msg)
            await end_stream(resp, msg)
            return resp
        buf += chunk
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            out = b""
            if len(buf) > _MAX_EVENT:
                msg = f"stream from {iid}: no SSE event end in {len(buf)} bytes"
                _fail(gw, p, "upstream_error", msg)
                await end_stream(resp, msg)
                return resp
            continue
        out, buf = buf[:cut + 2], buf[cut + 2:]
    try:
        await resp.write_eof(tail)
    except (OSError, RuntimeError) as exc:
        gw.metrics.client_disconnects += 1
        _fail(gw, p, "client_disconnected", f"client gone: {exc}")
        return resp
    if st.error is not None:
        _fail(gw, p, "engine_error", f"{iid} reported an error in the stream: {st.error}")
    else:
        out_tokens = st.out_tokens if st.out_tokens is not None else max(0, st.events - 1)
        _complete(gw, p, out_tokens, st.prompt_tokens, st.cached, streamed=True)
    return resp


def release(gw: Gateway, p: Pending, reason: str, cause: str = "client_disconnected") -> None:
    """The handler is done with ``p`` (normally or not): settle it with the control plane."""
    p.gone = True
    p.task = None
    p.started = None
    rid = p.request.request_id
    if p.state in (INFLIGHT, QUEUED):
        queued = p.state == QUEUED
        p.state = DONE
        p.body = None
        now = gw.now()
        _record_failure(gw, p, cause, reason, now)
        gw.pending.pop(rid, None)
        if queued:  # only its own Reject comes back: nothing to execute
            gw.cp.cancel(rid, now, reason)
        else:
            gw.execute(gw.cp.complete(rid, now, Outcome(ok=False, retryable=False,
                                                        error=reason)))
    else:
        gw.pending.pop(rid, None)
