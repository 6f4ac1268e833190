"""The counters and histogram totals of a vLLM ``/metrics`` text that calibration needs.

vLLM records per-request timings when a request finishes, as Prometheus histograms; the
difference of two scrapes taken around a probe (and after every request of it finished)
gives the exact sums of those timings over the probe's requests, and the count of engine
iterations in between (``vllm:iteration_tokens_total`` observes one value per step).
Each quantity is summed over its label sets (``engine``, ``model_name``,
``finished_reason``). A small line parser, not the full Prometheus one: a scrape is about
50 KB and is taken twice per probe.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HISTOGRAMS", "MetricsSnapshot", "MissingMetricsError", "parse_snapshot"]

HISTOGRAMS = {
    "queue": "vllm:request_queue_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
    "inference": "vllm:request_inference_time_seconds",
    "ttft": "vllm:time_to_first_token_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
    "itl": "vllm:inter_token_latency_seconds",
    "steps": "vllm:iteration_tokens_total",
}
COUNTERS = {
    "finished": "vllm:request_success_total",
    "generated": "vllm:generation_tokens_total",
    "prompt": "vllm:prompt_tokens_total",
    "prefix_hits": "vllm:prefix_cache_hits_total",
    "preemptions": "vllm:num_preemptions_total",
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
}
_REQUIRED = ("queue", "prefill", "decode", "inference", "ttft", "e2e", "steps", "finished",
             "generated", "running", "waiting")
_BY_NAME = {**{f"{n}_sum": (k, "sum") for k, n in HISTOGRAMS.items()},
            **{f"{n}_count": (k, "count") for k, n in HISTOGRAMS.items()},
            **{n: (k, "value") for k, n in COUNTERS.items()}}


class MissingMetricsError(ValueError):
    """The engine's ``/metrics`` lacks quantities calibration needs."""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """``sums`` / ``counts`` of the histograms and ``values`` of the counters and gauges,
    by the short names of :data:`HISTOGRAMS` and ``COUNTERS``."""

    sums: dict[str, float]
    counts: dict[str, float]
    values: dict[str, float]

    def __sub__(self, other: MetricsSnapshot) -> MetricsSnapshot:
        return self._combine(other, -1.0)

    def __add__(self, other: MetricsSnapshot) -> MetricsSnapshot:
        """Two engines' totals together (e.g. a cluster's)."""
        return self._combine(other, 1.0)

    def _combine(self, other: MetricsSnapshot, sign: float) -> MetricsSnapshot:
        return MetricsSnapshot(
            {k: v + sign * other.sums.get(k, 0.0) for k, v in self.sums.items()},
            {k: v + sign * other.counts.get(k, 0.0) for k, v in self.counts.items()},
            {k: v + sign * other.values.get(k, 0.0) for k, v in self.values.items()})

    @property
    def busy(self) -> int:
        """Requests the engine runs or holds (gauges; meaningful on a scrape, not a delta)."""
        return round(self.values.get("running", 0.0) + self.values.get("waiting", 0.0))


def _value(line: str) -> float:
    rest = line.rsplit("}", 1)[1] if "}" in line else line.split(None, 1)[1]
    return float(rest.split()[0])


def parse_snapshot(text: str) -> MetricsSnapshot:
    """The totals in a ``/metrics`` text; MissingMetricsError names what is missing."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    values: dict[str, float] = {}
    target = {"sum": sums, "count": counts, "value": values}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = len(line)
        for sep in ("{", " "):
            k = line.find(sep)
            if 0 <= k < end:
                end = k
        hit = _BY_NAME.get(line[:end])
        if hit is None:
            continue
        key, kind = hit
        try:
            v = _value(line)
        except (IndexError, ValueError) as exc:
            raise MissingMetricsError(f"unreadable metrics line {line!r}: {exc}") from exc
        d = target[kind]
        d[key] = d.get(key, 0.0) + v
    missing = [HISTOGRAMS.get(k) or COUNTERS[k] for k in _REQUIRED
               if k not in (sums if k in HISTOGRAMS else values)]
    if missing:
        raise MissingMetricsError("the engine's /metrics lacks " + ", ".join(missing)
                                  + " (calibration needs a vLLM v1 server, 0.8 or newer)")
    return MetricsSnapshot(sums, counts, values)
