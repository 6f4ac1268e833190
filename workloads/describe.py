"""Describe a workload: rate, burstiness, length percentiles, prefix reuse.

Definitions (all vectorised over the trace's columns):

- ``rate_per_s``: requests / (last arrival - first arrival).
- ``burstiness_cv``: coefficient of variation (std / mean) of inter-arrival gaps; 1 for a
  Poisson process, above 1 burstier. ``peak_rate_per_s``: the busiest ``bin_s`` window.
- length percentiles (p50 / p90 / p99, mean, max) of prompt and output tokens.
- ``prefix_reuse_ratio``: the fraction of prompt blocks whose chained hash appeared in an
  earlier request (what an unbounded prefix cache could hit); ``prefix_reuse_tokens``
  weights blocks by ``block_size`` tokens, capped at each prompt's length. None without
  prefix hashes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workloads.trace import Trace

__all__ = ["LengthStats", "TraceStats", "describe", "describe_lengths", "ideal_prefix_reuse",
           "prefix_reuse"]


@dataclass(frozen=True, slots=True)
class LengthStats:
    mean: float
    p50: float
    p90: float
    p99: float
    max: int

    @classmethod
    def of(cls, values: np.ndarray) -> LengthStats:
        if len(values) == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, 0)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(values.mean()), float(p50), float(p90), float(p99), int(values.max()))


@dataclass(frozen=True, slots=True)
class TraceStats:
    name: str
    requests: int
    duration_s: float | None
    rate_per_s: float | None
    burstiness_cv: float | None
    peak_rate_per_s: float | None
    prompt_tokens: LengthStats
    output_tokens: LengthStats
    prefix_reuse_ratio: float | None
    prefix_reuse_tokens: float | None
    tenants: dict[str, int]
    priorities: dict[int, int]
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """Human-readable multi-line summary."""
        def num(x: float | None, spec: str = ".2f") -> str:
            return "-" if x is None or x != x else format(x, spec)

        lines = [f"{self.name}: {self.requests:,} requests"]
        if self.duration_s is not None:
            lines.append(f"  span {num(self.duration_s, ',.1f')} s, rate "
                         f"{num(self.rate_per_s)} req/s (peak {num(self.peak_rate_per_s)} "
                         f"req/s), inter-arrival CV {num(self.burstiness_cv)}")
        for label, s in (("prompt", self.prompt_tokens), ("output", self.output_tokens)):
            lines.append(f"  {label:<6} tokens: mean {num(s.mean, '.1f')}  p50 {num(s.p50, '.0f')}"
                         f"  p90 {num(s.p90, '.0f')}  p99 {num(s.p99, '.0f')}  max {s.max}")
        if self.prefix_reuse_ratio is not None:
            lines.append(f"  prefix reuse: {self.prefix_reuse_ratio:.1%} of blocks, "
                         f"{self.prefix_reuse_tokens:.1%} of prompt tokens")
        if len(self.tenants) > 1:
            lines.append("  tenants: " + ", ".join(f"{k} {v}" for k, v in self.tenants.items()))
        if len(self.priorities) > 1:
            lines.append("  priorities: " + ", ".join(f"{k}: {v}"
                                                      for k, v in self.priorities.items()))
        for key, value in self.meta.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def ideal_prefix_reuse(prefix_hashes: Sequence[tuple[int, ...]], prompt_tokens: Sequence[int],
                       block_size: int) -> tuple[float, float]:
    """(block, token) hit ratios of an unbounded prefix cache over requests in order."""
    seen: set[int] = set()
    blocks = hits = tokens = hit_tokens = 0
    for hashes, prompt in zip(prefix_hashes, prompt_tokens, strict=True):
        k = 0  # chained hashes: a seen block implies its whole prefix was seen
        while k < len(hashes) and hashes[k] in seen:
            k += 1
        blocks += len(hashes)
        hits += k
        tokens += int(prompt)
        hit_tokens += min(int(prompt), k * block_size)
        seen.update(hashes[k:])
    return (hits / blocks if blocks else 0.0), (hit_tokens / tokens if tokens else 0.0)


def prefix_reuse(trace: Trace) -> tuple[float, float] | None:
    """:func:`ideal_prefix_reuse` of a trace, or None without prefix hashes."""
    if trace.prefix_hashes is None or trace.block_size is None:
        return None
    return ideal_prefix_reuse(trace.prefix_hashes, trace.prompt_tokens.tolist(),
                              trace.block_size)


def _counts(values: np.ndarray | None) -> dict:
    if values is None:
        return {}
    keys, counts = np.unique(values, return_counts=True)
    return {k.item() if hasattr(k, "item") else k: int(c)
            for k, c in zip(keys, counts, strict=True)}


def describe(trace: Trace, *, bin_s: float = 60.0) -> TraceStats:
    """Statistics of a trace (see the module docstring)."""
    if not bin_s > 0:
        raise ValueError(f"bin_s={bin_s!r}: must be > 0")
    a = trace.arrival_s
    n = len(trace)
    duration = rate = cv = peak = None
    if n >= 2:
        duration = float(a[-1] - a[0])
        rate = (n - 1) / duration if duration > 0 else None
        gaps = np.diff(a)
        mean = gaps.mean()
        cv = float(gaps.std() / mean) if mean > 0 else None
        bins = np.floor((a - a[0]) / bin_s).astype(np.int64)
        peak = float(np.bincount(bins).max() / bin_s)
    reuse = prefix_reuse(trace)
    return TraceStats(
        name=trace.name, requests=n, duration_s=duration, rate_per_s=rate, burstiness_cv=cv,
        peak_rate_per_s=peak, prompt_tokens=LengthStats.of(trace.prompt_tokens),
        output_tokens=LengthStats.of(trace.output_tokens),
        prefix_reuse_ratio=None if reuse is None else reuse[0],
        prefix_reuse_tokens=None if reuse is None else reuse[1],
        tenants=_counts(trace.tenant), priorities=_counts(trace.priority),
        meta=dict(trace.meta))


def describe_lengths(name: str, prompt: np.ndarray, output: np.ndarray,
                     meta: Mapping[str, Any] | None = None) -> TraceStats:
    """Statistics of a length-only table (no arrivals: rate fields are None)."""
    return TraceStats(name=name, requests=len(prompt), duration_s=None, rate_per_s=None,
                      burstiness_cv=None, peak_rate_per_s=None,
                      prompt_tokens=LengthStats.of(np.asarray(prompt)),
                      output_tokens=LengthStats.of(np.asarray(output)),
                      prefix_reuse_ratio=None, prefix_reuse_tokens=None, tenants={},
                      priorities={}, meta=dict(meta or {}))
