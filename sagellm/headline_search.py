"""The threshold search of :mod:`sagellm.headline`: where attainment crosses a target.

Pure: :func:`search` takes an ``evaluate`` callable that runs (key, load) points and returns
their attainments, so it is tested without simulations. Loads are rounded to
``DIGITS`` decimals (they name run files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["DIGITS", "Evaluate", "Threshold", "bracket", "interior", "search"]

Evaluate = Callable[[list[tuple[str, float]]], Mapping[tuple[str, float], float]]
DIGITS = 4


@dataclass(frozen=True, slots=True)
class Threshold:
    """Where a pair's attainment crosses ``target``: ``passed`` is the highest load that
    meets it below the first failing load ``failed`` (None: no load passed / none failed,
    up to the search's limits); ``points`` are every (load, attainment) evaluated."""

    target: float
    passed: float | None
    failed: float | None
    points: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float | None:
        """The bracket's width (load units), None when one side is open."""
        if self.passed is None or self.failed is None:
            return None
        return self.failed - self.passed


def bracket(points: Mapping[float, float], target: float) -> tuple[float | None, float | None]:
    """(highest load meeting ``target`` below the first failing load, first failing load);
    a NaN attainment fails."""
    passed = None
    for load in sorted(points):
        a = points[load]
        if not a >= target:
            return passed, load
        passed = load
    return passed, None


def interior(lo: float, hi: float, k: int) -> list[float]:
    """``k`` loads evenly inside (lo, hi), rounded, without the ends or duplicates."""
    if k < 1 or not hi > lo:
        raise ValueError(f"interior({lo}, {hi}, {k}): need hi > lo and k >= 1")
    step = (hi - lo) / (k + 1)
    out = []
    for i in range(1, k + 1):
        x = round(lo + i * step, DIGITS)
        if lo < x < hi and x not in out:
            out.append(x)
    return out


def search(evaluate: Evaluate, keys: Sequence[str], target: float, grid: Sequence[float], *,
           rounds: int, per_round: int = 1, min_load: float, max_load: float,
           grow: float = 1.5) -> dict[str, Threshold]:
    """Bracket and refine, for every key together, the load where attainment crosses
    ``target`` (see the module doc). ``evaluate`` gets the (key, load) points to run and
    returns their attainments (it may cache; points already known are not asked again).
    Each round asks for all keys' new points at once, so they can run in parallel."""
    if not 0 < min_load <= max_load or grow <= 1:
        raise ValueError("search: need 0 < min_load <= max_load and grow > 1")
    pts: dict[str, dict[float, float]] = {k: {} for k in keys}

    def run(wanted: Iterable[tuple[str, float]]) -> None:
        todo = list(dict.fromkeys((k, x) for k, x in wanted if x not in pts[k]))
        if todo:
            got = evaluate(todo)
            for k, x in todo:
                pts[k][x] = float(got[(k, x)])

    run((k, round(float(x), DIGITS)) for k in keys for x in grid)
    while True:  # open brackets: extend down (first load fails) or up (none fails)
        more = []
        for k in keys:
            passed, failed = bracket(pts[k], target)
            loads = sorted(pts[k])
            if passed is None and loads[0] > min_load:
                more.append((k, max(min_load, round(loads[0] / 2, DIGITS))))
            elif failed is None and loads[-1] < max_load:
                more.append((k, min(max_load, round(loads[-1] * grow, DIGITS))))
        if not more:
            break
        run(more)
    for _ in range(rounds):
        more = []
        for k in keys:
            passed, failed = bracket(pts[k], target)
            if passed is not None and failed is not None and failed - passed > 10 ** -DIGITS:
                more += [(k, x) for x in interior(passed, failed, per_round)]
        if not more:
            break
        run(more)
    return {k: Threshold(target, *bracket(pts[k], target), tuple(sorted(pts[k].items())))
            for k in keys}
