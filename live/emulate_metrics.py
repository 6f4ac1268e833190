"""The emulated engine's Prometheus ``/metrics``, under vLLM v1's metric names.

Labels ``engine`` (``"0"``: one engine core per server) and ``model_name`` (the served
name) on every series, as vLLM exports them, so :mod:`live.metrics_scrape` and any
dashboard built for vLLM read an emulated engine unchanged:

- gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc`` (a fraction in [0, 1], as vLLM v1 reports it);
- counters ``vllm:num_preemptions_total``, ``vllm:prefix_cache_queries_total`` and
  ``vllm:prefix_cache_hits_total`` (tokens), ``vllm:prompt_tokens_total``,
  ``vllm:generation_tokens_total``, ``vllm:request_success_total`` (label
  ``finished_reason``: always ``length``, outputs run to ``max_tokens``);
- histograms (seconds, vLLM's buckets) ``vllm:time_to_first_token_seconds`` (arrival to
  first token), ``vllm:inter_token_latency_seconds`` (between consecutive outputs of a
  request), ``vllm:e2e_request_latency_seconds`` (arrival to last token) and
  ``vllm:request_queue_time_seconds`` (arrival to first scheduled), and the phases vLLM
  v1 times from a request's first scheduling (``vllm/v1/metrics/stats.py``):
  ``vllm:request_prefill_time_seconds`` (to the first token),
  ``vllm:request_decode_time_seconds`` (first to last token) and
  ``vllm:request_inference_time_seconds`` (to the last token);
- the histogram ``vllm:iteration_tokens_total``: per engine step, the prompt tokens it
  computed plus the tokens it generated (a finished prefill's first token counts), as
  vLLM v1 observes it;
- the info gauge ``vllm:cache_config_info`` (value 1; labels the KV cache's
  ``block_size``, ``num_gpu_blocks`` and ``enable_prefix_caching``, a subset of the
  ``CacheConfig`` fields vLLM puts there), from which a client reads the KV capacity.

Two series of the emulator's own (not vLLM's), with ``lateness`` given: whether the process
kept real time, which its latencies mean nothing without: the gauge
``sagellm_emulator_max_late_seconds`` (the latest an iteration's tokens went out after its
planned end) and the counter ``sagellm_emulator_resyncs_total`` (times the engine's clock
jumped to real time, more than ``max_lag_s`` late: :class:`live.emulate.EmulatedEngine`).

Times are the engine model's (iteration ends), not when the bytes left the server.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["CONTENT_TYPE", "EngineCounters", "EngineLoad", "EngineMetricsText",
           "LatencyHistogram"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# vLLM v1's buckets (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                  2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
REQUEST_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                     50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class LatencyHistogram:
    """Bucket counts and sum of one unlabelled histogram (one event loop, no locks):
    seconds, or tokens for ``iteration_tokens``."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds_s: tuple[float, ...]) -> None:
        self.bounds = tuple(sorted(bounds_s))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value_s: float) -> None:
        self.counts[bisect_left(self.bounds, value_s)] += 1
        self.sum += value_s

    @property
    def count(self) -> int:
        return sum(self.counts)


class EngineCounters:
    """What the emulated engine counts as requests go through (the engine model keeps
    preemptions and prefix-cache counters itself)."""

    __slots__ = (
        "decode_time",
        "e2e",
        "generation_tokens",
        "inference_time",
        "iteration_tokens",
        "itl",
        "prefill_time",
        "prompt_tokens",
        "queue_time",
        "success",
        "ttft",
    )

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success = 0
        self.ttft = LatencyHistogram(TTFT_BUCKETS_S)
        self.itl = LatencyHistogram(ITL_BUCKETS_S)
        self.e2e = LatencyHistogram(REQUEST_BUCKETS_S)
        self.queue_time = LatencyHistogram(REQUEST_BUCKETS_S)
        self.prefill_time = LatencyHistogram(REQUEST_BUCKETS_S)
        self.decode_time = LatencyHistogram(REQUEST_BUCKETS_S)
        self.inference_time = LatencyHistogram(REQUEST_BUCKETS_S)
        self.iteration_tokens = LatencyHistogram(ITERATION_TOKENS_BUCKETS)


class EngineLoad(NamedTuple):
    """The engine model's state at a scrape (``kv_usage`` in [0, 1]; counters cumulative;
    prefix-cache figures in tokens)."""

    running: int
    waiting: int
    kv_usage: float
    preemptions: int
    prefix_queries: int
    prefix_hits: int


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_GAUGES = (
    ("vllm:num_requests_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
)
_COUNTERS = (
    ("vllm:num_preemptions", "Cumulative number of preemption from the engine."),
    ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried "
     "tokens."),
    ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
    ("vllm:prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:generation_tokens", "Number of generation tokens processed."),
)
_HISTOGRAMS = (
    ("ttft", "vllm:time_to_first_token_seconds", "Histogram of time to first token in "
     "seconds."),
    ("itl", "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in "
     "seconds."),
    ("e2e", "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in "
     "seconds."),
    ("queue_time", "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING "
     "phase for request."),
    ("prefill_time", "vllm:request_prefill_time_seconds", "Histogram of time spent in "
     "PREFILL phase for request."),
    ("decode_time", "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE "
     "phase for request."),
    ("inference_time", "vllm:request_inference_time_seconds", "Histogram of time spent in "
     "RUNNING phase for request."),
    ("iteration_tokens", "vllm:iteration_tokens_total", "Histogram of number of tokens per "
     "engine_step."),
)


class EngineMetricsText:
    """Renders one emulated engine's metrics (Prometheus text format 0.0.4) from
    ``load()`` (called at each scrape) and its ``counters``. Written directly rather than
    through ``prometheus_client``'s exposition, which costs milliseconds a scrape: the
    engines share the event loop that times their iterations."""

    def __init__(self, model_name: str, load: Callable[[], EngineLoad],
                 counters: EngineCounters, engine_label: str = "0",
                 cache_info: dict[str, object] | None = None,
                 lateness: Callable[[], tuple[float, int]] | None = None) -> None:
        """``cache_info``: the labels of ``vllm:cache_config_info`` (none: no such
        series); ``lateness``: (latest iteration end in seconds late, resyncs) at a scrape
        (none: no such series)."""
        self._load = load
        self._lateness = lateness
        self._counters = counters
        self._labels = (f'engine="{_label_value(engine_label)}",'
                        f'model_name="{_label_value(model_name)}"')
        hists = (getattr(counters, attr) for attr, _, _ in _HISTOGRAMS)
        self._le = {id(h): [f"{b!r}" for b in h.bounds] + ["+Inf"] for h in hists}
        self._info = None
        if cache_info is not None:
            labels = ",".join(f'{k}="{_label_value(str(v))}"'
                              for k, v in {**cache_info, "engine": engine_label}.items())
            self._info = ("# HELP vllm:cache_config_info Information of the LLMEngine "
                          "CacheConfig\n# TYPE vllm:cache_config_info gauge\n"
                          f"vllm:cache_config_info{{{labels}}} 1.0")

    def render(self) -> bytes:
        lab = self._labels
        load = self._load()
        c = self._counters
        out: list[str] = [self._info] if self._info else []
        for (name, doc), v in zip(_GAUGES, load[:3], strict=True):
            out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n{name}{{{lab}}} {float(v)!r}")
        for (name, doc), v in zip(_COUNTERS, (load.preemptions, load.prefix_queries,
                                              load.prefix_hits, c.prompt_tokens,
                                              c.generation_tokens), strict=True):
            out.append(f"# HELP {name}_total {doc}\n# TYPE {name}_total counter\n"
                       f"{name}_total{{{lab}}} {float(v)!r}")
        name = "vllm:request_success_total"
        out.append(f"# HELP {name} Count of successfully processed requests.\n"
                   f"# TYPE {name} counter")
        for reason, n in (("stop", 0), ("length", c.success), ("abort", 0)):
            out.append(f'{name}{{{lab},finished_reason="{reason}"}} {float(n)!r}')
        for attr, name, doc in _HISTOGRAMS:
            h = getattr(c, attr)
            out.append(f"# HELP {name} {doc}\n# TYPE {name} histogram")
            cum = 0
            for le, n in zip(self._le[id(h)], h.counts, strict=True):
                cum += n
                out.append(f'{name}_bucket{{{lab},le="{le}"}} {float(cum)!r}')
            out.append(f"{name}_count{{{lab}}} {float(cum)!r}")
            out.append(f"{name}_sum{{{lab}}} {h.sum!r}")
        if self._lateness is not None:
            late, resyncs = self._lateness()
            out.append("# HELP sagellm_emulator_max_late_seconds Latest an emulated iteration's "
                       "tokens went out after its planned end.\n"
                       "# TYPE sagellm_emulator_max_late_seconds gauge\n"
                       f"sagellm_emulator_max_late_seconds{{{lab}}} {float(late)!r}")
            out.append("# HELP sagellm_emulator_resyncs_total Times the emulated engine's clock "
                       "jumped to real time (the process fell behind).\n"
                       "# TYPE sagellm_emulator_resyncs_total counter\n"
                       f"sagellm_emulator_resyncs_total{{{lab}}} {float(resyncs)!r}")
        return ("\n".join(out) + "\n").encode()
