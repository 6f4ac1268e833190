"""Rank estimates by an objective and say why each configuration won or lost.

Objectives:

- ``"goodput"`` (default): output tokens/s per GPU of the budget at the SLO, higher wins;
- ``"cost"``: USD per million output tokens at the SLO, lower wins.

Order: feasible configurations by the objective, ties broken by fewer GPUs per replica,
then smaller TP, PP, EP (fewer and cheaper collectives); then infeasible ones in enumeration
order. Reasons: ``"winner"``; ``"goodput/GPU 12% below the winner"`` or ``"cost/Mtok 30%
above the winner"`` (or ``"ties the winner ..."`` within 0.5 %); an infeasible one keeps its
memory or SLO reason prefixed with ``"infeasible: "``.
"""

from __future__ import annotations

from control_plane.errors import ConfigError
from control_plane.parallelism.estimate import Estimate

__all__ = ["OBJECTIVES", "objective_value", "rank", "reasons"]

OBJECTIVES = ("goodput", "cost")
_TIE = 0.005


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}: known objectives are "
                          f"{', '.join(OBJECTIVES)}")
    return objective


def objective_value(goodput_per_gpu: float, usd_per_m_tokens: float, objective: str) -> float:
    """A score where higher is better: goodput/GPU, or minus the cost."""
    return goodput_per_gpu if check_objective(objective) == "goodput" else -usd_per_m_tokens


def _tiebreak(e: Estimate) -> tuple[int, int, int, int]:
    p = e.parallel
    return (p.tp * p.pp, p.tp, p.pp, p.ep)


def rank(estimates: list[Estimate], objective: str = "goodput") -> list[Estimate]:
    """Feasible first, best first; then the infeasible, in the given order."""
    check_objective(objective)
    ok = [e for e in estimates if e.feasible]
    ok.sort(key=lambda e: (-objective_value(e.goodput_per_gpu, e.usd_per_m_tokens, objective),
                           _tiebreak(e)))
    return ok + [e for e in estimates if not e.feasible]


def compare(value: float, best: float, objective: str, against: str = "the winner") -> str:
    """Why a config with objective figure ``value`` lost to ``against`` with ``best``."""
    if objective == "goodput":
        gap, name, worse = (1.0 - value / best if best > 0 else 0.0), "goodput/GPU", "below"
    else:
        gap, name, worse = (value / best - 1.0 if best > 0 else 0.0), "cost/Mtok", "above"
    if abs(gap) <= _TIE:
        return f"ties {against} on {name}; ranked after it (smaller replicas first on ties)"
    if gap < 0:
        better = "above" if worse == "below" else "below"
        return f"{name} {-gap:.0%} {better} {against}"
    return f"{name} {gap:.0%} {worse} {against}"


def reasons(ranked: list[Estimate], objective: str = "goodput") -> list[str]:
    """One reason per estimate of ``rank``'s output (analytic figures)."""
    out = []
    best = ranked[0] if ranked and ranked[0].feasible else None
    for i, e in enumerate(ranked):
        if not e.feasible:
            out.append(f"infeasible: {e.reason}")
        elif i == 0:
            out.append("winner")
        else:
            v, b = ((e.goodput_per_gpu, best.goodput_per_gpu) if objective == "goodput"
                    else (e.usd_per_m_tokens, best.usd_per_m_tokens))
            out.append(compare(v, b, objective))
    return out
