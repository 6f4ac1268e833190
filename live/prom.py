"""The gateway's own Prometheus metrics (``GET /metrics``).

Read from the control plane at scrape time (no per-request cost):

- ``sagellm_queue_length{priority}``: requests in the global queue per priority 0..4
- ``sagellm_inflight{instance}``, ``sagellm_instance_up{instance}`` (1 up, 0 draining/down),
  ``sagellm_engine_running`` / ``_waiting`` / ``_kv_usage{instance}`` (last scrape)
- ``sagellm_dispatches_total{instance}``, ``sagellm_requests_submitted_total``,
  ``sagellm_requests_completed_total``, ``sagellm_requests_failed_total``,
  ``sagellm_retries_total``, ``sagellm_rejections_total{cause}`` (every cause, 0 included)
- ``sagellm_policy_info{policy,active,router}`` (value 1) and
  ``sagellm_policy_switches_total``

Kept by the gateway:

- histograms ``sagellm_ttft_seconds{priority}`` (streamed requests: first event from the
  engine), ``sagellm_e2e_seconds{priority}`` and ``sagellm_queue_delay_seconds{priority}``,
  all from the request's arrival at the gateway, for requests that completed
- ``sagellm_slo_attainment``: fraction of the requests that finished (completed, failed
  or rejected) in the last ``slo_window_s`` seconds that met their SLO (no SLO: met when
  completed), as :attr:`control_plane.records.RequestRecord.slo_met` defines it; NaN when
  none finished; ``sagellm_slo_window_requests`` the count it is over
- ``sagellm_upstream_errors_total{instance,stage}`` (stage ``connect``, ``status``,
  ``before_first_byte``, ``mid_stream``), ``sagellm_client_disconnects_total``,
  ``sagellm_scrape_failures_total{instance}``, ``sagellm_health_check_failures_total``
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from control_plane.actions import RejectCause
from control_plane.types import NUM_PRIORITIES, Health

if TYPE_CHECKING:
    from control_plane.manager import ControlPlane

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "Histogram", "SloWindow"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
E2E_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
                 300.0)
STAGES = ("connect", "status", "before_first_byte", "mid_stream")
_PRIORITIES = tuple(str(p) for p in range(NUM_PRIORITIES))


class Histogram:
    """A labelled histogram without locks (the gateway runs on one event loop)."""

    def __init__(self, buckets_s: tuple[float, ...], labels: tuple[str, ...]) -> None:
        self.bounds = tuple(sorted(buckets_s))
        self.labels = labels
        n = len(self.bounds) + 1
        self.counts = [[0] * n for _ in labels]
        self.sums = [0.0] * len(labels)

    def observe(self, index: int, value: float) -> None:
        self.counts[index][bisect_left(self.bounds, value)] += 1
        self.sums[index] += value

    def family(self, name: str, doc: str, label: str) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=[label])
        for i, lv in enumerate(self.labels):
            cum, buckets = 0, []
            for b, c in zip(self.bounds, self.counts[i], strict=False):
                cum += c
                buckets.append((_fmt(b), cum))
            cum += self.counts[i][-1]
            buckets.append(("+Inf", cum))
            fam.add_metric([lv], buckets, self.sums[i])
        return fam


def _fmt(x: float) -> str:
    return repr(float(x))


class SloWindow:
    """Whether each finished request met its SLO, over a sliding time window."""

    def __init__(self, window_s: float = 60.0, max_entries: int = 200_000) -> None:
        if not window_s > 0:
            raise ValueError(f"slo window_s must be > 0, got {window_s!r}")
        self.window_s = float(window_s)
        self._items: deque[tuple[float, bool]] = deque(maxlen=max_entries)
        self._met = 0

    def add(self, now: float, met: bool) -> None:
        items = self._items
        if len(items) == items.maxlen and items[0][1]:
            self._met -= 1
        items.append((now, met))
        self._met += met

    def attainment(self, now: float) -> tuple[float, int]:
        """(fraction met, count) over the window ending at ``now``; NaN when empty."""
        items = self._items
        start = now - self.window_s
        while items and items[0][0] < start:
            _, met = items.popleft()
            self._met -= met
        n = len(items)
        return (self._met / n if n else math.nan), n


class GatewayMetrics:
    """Collector of the gateway's metrics (see the module doc); ``render()`` -> text."""

    def __init__(self, cp: Callable[[], ControlPlane], now: Callable[[], float], *,
                 slo_window_s: float = 60.0) -> None:
        self._cp = cp
        self._now = now
        self.ttft = Histogram(TTFT_BUCKETS_S, _PRIORITIES)
        self.e2e = Histogram(E2E_BUCKETS_S, _PRIORITIES)
        self.queue_delay = Histogram(TTFT_BUCKETS_S, _PRIORITIES)
        self.slo = SloWindow(slo_window_s)
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.client_disconnects = 0
        self.scrape_failures: Callable[[], dict[str, int]] = dict
        self.health_failures: Callable[[], dict[str, int]] = dict
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- recording ----------------------------------------------------------------------
    def upstream_error(self, instance_id: str, stage: str) -> None:
        key = (instance_id, stage)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def finished(self, priority: int, now: float, met: bool, *, ttft_s: float | None = None,
                 e2e_s: float | None = None, queue_s: float | None = None) -> None:
        """A request finished (any status); latencies only for completed requests."""
        if ttft_s is not None:
            self.ttft.observe(priority, ttft_s)
        if e2e_s is not None:
            self.e2e.observe(priority, e2e_s)
        if queue_s is not None:
            self.queue_delay.observe(priority, queue_s)
        self.slo.add(now, met)

    # -- exposition ---------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        cp = self._cp()
        cluster = cp.cluster
        c = cp.counters
        g = GaugeMetricFamily("sagellm_queue_length", "Requests in the global queue",
                              labels=["priority"])
        for p, n in enumerate(cluster.queued_by_priority):
            g.add_metric([str(p)], n)
        yield g
        fams = {
            "inflight": GaugeMetricFamily("sagellm_inflight", "Requests in flight",
                                          labels=["instance"]),
            "up": GaugeMetricFamily("sagellm_instance_up", "1 when the instance is up",
                                    labels=["instance"]),
            "running": GaugeMetricFamily("sagellm_engine_running",
                                         "Engine-reported running requests (last scrape)",
                                         labels=["instance"]),
            "waiting": GaugeMetricFamily("sagellm_engine_waiting",
                                         "Engine-reported waiting requests (last scrape)",
                                         labels=["instance"]),
            "kv": GaugeMetricFamily("sagellm_engine_kv_usage",
                                    "Engine-reported KV cache usage, 0..1 (last scrape)",
                                    labels=["instance"]),
            "dispatch": CounterMetricFamily("sagellm_dispatches", "Dispatches per instance",
                                            labels=["instance"]),
        }
        for v in cluster.instances:
            iid = [v.instance_id]
            fams["inflight"].add_metric(iid, v.inflight)
            fams["up"].add_metric(iid, 1.0 if v.health is Health.UP else 0.0)
            fams["running"].add_metric(iid, v.engine_running)
            fams["waiting"].add_metric(iid, v.engine_waiting)
            fams["kv"].add_metric(iid, v.engine_kv_usage)
            fams["dispatch"].add_metric(iid, v.dispatched_total)
        yield from fams.values()
        for name, doc, value in (
                ("sagellm_requests_submitted", "Requests submitted", c.submitted),
                ("sagellm_requests_completed", "Requests completed", c.completed),
                ("sagellm_requests_failed", "Requests failed (not retried)", c.failed),
                ("sagellm_retries", "Attempts retried on another instance", c.retried),
                ("sagellm_policy_switches", "Queue policy switches", len(cp.switches)),
                ("sagellm_client_disconnects", "Clients gone before their answer ended",
                 self.client_disconnects)):
            yield CounterMetricFamily(name, doc, value=value)
        rej = CounterMetricFamily("sagellm_rejections", "Rejections by cause", labels=["cause"])
        for cause in RejectCause:
            rej.add_metric([cause.value], c.rejected.get(cause.value, 0))
        yield rej
        info = GaugeMetricFamily("sagellm_policy_info", "Active queue policy and router",
                                 labels=["policy", "active", "router"])
        info.add_metric([cp.policy.name, cp.policy.active, cp.router.name], 1.0)
        yield info
        att, n = self.slo.attainment(self._now())
        yield GaugeMetricFamily(
            "sagellm_slo_attainment",
            f"Fraction of requests finished in the last {self.slo.window_s:g}s that met "
            f"their SLO", value=att)
        yield GaugeMetricFamily("sagellm_slo_window_requests",
                                "Requests finished in the SLO attainment window", value=n)
        yield self.ttft.family("sagellm_ttft_seconds", "Time to first token from arrival",
                               "priority")
        yield self.e2e.family("sagellm_e2e_seconds", "End-to-end latency from arrival",
                              "priority")
        yield self.queue_delay.family("sagellm_queue_delay_seconds",
                                      "Time in the gateway's queue before the first dispatch",
                                      "priority")
        up = CounterMetricFamily("sagellm_upstream_errors", "Engine errors by stage",
                                 labels=["instance", "stage"])
        for (iid, stage), n_err in sorted(self.upstream_errors.items()):
            up.add_metric([iid, stage], n_err)
        yield up
        for name, doc, src in (
                ("sagellm_scrape_failures", "Failed /metrics scrapes", self.scrape_failures),
                ("sagellm_health_check_failures", "Failed /health probes",
                 self.health_failures)):
            fam = CounterMetricFamily(name, doc, labels=["instance"])
            for iid, n_fail in src().items():
                fam.add_metric([iid], n_fail)
            yield fam
