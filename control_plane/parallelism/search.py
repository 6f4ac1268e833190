"""Highest request rate whose SLO attainment meets a target: bracket, then bisect.

``attainment(rate_per_s) -> [0, 1]`` is assumed non-increasing in the rate (e.g. a
simulator run at that Poisson rate). Starting from the analytic estimate ``r0``:

1. evaluate ``r0``; if it passes (attainment >= target) double the rate until one fails
   (at most ``max_expand`` times; if all pass, the last passing rate is returned and
   ``bracketed`` is False); if it fails, halve it until one passes (at most ``max_shrink``
   times; if none passes, the rate is 0);
2. bisect the bracket ``[lo passes, hi fails]`` at its midpoint until ``(hi - lo) / hi <=
   rel_tol`` or ``max_evals`` evaluations are spent.

Deterministic: the same function and arguments give the same evaluations. With a threshold
inside ``[r0 / 2, r0]`` the default 10 evaluations locate it to ``r0 / 2**9``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from control_plane.errors import ValidationError

__all__ = ["RateSearch", "search_rate"]


@dataclass(frozen=True, slots=True)
class RateSearch:
    """``rate_per_s``: highest rate seen passing (0 if none); ``attainment`` there;
    ``bracketed``: both a passing and a failing rate were seen; ``evaluations``: (rate, attainment)
    in the order evaluated."""

    rate_per_s: float
    attainment: float
    bracketed: bool
    evaluations: tuple[tuple[float, float], ...]

    @property
    def upper_per_s(self) -> float:
        """Lowest failing rate seen (inf if none): the threshold lies in [rate, upper)."""
        fails = [r for r, a in self.evaluations if r > self.rate_per_s]
        return min(fails) if fails else float("inf")


def search_rate(attainment: Callable[[float], float], start_per_s: float,
                target: float = 0.99, *, max_evals: int = 10, rel_tol: float = 0.01,
                max_expand: int = 3, max_shrink: int = 5) -> RateSearch:
    """Search the highest rate with ``attainment(rate) >= target`` (see the module doc)."""
    if not start_per_s > 0:
        raise ValidationError("search_rate", "start_per_s", start_per_s, "must be > 0")
    if not 0 < target <= 1:
        raise ValidationError("search_rate", "target", target, "must be in (0, 1]")
    if max_evals < 2:
        raise ValidationError("search_rate", "max_evals", max_evals, "must be >= 2")
    evals: list[tuple[float, float]] = []

    def passes(rate: float) -> bool:
        a = float(attainment(rate))
        evals.append((rate, a))
        return a >= target

    lo, hi = 0.0, float("inf")
    if passes(start_per_s):
        lo = rate = start_per_s
        for _ in range(max_expand):
            if len(evals) >= max_evals:
                break
            rate *= 2.0
            if passes(rate):
                lo = rate
            else:
                hi = rate
                break
    else:
        hi = rate = start_per_s
        for _ in range(max_shrink):
            if len(evals) >= max_evals:
                break
            rate /= 2.0
            if passes(rate):
                lo = rate
                break
            hi = rate
    if lo > 0 and hi < float("inf"):
        while len(evals) < max_evals and (hi - lo) / hi > rel_tol:
            mid = (lo + hi) / 2.0
            if passes(mid):
                lo = mid
            else:
                hi = mid
    at = next((a for r, a in evals if r == lo), 0.0) if lo > 0 else 0.0
    return RateSearch(lo, at, lo > 0 and hi < float("inf"), tuple(evals))
