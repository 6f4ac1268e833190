"""What the planner plans for: request-length statistics and percentile SLO targets.

:class:`WorkloadStats` summarises prompt and output lengths (tokens) by the moments the
analytic model needs and a quantile function:

- ``prompt_mean``, ``output_mean``: E[P], E[O] (tokens);
- ``prompt_sq_mean``: E[P^2] (tokens^2), the mean attention work of a prefill;
- ``prompt_quantiles`` / ``output_quantiles``: ``(q, tokens)`` pairs, q in [0, 1]
  ascending, read by linear interpolation (:meth:`WorkloadStats.prompt_at`);
- ``max_total_tokens``: the longest request (prompt + output), which one replica's KV cache
  must hold (vLLM refuses to start when ``max_model_len`` tokens do not fit).

Built from samples (:meth:`from_samples`, e.g. a trace's ``prompt_tokens`` /
``output_tokens`` arrays), from percentiles (:meth:`from_percentiles`: the mean is the
integral of the piecewise-linear quantile function) or from fixed lengths (:meth:`fixed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from control_plane.errors import ConfigError, ValidationError

__all__ = ["DEFAULT_OUTPUT_TOKENS", "DEFAULT_PROMPT_TOKENS", "SLOTarget", "WorkloadStats",
           "format_s"]

DEFAULT_PROMPT_TOKENS = 1024
DEFAULT_OUTPUT_TOKENS = 256
_QS = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)


def _interp(pairs: tuple[tuple[float, float], ...], q: float) -> float:
    qs = [p[0] for p in pairs]
    vs = [p[1] for p in pairs]
    return float(np.interp(q, qs, vs))


def _check_pairs(name: str, pairs: Sequence[tuple[float, float]]) -> tuple:
    out = tuple((float(q), float(v)) for q, v in pairs)
    if not out:
        raise ValidationError("WorkloadStats", name, pairs, "needs at least one (q, tokens)")
    for i, (q, v) in enumerate(out):
        if not 0.0 <= q <= 1.0 or not v >= 1:
            raise ValidationError("WorkloadStats", name, pairs,
                                  "quantiles must be in [0, 1] with tokens >= 1")
        if i and (q <= out[i - 1][0] or v < out[i - 1][1]):
            raise ValidationError("WorkloadStats", name, pairs,
                                  "quantiles and tokens must be ascending")
    return out


@dataclass(frozen=True, slots=True)
class WorkloadStats:
    """Length statistics of a workload (tokens). ``source`` says where they came from."""

    prompt_mean: float
    output_mean: float
    prompt_sq_mean: float
    prompt_quantiles: tuple[tuple[float, float], ...]
    output_quantiles: tuple[tuple[float, float], ...]
    max_total_tokens: int
    source: str = "given"

    def __post_init__(self) -> None:
        for f in ("prompt_mean", "output_mean"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 1:
                raise ValidationError("WorkloadStats", f, v, "must be a number >= 1")
        if not self.prompt_sq_mean >= self.prompt_mean ** 2 * (1 - 1e-9):
            raise ValidationError("WorkloadStats", "prompt_sq_mean", self.prompt_sq_mean,
                                  f"must be >= prompt_mean^2 = {self.prompt_mean ** 2:g}")
        object.__setattr__(self, "prompt_quantiles",
                           _check_pairs("prompt_quantiles", self.prompt_quantiles))
        object.__setattr__(self, "output_quantiles",
                           _check_pairs("output_quantiles", self.output_quantiles))
        if isinstance(self.max_total_tokens, bool) or int(self.max_total_tokens) < 2:
            raise ValidationError("WorkloadStats", "max_total_tokens", self.max_total_tokens,
                                  "must be an integer >= 2")
        object.__setattr__(self, "max_total_tokens", int(self.max_total_tokens))

    def prompt_at(self, q: float) -> float:
        """Prompt tokens at quantile ``q`` in [0, 1] (linear interpolation)."""
        return _interp(self.prompt_quantiles, q)

    def output_at(self, q: float) -> float:
        return _interp(self.output_quantiles, q)

    @property
    def mean_context_tokens(self) -> float:
        """Mean KV tokens a running sequence holds: E[P] + E[O] / 2 (outputs half done)."""
        return self.prompt_mean + self.output_mean / 2

    def describe(self) -> str:
        return (f"{self.source}: prompt mean {self.prompt_mean:.0f} / p90 "
                f"{self.prompt_at(0.9):.0f} tokens, output mean {self.output_mean:.0f} / p90 "
                f"{self.output_at(0.9):.0f} tokens, longest {self.max_total_tokens}")

    @classmethod
    def fixed(cls, prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
              output_tokens: int = DEFAULT_OUTPUT_TOKENS, source: str | None = None
              ) -> WorkloadStats:
        """Every request has ``prompt_tokens`` and ``output_tokens``."""
        p, o = int(prompt_tokens), int(output_tokens)
        return cls(p, o, float(p) ** 2, ((0.0, p), (1.0, p)), ((0.0, o), (1.0, o)), p + o,
                   source or f"fixed lengths {p}/{o}")

    @classmethod
    def from_samples(cls, prompt_tokens: Sequence[int] | np.ndarray,
                     output_tokens: Sequence[int] | np.ndarray, source: str = "samples"
                     ) -> WorkloadStats:
        """From per-request lengths (equal-length arrays of integers >= 1)."""
        p = np.asarray(prompt_tokens, dtype=np.float64)
        o = np.asarray(output_tokens, dtype=np.float64)
        if p.ndim != 1 or p.shape != o.shape or not len(p):
            raise ConfigError(f"{source}: need equal, non-empty prompt and output length arrays "
                              f"(got {p.shape} and {o.shape})")
        if p.min() < 1 or o.min() < 1:
            raise ConfigError(f"{source}: token lengths must be >= 1")
        pq = tuple((q, float(np.quantile(p, q))) for q in _QS)
        oq = tuple((q, float(np.quantile(o, q))) for q in _QS)
        return cls(float(p.mean()), float(o.mean()), float((p * p).mean()), pq, oq,
                   int((p + o).max()), f"{source} ({len(p)} requests)")

    @classmethod
    def of(cls, data: object, source: str | None = None) -> WorkloadStats:
        """``data`` itself if a WorkloadStats, else anything with ``prompt_tokens`` and
        ``output_tokens`` arrays (a trace, a length table) via :meth:`from_samples`."""
        if isinstance(data, WorkloadStats):
            return data
        try:
            prompt, output = data.prompt_tokens, data.output_tokens  # type: ignore[attr-defined]
        except AttributeError:
            raise ConfigError(f"workload {type(data).__name__}: expected WorkloadStats or an "
                              "object with prompt_tokens and output_tokens arrays") from None
        return cls.from_samples(prompt, output, source or str(getattr(data, "name", "trace")))

    @classmethod
    def from_percentiles(cls, prompt: Mapping[float, float], output: Mapping[float, float],
                         source: str = "percentiles") -> WorkloadStats:
        """From ``{percentile: tokens}`` maps (percentiles 0-100, e.g. ``{50: 800, 99:
        4000}``). Missing ends are held flat; the mean and E[P^2] integrate the
        piecewise-linear quantile function on a 1,001-point grid."""
        def pairs(m: Mapping[float, float], name: str) -> tuple:
            if not m:
                raise ConfigError(f"{source}: no {name} percentiles given")
            items = sorted((float(k) / 100.0, float(v)) for k, v in m.items())
            return _check_pairs(f"{name}_quantiles", items)

        pp, op = pairs(prompt, "prompt"), pairs(output, "output")
        grid = np.linspace(0.0, 1.0, 1001)
        pv = np.interp(grid, [q for q, _ in pp], [v for _, v in pp])
        ov = np.interp(grid, [q for q, _ in op], [v for _, v in op])
        longest = round(pp[-1][1] + op[-1][1])
        return cls(float(pv.mean()), float(ov.mean()), float((pv * pv).mean()), pp, op,
                   longest, source)


@dataclass(frozen=True, slots=True)
class SLOTarget:
    """Percentile latency targets: the ``percentile``-th (0-100) TTFT and TPOT over
    requests must be at most ``ttft_s`` and ``tpot_s`` seconds (None: unconstrained)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    percentile: float = 99.0

    def __post_init__(self) -> None:
        for f in ("ttft_s", "tpot_s"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not v > 0):
                raise ValidationError("SLOTarget", f, v, "must be a number > 0 or None")
        if not 0 < self.percentile <= 100:
            raise ValidationError("SLOTarget", "percentile", self.percentile,
                                  "must be in (0, 100]")

    def describe(self) -> str:
        p = f"p{self.percentile:g}"
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT {p} <= {format_s(self.ttft_s)}")
        if self.tpot_s is not None:
            parts.append(f"TPOT {p} <= {format_s(self.tpot_s)}")
        return ", ".join(parts) or "no latency SLO"


def format_s(seconds: float) -> str:
    """``0.1`` -> ``"100 ms"``, ``2`` -> ``"2.00 s"``."""
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
