"""Replay a workload against the gateway in real time; client-side records.

:func:`replay` sends each :class:`~control_plane.types.Request` of an iterator (the
``workloads`` readers and generators) to an OpenAI-compatible server (the gateway, or one
vLLM engine) at ``arrival_s / time_scale`` and measures, on the client's clock, when the
first token and the last token arrive. The result is one
:class:`~control_plane.records.RequestRecord` per request, the simulator's record format,
so sim and live runs load into the same notebook (:func:`save_records`,
:func:`load_records`).

Time: the replay clock is the event loop's monotonic clock mapped onto the scaled trace:
the first request is sent at once, and a record's times are seconds on the scaled trace's
timeline, so ``arrival_s`` is exactly the request's ``arrival_s / time_scale`` (what the
simulator of the same scaled trace records). Open loop: a request is due at its arrival
whatever happened to earlier ones; a send that is late (client overloaded, or the
concurrency bound reached) still counts from the scheduled arrival, so the lateness shows in
its TTFT (no coordinated omission). ``ReplayResult.max_send_lag_s`` says how late sends got.

What is sent (``/v1/completions``):

- the prompt as **token ids** (default) of exactly ``prompt_tokens`` ids. Ids come from the
  request's ``prefix_hashes`` (one chained hash per block of ``block_size`` tokens, see
  :mod:`control_plane.prefix`): block ``i``'s ids are a deterministic function of its hash,
  so requests sharing leading hash blocks share exactly those leading tokens (and the
  engine's prefix cache sees the sharing the trace describes); the tokens after the hashed
  blocks are derived from the request id, so they are unique to the request. Ids are drawn
  from ``[first_token_id, vocab_size)``: the project's tiny model has a 4,096-token
  vocabulary whose first 8 ids are special tokens (the defaults). A real model takes its
  own ``vocab_size``. With ``prompt_mode="text"`` the prompt is instead synthetic text of
  one common word per token (the same derivation), and ``x-prompt-tokens`` tells the
  gateway the intended length (the engine's tokenizer decides the real one);
- ``max_tokens`` = the request's output length (``output_tokens``, else ``max_tokens``)
  with ``ignore_eos: true`` (a vLLM sampling parameter), so outputs have exactly that length;
- streams ask for ``stream_options: {include_usage: true, continuous_usage_stats: true}``:
  token counts come from usage, per chunk when the server supports it (vLLM does: a chunk
  can carry several tokens), else one token per content chunk;
- ``max_model_len`` (when set) clips each request to fit: the output to ``max_model_len -
  1``, then the prompt to ``max_model_len - output`` (the records hold what was sent;
  ``ReplayResult.clipped`` counts them);
- headers (:mod:`live.headers`): ``x-request-id`` (``id_prefix`` + the request id),
  ``x-priority``, ``x-tenant``, ``x-session-id``, the SLO (``x-slo-*-ms``),
  ``x-cost-budget-usd``, ``x-output-tokens``.

A record (client side): ``dispatch_s`` is when the client sent the request (the client
cannot see the gateway's queue: join with the gateway's own records, ``GET
/admin/records``, on ``request_id`` for that), ``instance_id`` the ``x-sagellm-instance``
answer header (or the server's ``host:port`` when it sends none), ``attempts`` the
``x-sagellm-attempts`` header, ``first_token_s`` the first chunk with a token,
``finish_s`` the last one (so :attr:`RequestRecord.tpot_s` is the mean inter-token latency;
every gap is in ``ReplayResult.token_times`` when ``keep_token_times`` is set),
``output_tokens`` and ``cached_prompt_tokens`` from usage. Status: ``ok``; ``rejected``
for the gateway's answers of type ``request_rejected`` (429, 503, 502; ``reject_cause``
its code, e.g. ``queue_full``, as in the gateway's own records); ``failed`` otherwise
(``reject_cause``: ``http_<status>``, ``stream_error`` for an error event in the stream,
``stream_cut`` for a stream that ended without ``[DONE]``, ``connection_error``,
``timeout``, ``bad_response``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from control_plane.records import RequestRecord
from control_plane.types import Request
from live.headers import ATTEMPTS, INSTANCE
from live.replay_requests import (
    PROMPT_MODES,
    ReplayConfig,
    clip_lengths,
    prompt_text,
    prompt_token_ids,
    request_body,
    request_headers,
)

__all__ = [
    "PROMPT_MODES",
    "ReplayConfig",
    "ReplayResult",
    "load_records",
    "prompt_text",
    "prompt_token_ids",
    "replay",
    "request_body",
    "request_headers",
    "run_replay",
    "save_records",
]


@dataclass
class ReplayResult:
    """Records in the order the requests came; ``token_times`` (with ``keep_token_times``):
    request id -> ((seconds, cumulative output tokens) per chunk with tokens)."""

    records: list[RequestRecord]
    wall_s: float
    max_send_lag_s: float
    clipped: int
    token_times: dict[str, tuple[tuple[float, int], ...]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "rejected": 0, "failed": 0}
        for r in self.records:
            out[r.status] += 1
        return out

    def inter_token_latencies(self) -> list[float]:
        """Every inter-token gap in seconds (a chunk of k tokens after a gap g: k gaps of
        g / k), over the kept token times."""
        out: list[float] = []
        for times in self.token_times.values():
            for (t0, n0), (t1, n1) in itertools.pairwise(times):
                k = n1 - n0
                if k > 0:
                    out += [(t1 - t0) / k] * k
        return out


# -- one request ------------------------------------------------------------------------

class _Outcome:
    __slots__ = ("attempts", "cached", "cause", "detail", "first", "instance", "last",
                 "out_tokens", "prompt_tokens", "status", "times")

    def __init__(self) -> None:
        self.status = "failed"
        self.cause: str | None = None
        self.detail = ""
        self.instance: str | None = None
        self.attempts = 0
        self.first: float | None = None
        self.last: float | None = None
        self.out_tokens = 0
        self.prompt_tokens: int | None = None
        self.cached = 0
        self.times: list[tuple[float, int]] = []


def _error_of(data: bytes) -> tuple[str | None, str, str | None]:
    """(code, message, type) of an OpenAI-style error body (best effort)."""
    try:
        err = json.loads(data).get("error")
    except (ValueError, AttributeError):
        err = None
    if not isinstance(err, dict):
        text = data.decode(errors="replace")[:300]
        return None, text, None
    code = err.get("code")
    return (None if code is None else str(code)), str(err.get("message", ""))[:500], \
        err.get("type")


def _take_usage(o: _Outcome, usage: object) -> int | None:
    if not isinstance(usage, dict):
        return None
    c = usage.get("completion_tokens")
    p = usage.get("prompt_tokens")
    details = usage.get("prompt_tokens_details")
    if isinstance(p, int):
        o.prompt_tokens = p
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        o.cached = details["cached_tokens"]
    return c if isinstance(c, int) else None


def _has_text(choice: object) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    text = choice.get("text") if delta is None else (
        delta.get("content") if isinstance(delta, dict) else None)
    return bool(text)


async def _read_stream(resp: aiohttp.ClientResponse, o: _Outcome,
                       clock: Callable[[], float]) -> None:
    done = False
    counted = 0  # tokens seen so far (usage when given, else one per chunk with text)
    final: int | None = None  # completion tokens of the last usage seen
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        now = clock()
        try:
            ev = json.loads(data)
        except ValueError:
            o.cause, o.detail = "stream_error", f"bad event: {data[:200]!r}"
            return
        if not isinstance(ev, dict):
            continue
        if "error" in ev:
            err = ev["error"]
            o.cause = "stream_error"
            o.detail = str(err.get("message") if isinstance(err, dict) else err)[:500]
            return
        total = _take_usage(o, ev.get("usage"))
        if total is not None:
            final = total
        choices = ev.get("choices")
        if not choices:
            continue
        if total is not None:
            new = total > counted
            counted = max(counted, total)
        else:
            new = any(_has_text(c) for c in choices)
            counted += new
        if new:
            if o.first is None:
                o.first = now
            o.last = now
            o.times.append((now, counted))
            o.out_tokens = counted
    if not done:
        o.cause, o.detail = "stream_cut", "the stream ended without data: [DONE]"
        return
    if final is not None:
        o.out_tokens = final
    o.status = "ok"


async def _send(http: aiohttp.ClientSession, url: str, body: dict, headers: dict,
                cfg: ReplayConfig, clock: Callable[[], float], o: _Outcome) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s,
                                    sock_read=cfg.request_timeout_s)
    try:
        async with http.post(url, json=body, headers=headers, timeout=timeout) as resp:
            o.instance = resp.headers.get(INSTANCE)
            with contextlib.suppress(ValueError, TypeError):
                o.attempts = int(resp.headers.get(ATTEMPTS, "0"))
            if resp.status != 200:
                code, msg, type_ = _error_of(await resp.read())
                if type_ == "request_rejected":   # the control plane's answer
                    o.status, o.cause = "rejected", code or f"http_{resp.status}"
                else:
                    o.cause = f"http_{resp.status}"
                o.detail = msg
                return
            if cfg.stream:
                await _read_stream(resp, o, clock)
                return
            data = await resp.read()
            now = clock()
            try:
                obj = json.loads(data)
            except ValueError:
                o.cause, o.detail = "bad_response", data[:300].decode(errors="replace")
                return
            o.out_tokens = _take_usage(o, obj.get("usage") if isinstance(obj, dict)
                                       else None) or 0
            o.first = o.last = now
            o.times.append((now, o.out_tokens))
            o.status = "ok"
    except TimeoutError as exc:
        o.status, o.cause = "failed", "timeout"
        o.detail = f"no answer within {cfg.request_timeout_s} s: {exc}"
    except aiohttp.ClientError as exc:
        o.status = "failed"
        o.cause = "stream_cut" if o.first is not None else "connection_error"
        o.detail = f"{type(exc).__name__}: {exc}"[:500]
    except ValueError as exc:  # e.g. an SSE line over aiohttp's line limit
        o.status, o.cause, o.detail = "failed", "bad_response", str(exc)[:500]


def _record(r: Request, cfg: ReplayConfig, o: _Outcome, arrival: float, sent: float,
            end: float, prompt_tokens: int, fallback_instance: str) -> RequestRecord:
    instance = o.instance
    if instance is None and o.first is not None:
        instance = fallback_instance
    dispatch = max(sent, arrival) if instance is not None else None
    first = o.first if dispatch is not None else None
    last = o.last
    if o.status == "ok":
        finish = last if last is not None else end
    elif o.status == "failed":
        finish = end
    else:
        finish = None
    if first is not None and dispatch is not None:
        first = max(first, dispatch)
    if finish is not None:
        finish = max(finish, first if first is not None else dispatch
                     if dispatch is not None else arrival)
    return RequestRecord(
        request_id=cfg.id_prefix + r.request_id, tenant=r.tenant, priority=int(r.priority),
        arrival_s=arrival, prompt_tokens=prompt_tokens, output_tokens=o.out_tokens,
        slo=r.slo, instance_id=instance, dispatch_s=dispatch, first_token_s=first,
        finish_s=finish, status=o.status, reject_cause=o.cause,
        reject_detail=o.detail, attempts=o.attempts,
        cached_prompt_tokens=min(o.cached, prompt_tokens))


# -- the replay -------------------------------------------------------------------------

async def _first_model(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(base + "/v1/models",
                        timeout=aiohttp.ClientTimeout(total=30)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{base}/v1/models answered HTTP {resp.status}")
        data = (await resp.json(content_type=None)).get("data") or []
    if not data:
        raise RuntimeError(f"{base}/v1/models lists no model: give the model name")
    return str(data[0]["id"])


async def replay(requests: Iterable[Request], url: str, config: ReplayConfig | None = None,
                 *, session: aiohttp.ClientSession | None = None,
                 on_record: Callable[[RequestRecord], None] | None = None) -> ReplayResult:
    """Send ``requests`` (in arrival order) to the server at ``url`` in real time.

    Returns when every request has its record. ``on_record`` is called as each finishes
    (e.g. a progress bar). ``session``: an aiohttp session to use (default: a new one).
    """
    cfg = config or ReplayConfig()
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    u = URL(base)
    fallback = f"{u.host}:{u.port}"
    endpoint = base + "/v1/completions"
    own = session is None
    http = session or aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=cfg.max_concurrency + 4))
    loop = asyncio.get_running_loop()
    try:
        model = cfg.model or await _first_model(http, base)
        sem = asyncio.Semaphore(cfg.max_concurrency)
        slots: list[RequestRecord | None] = []
        token_times: dict[str, tuple[tuple[float, int], ...]] = {}
        tasks: set[asyncio.Task] = set()
        scale = cfg.time_scale
        offset = 0.0          # replay clock + offset = scaled trace time
        t0 = 0.0
        max_lag = 0.0
        clipped = 0
        wall0 = time.monotonic()

        def clock() -> float:
            return loop.time() - t0 + offset

        async def one(k: int, r: Request, arrival: float) -> None:
            o = _Outcome()
            prompt, out, _ = clip_lengths(r, cfg.max_model_len)
            try:
                body = request_body(r, cfg, model, prompt, out)
                headers = request_headers(r, cfg, out, prompt if cfg.prompt_mode == "text"
                                          else None)
                sent = clock()
                await _send(http, endpoint, body, headers, cfg, clock, o)
                end = clock()
                rec = _record(r, cfg, o, arrival, sent, end, prompt, fallback)
            finally:
                sem.release()
            slots[k] = rec
            if cfg.keep_token_times and o.times:
                token_times[rec.request_id] = tuple(o.times)
            if on_record is not None:
                on_record(rec)

        first = True
        for k, r in enumerate(requests):
            arrival = r.arrival_s / scale
            if first:
                first = False
                t0, offset = loop.time(), arrival
            delay = arrival - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            max_lag = max(max_lag, clock() - arrival)
            if clip_lengths(r, cfg.max_model_len)[2]:
                clipped += 1
            slots.append(None)
            task = asyncio.ensure_future(one(k, r, arrival))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        records = [rec for rec in slots if rec is not None]
        return ReplayResult(records, time.monotonic() - wall0, max_lag, clipped, token_times)
    finally:
        if own:
            await http.close()


def run_replay(requests: Iterable[Request], url: str, config: ReplayConfig | None = None,
               **kw: Any) -> ReplayResult:
    """:func:`replay` in a new event loop (for scripts and the CLI)."""
    return asyncio.run(replay(requests, url, config, **kw))


# -- files ------------------------------------------------------------------------------

def save_records(records: Iterable[RequestRecord], path: str | Path) -> Path:
    """Write records to ``.parquet`` or ``.csv`` (by suffix), columns
    ``RequestRecord.FIELDS`` (what the simulator writes)."""
    import pandas as pd

    path = Path(path)
    df = pd.DataFrame([r.to_dict() for r in records], columns=list(RequestRecord.FIELDS))
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        raise ValueError(f"{path}: the records file must end in .parquet or .csv")
    return path


def load_records(path: str | Path) -> list[RequestRecord]:
    """Records written by :func:`save_records` (or the simulator's ``*.records.*``)."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".csv":
        df = pd.read_csv(path, dtype={k: str for k in (
            "request_id", "tenant", "instance_id", "status", "reject_cause",
            "reject_detail")})
    else:
        raise ValueError(f"{path}: expected a .parquet or .csv file")
    out = []
    for row in df.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, float) and math.isnan(v):
                if k == "reject_detail":
                    v = ""
                elif k in ("tenant",):
                    continue
            clean[k] = v
        out.append(RequestRecord.from_dict(clean))
    return out
