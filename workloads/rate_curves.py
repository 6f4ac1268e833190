"""Time-varying request rates ``rate(t)`` (req/s, ``t`` in seconds) for :mod:`workloads.arrivals`.

Every curve gives ``rate(t)``, the cumulative ``Lambda(t) = integral_0^t rate(s) ds``
(expected arrivals in ``[0, t]``) and its inverse, all vectorised over numpy arrays:

- :func:`step` / :func:`constant` / :func:`spike`: piecewise-constant (:class:`Step`);
  ``rates[i]`` holds on ``[times[i], times[i+1])``, the last rate forever, 0 before
  ``times[0]``. ``Lambda`` is piecewise linear, inverted exactly.
  ``step(window_start_s, total_rate_rps)`` of ``servegen_aggregate_rate.csv`` reproduces its
  10-minute means exactly (see :func:`workloads.servegen.aggregate_rate_curve`).
- :func:`piecewise`: piecewise-linear through the points ``(times[i], rates[i])``
  (:class:`PiecewiseLinear`), 0 before ``times[0]``, ``rates[-1]`` after ``times[-1]``.
  ``Lambda`` is piecewise quadratic, inverted in closed form:
  ``u = 2 d / (r + sqrt(r**2 + 2 s d))`` for ``d`` arrivals into a segment of start rate ``r``
  and slope ``s``.
- :func:`diurnal`: ``rate(t) = m * (1 + a * cos(2 pi (t - phase_s) / period_s))`` with
  ``a = (p - 1) / (p + 1)`` for a peak-to-trough ratio ``p`` (peak ``m (1 + a)`` at
  ``phase_s``, trough ``m (1 - a)``). ``Lambda(t) = m t + m a period_s / (2 pi) *
  (sin(w (t - phase_s)) + sin(w phase_s))``, ``w = 2 pi / period_s``; inverted by safeguarded
  Newton iteration (from a 1024-points-per-period grid) to ~1e-12 relative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from workloads._params import check_number

__all__ = ["Diurnal", "PiecewiseLinear", "RateCurve", "Step", "constant", "diurnal",
           "piecewise", "spike", "step"]


@runtime_checkable
class RateCurve(Protocol):
    def rate(self, t: ArrayLike) -> np.ndarray:
        """Rate (req/s) at times ``t`` (s)."""

    def cumulative(self, t: ArrayLike) -> np.ndarray:
        """``Lambda(t)``: integral of the rate over ``[0, t]`` (requests)."""

    def inverse(self, y: ArrayLike) -> np.ndarray:
        """Smallest ``t >= 0`` with ``Lambda(t) = y`` for ``0 <= y < Lambda(inf)``."""


def _knots(times: ArrayLike, rates: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64)
    r = np.asarray(rates, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0 or r.shape != t.shape:
        raise ValueError(f"times (shape {t.shape}) and rates (shape {r.shape}) must be "
                         "non-empty one-dimensional arrays of the same length")
    if not np.isfinite(t).all() or (t < 0).any() or (np.diff(t) <= 0).any():
        raise ValueError(f"times={t.tolist()[:8]}...: must be finite, >= 0 and strictly "
                         "increasing")
    if not np.isfinite(r).all() or (r < 0).any():
        i = int(np.argmax(~np.isfinite(r) | (r < 0)))
        raise ValueError(f"rates[{i}]={float(r[i])!r}: must be finite and >= 0")
    t.flags.writeable = False
    r.flags.writeable = False
    return t, r


@dataclass(frozen=True, eq=False)
class Step:
    """Piecewise-constant rate: ``rates[i]`` on ``[times[i], times[i+1])``."""

    times: np.ndarray
    rates: np.ndarray

    def __post_init__(self) -> None:
        t, r = _knots(self.times, self.rates)
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "rates", r)
        knots = np.concatenate([[0.0], np.cumsum(r[:-1] * np.diff(t))])
        knots.flags.writeable = False
        object.__setattr__(self, "_knots", knots)  # Lambda(times[i])

    def _segment(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.times, t, side="right") - 1

    def rate(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = self._segment(t)
        return np.where(i >= 0, self.rates[np.maximum(i, 0)], 0.0)

    def cumulative(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = np.maximum(self._segment(t), 0)
        lam = self._knots[i] + self.rates[i] * (t - self.times[i])
        return np.where(t >= self.times[0], lam, 0.0)

    def inverse(self, y: ArrayLike) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        i = np.maximum(np.searchsorted(self._knots, y, side="right") - 1, 0)
        r = self.rates[i]
        d = y - self._knots[i]
        step = np.divide(d, r, out=np.where(d > 0, np.inf, 0.0), where=r > 0)
        return self.times[i] + step


@dataclass(frozen=True, eq=False)
class PiecewiseLinear:
    """Rate interpolated linearly between ``(times[i], rates[i])``."""

    times: np.ndarray
    rates: np.ndarray

    def __post_init__(self) -> None:
        t, r = _knots(self.times, self.rates)
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "rates", r)
        dt = np.diff(t)
        slopes = np.append(np.diff(r) / dt, 0.0)  # flat after the last knot
        knots = np.concatenate([[0.0], np.cumsum((r[:-1] + r[1:]) / 2 * dt)])
        object.__setattr__(self, "_slopes", slopes)
        object.__setattr__(self, "_knots", knots)

    def rate(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return np.where(t >= self.times[0], np.interp(t, self.times, self.rates), 0.0)

    def cumulative(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = np.maximum(np.searchsorted(self.times, t, side="right") - 1, 0)
        u = np.maximum(t - self.times[i], 0.0)
        lam = self._knots[i] + self.rates[i] * u + self._slopes[i] * u * u / 2
        return np.where(t >= self.times[0], lam, 0.0)

    def inverse(self, y: ArrayLike) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        i = np.maximum(np.searchsorted(self._knots, y, side="right") - 1, 0)
        r, s = self.rates[i], self._slopes[i]
        d = np.maximum(y - self._knots[i], 0.0)
        den = r + np.sqrt(np.maximum(r * r + 2 * s * d, 0.0))
        u = np.divide(2 * d, den, out=np.where(d > 0, np.inf, 0.0), where=den > 0)
        if len(self.times) > 1:  # rounding must not leave a finite segment
            end = np.append(self.times[1:], np.inf)[i]
            u = np.minimum(u, end - self.times[i])
        return self.times[i] + u


@dataclass(frozen=True, eq=False)
class Diurnal:
    """Sinusoidal daily cycle around ``mean_rate`` (see the module docstring)."""

    mean_rate: float
    peak_to_trough: float
    period_s: float = 86400.0
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        check_number("mean_rate", self.mean_rate)
        check_number("peak_to_trough", self.peak_to_trough, minimum=1.0, strict=False)
        check_number("period_s", self.period_s)
        check_number("phase_s", self.phase_s, minimum=-math.inf)

    @property
    def amplitude(self) -> float:
        p = float(self.peak_to_trough)
        return (p - 1.0) / (p + 1.0)

    def rate(self, t: ArrayLike) -> np.ndarray:
        w = 2 * math.pi / self.period_s
        t = np.asarray(t, dtype=np.float64)
        return self.mean_rate * (1 + self.amplitude * np.cos(w * (t - self.phase_s)))

    def cumulative(self, t: ArrayLike) -> np.ndarray:
        w = 2 * math.pi / self.period_s
        t = np.asarray(t, dtype=np.float64)
        wave = np.sin(w * (t - self.phase_s)) + math.sin(w * self.phase_s)
        return self.mean_rate * (t + self.amplitude / w * wave)

    def inverse(self, y: ArrayLike) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if y.size == 0:
            return y.copy()
        # start from linear interpolation on a grid of 1024 points per period, bracketed by
        # the grid cell (Lambda is strictly increasing: rate >= m (1 - a) > 0) ...
        top = float(y.max()) / self.mean_rate + self.period_s
        grid = np.linspace(0.0, top, int(min(top / self.period_s * 1024, 1e6)) + 2)
        lam = self.cumulative(grid)
        i = np.clip(np.searchsorted(lam, y, side="right") - 1, 0, len(grid) - 2)
        lo, hi = grid[i], grid[i + 1]
        t = np.interp(y, lam, grid)
        for _ in range(50):  # ... then Newton, falling back to bisection outside the bracket
            f = self.cumulative(t) - y
            lo = np.where(f < 0, t, lo)
            hi = np.where(f > 0, t, hi)
            nxt = t - f / self.rate(t)
            nxt = np.where((nxt < lo) | (nxt > hi), (lo + hi) / 2, nxt)
            done = np.all(np.abs(nxt - t) <= 1e-12 * np.maximum(1.0, np.abs(t)))
            t = nxt
            if done:
                break
        return t


def constant(rate_per_s: float) -> Step:
    """The same rate forever."""
    return Step([0.0], [check_number("rate_per_s", rate_per_s, strict=False)])


def step(times: ArrayLike, rates: ArrayLike) -> Step:
    """Piecewise-constant rate, ``rates[i]`` from ``times[i]`` to ``times[i + 1]``."""
    return Step(times, rates)


def piecewise(times: ArrayLike, rates: ArrayLike) -> PiecewiseLinear:
    """Rate linear between the points ``(times[i], rates[i])``."""
    return PiecewiseLinear(times, rates)


def spike(base_rate: float, spike_rate: float, start_s: float, duration_s: float) -> Step:
    """``base_rate``, except ``spike_rate`` on ``[start_s, start_s + duration_s)``."""
    base = check_number("base_rate", base_rate, strict=False)
    peak = check_number("spike_rate", spike_rate, strict=False)
    start = check_number("start_s", start_s, strict=False)
    dur = check_number("duration_s", duration_s)
    if start == 0.0:
        return Step([0.0, dur], [peak, base])
    return Step([0.0, start, start + dur], [base, peak, base])


def diurnal(mean_rate: float, peak_to_trough: float, period_s: float = 86400.0,
            phase_s: float = 0.0) -> Diurnal:
    """Daily cycle: mean ``mean_rate``, busiest / quietest rate ``peak_to_trough``."""
    return Diurnal(mean_rate, peak_to_trough, period_s, phase_s)
