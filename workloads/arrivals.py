"""Arrival processes: sorted float64 numpy arrays of arrival times in seconds.

Renewal processes (i.i.d. inter-arrival gaps; the first arrival comes one gap after
``start_s``), each with mean gap ``1 / rate_per_s``:

- :func:`poisson`: exponential gaps (coefficient of variation CV = 1).
- :func:`gamma`: Gamma(shape ``k = 1 / cv**2``, scale ``theta = 1 / (rate * k)``) gaps:
  mean ``k * theta = 1 / rate``, CV ``1 / sqrt(k) = cv``. ``cv = 1`` draws the exact same
  numbers as :func:`poisson` (same seed), ``cv > 1`` is burstier, ``cv < 1`` more regular.
- :func:`weibull`: Weibull(shape ``c``, scale ``lam = 1 / (rate * G(1 + 1/c))``) gaps, ``G``
  the gamma function: mean ``1 / rate``, CV ``sqrt(G(1 + 2/c) / G(1 + 1/c)**2 - 1)``
  (``c = 1`` is Poisson, ``c < 1`` bursty). Gamma and Weibull are the fits ServeGen reports
  for production inter-arrival times (Xiang et al., arXiv:2505.09999).

Give exactly one of ``n`` (that many arrivals) or ``duration_s`` (all arrivals in
``[start_s, start_s + duration_s)``).

Time-varying rates (classes in :mod:`workloads.rate_curves`, re-exported here): a
:class:`RateCurve` gives ``rate(t)`` (req/s), its integral ``cumulative(t) = Lambda(t)`` (the
expected number of arrivals in ``[0, t]``) and ``inverse(y) = Lambda^-1(y)``.
:func:`from_rate_curve` uses time rescaling: with ``u_1 < u_2 < ...`` a unit-rate renewal
process, ``t_i = Lambda^-1(u_i)`` has intensity ``rate(t)``. For Poisson (``cv = 1``) this is
exactly an inhomogeneous Poisson process (the time-rescaling theorem, Brown et al., Neural
Computation 14(2), 2002); for Gamma gaps it is a modulated renewal process whose local CV is
``cv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workloads._params import Seed, as_rng, check_count, check_number
from workloads.rate_curves import (
    Diurnal,
    PiecewiseLinear,
    RateCurve,
    Step,
    constant,
    diurnal,
    piecewise,
    spike,
    step,
)

__all__ = ["Diurnal", "PiecewiseLinear", "RateCurve", "Step", "constant", "diurnal",
           "from_rate_curve", "gamma", "piecewise", "poisson", "spike", "step", "weibull"]

_MAX_CHUNK = 1 << 20


def _renewal(draw: Callable[[int], np.ndarray], mean_gap: float, n: int | None,
             duration_s: float | None, start_s: float) -> np.ndarray:
    """Arrivals ``start_s + cumsum(gaps)``: ``n`` of them, or all before the duration."""
    if (n is None) == (duration_s is None):
        raise ValueError(f"n={n!r}, duration_s={duration_s!r}: give exactly one of them")
    start_s = check_number("start_s", start_s, strict=False)
    if n is not None:
        n = check_count("n", n)
        return start_s + np.cumsum(draw(n))
    duration_s = check_number("duration_s", duration_s)
    expected = duration_s / mean_gap
    chunk = int(min(_MAX_CHUNK, expected * 1.05 + 10.0 * math.sqrt(expected) + 16))
    parts: list[np.ndarray] = []
    t = 0.0
    while t < duration_s:  # deterministic chunk sizes: same seed, same arrivals
        c = np.cumsum(np.concatenate([[t], draw(chunk)]))[1:]  # == one long cumsum
        parts.append(c)
        t = float(c[-1])
    times = np.concatenate(parts)
    return start_s + times[:np.searchsorted(times, duration_s, side="left")]


def poisson(rate_per_s: float, n: int | None = None, duration_s: float | None = None, *,
            seed: Seed = 0, start_s: float = 0.0) -> np.ndarray:
    """Poisson arrivals: exponential gaps with mean ``1 / rate_per_s`` seconds."""
    rate = check_number("rate_per_s", rate_per_s)
    rng = as_rng(seed)
    return _renewal(lambda k: rng.exponential(1.0 / rate, k), 1.0 / rate, n, duration_s,
                    start_s)


def gamma(rate_per_s: float, cv: float, n: int | None = None, duration_s: float | None = None,
          *, seed: Seed = 0, start_s: float = 0.0) -> np.ndarray:
    """Gamma renewal arrivals: gaps with mean ``1 / rate_per_s`` and CV ``cv``.

    shape ``k = 1 / cv**2``, scale ``1 / (rate_per_s * k)``; ``cv == 1`` equals :func:`poisson`.
    """
    rate = check_number("rate_per_s", rate_per_s)
    cv = check_number("cv", cv)
    if cv == 1.0:
        return poisson(rate, n, duration_s, seed=seed, start_s=start_s)
    rng = as_rng(seed)
    k = 1.0 / (cv * cv)
    theta = 1.0 / (rate * k)
    return _renewal(lambda m: rng.gamma(k, theta, m), 1.0 / rate, n, duration_s, start_s)


def weibull(rate_per_s: float, shape: float, n: int | None = None,
            duration_s: float | None = None, *, seed: Seed = 0,
            start_s: float = 0.0) -> np.ndarray:
    """Weibull renewal arrivals: shape ``c``, scale ``1 / (rate_per_s * G(1 + 1/c))``."""
    rate = check_number("rate_per_s", rate_per_s)
    c = check_number("shape", shape)
    lam = 1.0 / (rate * math.gamma(1.0 + 1.0 / c))
    if not math.isfinite(lam) or lam == 0.0:
        raise ValueError(f"shape={shape!r}: too small (the Weibull scale overflows)")
    rng = as_rng(seed)
    return _renewal(lambda m: lam * rng.weibull(c, m), 1.0 / rate, n, duration_s, start_s)


def from_rate_curve(curve: RateCurve, duration_s: float, seed: Seed = 0, cv: float = 1.0, *,
                    start_s: float = 0.0) -> np.ndarray:
    """Arrivals following ``curve`` over curve time ``[start_s, start_s + duration_s)``.

    Returned times are relative to ``start_s`` (in ``[0, duration_s)``). ``t_i =
    Lambda^-1(Lambda(start_s) + u_i) - start_s`` for the arrivals ``u_i`` of a unit-rate
    renewal process (Poisson for ``cv == 1``, else Gamma with that CV) on
    ``[0, Lambda(start_s + duration_s) - Lambda(start_s))``.
    """
    for method in ("cumulative", "inverse"):
        if not callable(getattr(curve, method, None)):
            raise ValueError(f"curve={curve!r}: not a RateCurve (no {method}() method)")
    duration_s = check_number("duration_s", duration_s)
    start_s = check_number("start_s", start_s, strict=False)
    cv = check_number("cv", cv)
    lo, hi = (float(v) for v in curve.cumulative(np.array([start_s, start_s + duration_s])))
    total = hi - lo
    if not total > 0:
        return np.empty(0, dtype=np.float64)
    u = gamma(1.0, cv, duration_s=total, seed=seed)
    t = np.asarray(curve.inverse(lo + u), dtype=np.float64) - start_s
    t = np.maximum.accumulate(np.maximum(t, 0.0))  # guard rounding: sorted and >= 0
    return t[t < duration_s]
