"""Engine load from vLLM's Prometheus ``/metrics``, scraped periodically into the control plane.

:func:`parse_metrics` reads the text format with ``prometheus_client``'s parser (after
keeping only the lines of the metrics below, so a scrape costs little however many
histograms the engine exports). Each quantity is summed over its label sets (vLLM labels
``engine`` and ``model_name``; a data-parallel server reports one set per engine), except
KV usage, a fraction, which is averaged. The first name found wins:

- running requests: ``vllm:num_requests_running``
- waiting requests: ``vllm:num_requests_waiting``
- KV usage in [0, 1]: ``vllm:kv_cache_usage_perc`` (v1), ``vllm:gpu_cache_usage_perc``
  (v0 and early v1), ``vllm:cpu_cache_usage_perc`` (v0 CPU backend)
- prefix cache: ``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total`` (v1),
  ``vllm:gpu_prefix_cache_hits_total`` / ``..._queries_total`` (early v1); the hit rate
  reported to the control plane is over the interval since the previous scrape.

:class:`MetricsScraper` runs one task per engine that scrapes every ``interval_s`` and
hands the :class:`~control_plane.types.EngineStats` to a callback (the gateway calls
``ControlPlane.observe``). Failures are counted per engine (``failures``,
``consecutive_failures``, ``last_error``) and reported to ``on_failure``; a failed scrape
does not change an instance's health. Health is decided by the health checker
(:mod:`live.gateway_monitor`, ``GET /health``), and additionally by the control plane's
``health_timeout_s`` when that is configured (no report for that long -> down; up again
when scrapes succeed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from control_plane.types import EngineStats
from live.aio import cancel_all
from live.client import EngineClient

__all__ = ["EngineMetrics", "MetricsParseError", "MetricsScraper", "parse_metrics"]

RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
            "vllm:cpu_cache_usage_perc")
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
_ALL = RUNNING + WAITING + KV_USAGE + PREFIX_HITS + PREFIX_QUERIES
_FAMILIES = tuple(n.removesuffix("_total") for n in _ALL)
_KEEP = tuple(_FAMILIES) + tuple(f"# HELP {n} " for n in _FAMILIES) + tuple(
    f"# TYPE {n} " for n in _FAMILIES)


class MetricsParseError(ValueError):
    """The text is not Prometheus text, or lacks the request counts."""


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape: current load and the cumulative prefix-cache counters (None: absent)."""

    running: int
    waiting: int
    kv_usage: float
    prefix_hits: float | None = None
    prefix_queries: float | None = None


def _first(sums: dict[str, list[float]], names: tuple[str, ...]) -> list[float] | None:
    for n in names:
        v = sums.get(n)
        if v:
            return v
    return None


def parse_metrics(text: str) -> EngineMetrics:
    """The load figures in a vLLM ``/metrics`` text (see the module doc for the names)."""
    kept = "\n".join(line for line in text.splitlines() if line.startswith(_KEEP))
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(kept + "\n"):
            for s in family.samples:
                values.setdefault(s.name, []).append(float(s.value))
    except Exception as exc:  # the parser raises ValueError / TypeError / IndexError
        raise MetricsParseError(f"not Prometheus text: {exc}") from exc
    running = _first(values, RUNNING)
    waiting = _first(values, WAITING)
    if running is None or waiting is None:
        missing = [n[0] for n, v in ((RUNNING, running), (WAITING, waiting)) if v is None]
        raise MetricsParseError(f"no {' / '.join(missing)} in the metrics")
    kv = _first(values, KV_USAGE)
    kv_usage = 0.0 if kv is None else sum(kv) / len(kv)
    if kv_usage > 1.0:  # a percentage from an engine that reports 0..100
        kv_usage /= 100.0
    kv_usage = min(1.0, max(0.0, kv_usage))
    hits = _first(values, PREFIX_HITS)
    queries = _first(values, PREFIX_QUERIES)
    return EngineMetrics(max(0, round(sum(running))), max(0, round(sum(waiting))), kv_usage,
                         None if hits is None else sum(hits),
                         None if queries is None else sum(queries))


class MetricsScraper:
    """Scrapes each engine's ``/metrics`` every ``interval_s`` (see the module doc)."""

    def __init__(self, clients: Mapping[str, EngineClient],
                 on_stats: Callable[[str, EngineStats], None], interval_s: float = 0.5, *,
                 on_failure: Callable[[str, str], None] | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"scrape interval_s must be > 0, got {interval_s!r}")
        self.clients = dict(clients)
        self.on_stats = on_stats
        self.on_failure = on_failure
        self.interval_s = float(interval_s)
        self.scrapes = dict.fromkeys(self.clients, 0)
        self.failures = dict.fromkeys(self.clients, 0)
        self.consecutive_failures = dict.fromkeys(self.clients, 0)
        self.last_error: dict[str, str | None] = dict.fromkeys(self.clients)
        self._prefix: dict[str, tuple[float, float]] = {}
        self._tasks: list[asyncio.Task] = []

    def stats_from(self, instance_id: str, m: EngineMetrics) -> EngineStats:
        """EngineStats with the prefix hit rate since this engine's previous scrape."""
        rate = None
        if m.prefix_hits is not None and m.prefix_queries is not None:
            prev = self._prefix.get(instance_id)
            self._prefix[instance_id] = (m.prefix_hits, m.prefix_queries)
            if prev is not None and m.prefix_queries > prev[1] and m.prefix_hits >= prev[0]:
                rate = min(1.0, (m.prefix_hits - prev[0]) / (m.prefix_queries - prev[1]))
        return EngineStats(m.running, m.waiting, m.kv_usage, rate)

    async def scrape_once(self, instance_id: str) -> EngineStats | None:
        """Scrape one engine and report it; None (and a counted failure) if it failed."""
        try:
            text = await self.clients[instance_id].metrics_text()
            stats = self.stats_from(instance_id, parse_metrics(text))
        except Exception as exc:  # any failure of one scrape is counted, never fatal
            self.failures[instance_id] += 1
            self.consecutive_failures[instance_id] += 1
            why = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self.last_error[instance_id] = why
            if self.on_failure is not None:
                self.on_failure(instance_id, why)
            return None
        self.scrapes[instance_id] += 1
        self.consecutive_failures[instance_id] = 0
        self.on_stats(instance_id, stats)
        return stats

    async def _loop(self, instance_id: str) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.scrape_once(instance_id)
            next_at = max(next_at + self.interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.get_running_loop().create_task(
                self._loop(iid), name=f"scrape {iid}") for iid in self.clients]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)
