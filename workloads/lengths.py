"""Token-length distributions and (prompt, output) length models, all seeded and vectorised.

A distribution's ``sample(n, rng)`` returns an int64 array of ``n`` token counts (``rng``: an
int seed or a numpy Generator):

- :class:`Fixed` ``(tokens)``: always ``tokens``.
- :class:`Uniform` ``(lo, hi)``: integers uniform on ``[lo, hi]`` (both inclusive).
- :class:`LogNormal` ``(median, sigma, max)``: ``clip(rint(exp(N(ln median, sigma**2))), 1,
  max)``; ``sigma`` is the standard deviation of ``ln(tokens)`` (mean ``median *
  exp(sigma**2 / 2)`` before clipping).
- :class:`Pmf` ``(values, probs)``: a discrete distribution (ServeGen's released length
  PMFs, arXiv:2505.09999); ``probs`` must sum to 1 within 1e-3 and are renormalised.
  Values may be 0 (e.g. ServeGen's ``image_count``).
- :class:`Empirical`: rows drawn uniformly with replacement from observed values. Built from
  (prompt, output) pairs (:meth:`Empirical.from_pairs`, :meth:`Empirical.from_trace` for a
  Trace or a length table) it samples whole rows, so the prompt/output correlation is kept.

:class:`LengthModel` pairs a prompt and an output distribution (independent draws: prompt
first, then output) or holds one joint :class:`Empirical`; its ``sample(n, rng)`` returns
``(prompt_tokens, output_tokens)``, both clamped to >= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from workloads._params import Seed, as_rng, check_count, check_number

__all__ = ["DEFAULT_LENGTHS", "Empirical", "Fixed", "LengthDist", "LengthModel", "LogNormal",
           "Pmf", "Uniform"]


@runtime_checkable
class LengthDist(Protocol):
    def sample(self, n: int, rng: Seed) -> np.ndarray:
        """``n`` token counts as int64."""


def _int_array(name: str, values: ArrayLike, minimum: int) -> np.ndarray:
    a = np.asarray(values)
    if a.size == 0:
        raise ValueError(f"{name}: at least one value is required")
    if a.dtype.kind not in "iuf" or not np.isfinite(a).all() or (a != np.rint(a)).any():
        raise ValueError(f"{name}: values must be finite integers, got {a.ravel()[:5]}...")
    if (a < minimum).any():
        i = int(np.argmax(a.ravel() < minimum))
        raise ValueError(f"{name}[{i}]={a.ravel()[i].item()!r}: must be >= {minimum}")
    out = a.astype(np.int64)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, slots=True)
class Fixed:
    tokens: int

    def __post_init__(self) -> None:
        check_count("tokens", self.tokens, minimum=1)

    def sample(self, n: int, rng: Seed) -> np.ndarray:
        return np.full(check_count("n", n), self.tokens, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Uniform:
    lo: int
    hi: int

    def __post_init__(self) -> None:
        check_count("lo", self.lo, minimum=1)
        check_count("hi", self.hi, minimum=self.lo)

    def sample(self, n: int, rng: Seed) -> np.ndarray:
        return as_rng(rng).integers(self.lo, self.hi + 1, check_count("n", n), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class LogNormal:
    median: float
    sigma: float
    max: int | None = None

    def __post_init__(self) -> None:
        check_number("median", self.median)
        check_number("sigma", self.sigma, strict=False)
        if self.max is not None:
            check_count("max", self.max, minimum=1)

    def sample(self, n: int, rng: Seed) -> np.ndarray:
        x = as_rng(rng).lognormal(math.log(self.median), self.sigma, check_count("n", n))
        hi = self.max if self.max is not None else np.iinfo(np.int64).max // 2
        return np.clip(np.rint(x), 1, hi).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Pmf:
    """``P(tokens = values[i]) = probs[i]``; sampled by inverse CDF (one uniform per draw)."""

    values: np.ndarray
    probs: np.ndarray

    def __post_init__(self) -> None:
        v = _int_array("values", self.values, 0)
        p = np.asarray(self.probs, dtype=np.float64)
        if v.ndim != 1 or p.shape != v.shape:
            raise ValueError(f"values (shape {v.shape}) and probs (shape {p.shape}) must be "
                             "one-dimensional and of the same length")
        if not np.isfinite(p).all() or (p < 0).any():
            i = int(np.argmax(~np.isfinite(p) | (p < 0)))
            raise ValueError(f"probs[{i}]={float(p[i])!r}: must be finite and >= 0")
        total = float(p.sum())
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"probs: sum to {total!r}, must be 1 (within 1e-3)")
        p = p / total
        cdf = np.cumsum(p)
        for a in (p, cdf):
            a.flags.writeable = False
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "probs", p)
        object.__setattr__(self, "_cdf", cdf)

    def mean(self) -> float:
        return float(np.dot(self.values, self.probs))

    def sample(self, n: int, rng: Seed) -> np.ndarray:
        u = as_rng(rng).random(check_count("n", n)) * self._cdf[-1]
        i = np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self.values) - 1)
        return self.values[i]


@dataclass(frozen=True, eq=False)
class Empirical:
    """Observed values: shape ``(m,)`` for one length, ``(m, 2)`` for (prompt, output) pairs.

    ``sample`` draws ``n`` rows uniformly with replacement: shape ``(n,)`` or ``(n, 2)``.
    """

    values: np.ndarray

    def __post_init__(self) -> None:
        v = _int_array("values", self.values, 1)
        if not (v.ndim == 1 or (v.ndim == 2 and v.shape[1] == 2)):
            raise ValueError(f"values: shape {v.shape} must be (m,) or (m, 2) pairs")
        object.__setattr__(self, "values", v)

    @property
    def joint(self) -> bool:
        return self.values.ndim == 2

    @classmethod
    def from_pairs(cls, prompt: ArrayLike, output: ArrayLike) -> Empirical:
        p, o = np.asarray(prompt), np.asarray(output)
        if p.ndim != 1 or p.shape != o.shape:
            raise ValueError(f"prompt (shape {p.shape}) and output (shape {o.shape}) must be "
                             "one-dimensional and of the same length")
        return cls(np.column_stack([p, o]))

    @classmethod
    def from_trace(cls, trace: Any) -> Empirical:
        """Pairs from anything with ``prompt_tokens`` / ``output_tokens`` arrays."""
        return cls.from_pairs(trace.prompt_tokens, trace.output_tokens)

    def sample(self, n: int, rng: Seed) -> np.ndarray:
        idx = as_rng(rng).integers(0, len(self.values), check_count("n", n))
        return self.values[idx]


@dataclass(frozen=True)
class LengthModel:
    """Independent ``prompt`` and ``output`` distributions, or one ``joint`` Empirical."""

    prompt: LengthDist | None = None
    output: LengthDist | None = None
    joint: Empirical | None = None

    def __post_init__(self) -> None:
        if self.joint is not None:
            if self.prompt is not None or self.output is not None:
                raise ValueError("LengthModel: give prompt and output, or joint, not both")
            if not isinstance(self.joint, Empirical) or not self.joint.joint:
                raise ValueError(f"joint={self.joint!r}: must be an Empirical of pairs")
            return
        for name in ("prompt", "output"):
            d = getattr(self, name)
            if not callable(getattr(d, "sample", None)):
                raise ValueError(f"{name}={d!r}: must be a length distribution with sample()")

    @classmethod
    def from_trace(cls, trace: Any) -> LengthModel:
        """Joint (prompt, output) pairs of a Trace or length table."""
        return cls(joint=Empirical.from_trace(trace))

    def sample(self, n: int, rng: Seed) -> tuple[np.ndarray, np.ndarray]:
        """``(prompt_tokens, output_tokens)``, int64, each >= 1."""
        rng = as_rng(rng)
        if self.joint is not None:
            rows = self.joint.sample(n, rng)
            return rows[:, 0].copy(), rows[:, 1].copy()
        prompt = np.asarray(self.prompt.sample(n, rng), dtype=np.int64)
        output = np.asarray(self.output.sample(n, rng), dtype=np.int64)
        return np.maximum(prompt, 1), np.maximum(output, 1)


#: The lengths of the built-in synthetic workload (``workloads.synthetic.poisson_mix``).
DEFAULT_LENGTHS = LengthModel(LogNormal(512, 0.8, 4096), LogNormal(128, 0.7, 1024))
