"""The numerics :mod:`sagellm.perf_fit` and :mod:`sagellm.perf_fit_measured` share: the
minimiser, the rounding of fitted values, and the error summary."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

__all__ = ["error_stats", "minimise", "round6"]


def minimise(f, x0):
    """Minimise ``f`` over log-parameters from ``x0`` with scipy's Nelder-Mead (deterministic),
    restarted once from its result with a smaller simplex: the restart escapes a collapsed
    simplex. Returns the parameters (not their logs)."""
    x = np.log(np.asarray(x0, float))
    for step in (0.3, 0.1):
        simplex = np.vstack([x, x + step * np.eye(len(x))])
        x = minimize(f, x, method="Nelder-Mead",
                     options={"initial_simplex": simplex, "maxiter": 3000,
                              "xatol": 1e-10, "fatol": 1e-12}).x
    return np.exp(x)


def round6(x: float) -> float:
    """``x`` to 6 significant digits (what the coefficients file keeps)."""
    return float(f"{float(x):.6g}")


def error_stats(rel: np.ndarray) -> dict:
    """``n``, ``median`` / ``p90`` / ``max`` of |rel| and ``bias`` (median of the signed
    rel) of relative errors ``predicted / measured - 1``."""
    a = np.abs(rel)
    return {"n": int(a.size), "median": round6(np.median(a)), "p90": round6(np.quantile(a, 0.9)),
            "max": round6(a.max()), "bias": round6(np.median(rel))}
