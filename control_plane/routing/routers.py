"""The built-in routers: named presets of the filter -> weighted scorers -> picker pipeline,
and ``pipeline``, which users compose from the part registries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from control_plane.errors import ConfigError
from control_plane.routing.affinity import SessionAffinityFilter
from control_plane.routing.base import PipelineRouter, Scorer
from control_plane.routing.locality import LocalityFilter
from control_plane.routing.pickers import (
    MaxScorePicker,
    PowerOfTwoPicker,
    RandomPicker,
    RoundRobinPicker,
    SmoothWeightedRoundRobinPicker,
)
from control_plane.routing.registries import FILTERS, PICKERS, SCORERS
from control_plane.routing.scorers import InflightScorer, InflightTokensScorer, ResponseTimeScorer

__all__ = [
    "least_connections",
    "least_loaded",
    "least_response_time",
    "locality",
    "pipeline",
    "power_of_two",
    "random_router",
    "round_robin",
    "session_affinity",
    "weighted_round_robin",
]


def round_robin() -> PipelineRouter:
    """Cycle through the candidates in cluster order."""
    return PipelineRouter(RoundRobinPicker(), name="round_robin")


def random_router() -> PipelineRouter:
    """Uniform over the candidates."""
    return PipelineRouter(RandomPicker(), name="random")


def power_of_two() -> PipelineRouter:
    """Two random candidates, the one with fewer in-flight requests (then tokens)."""
    return PipelineRouter(PowerOfTwoPicker(), name="power_of_two")


def weighted_round_robin() -> PipelineRouter:
    """nginx smooth weighted round robin over ``InstanceSpec.weight``."""
    return PipelineRouter(SmoothWeightedRoundRobinPicker(), name="weighted_round_robin")


def least_connections() -> PipelineRouter:
    """Fewest in-flight requests relative to ``max_inflight``; ties at random."""
    return PipelineRouter(MaxScorePicker(), [(InflightScorer(), 1.0)],
                          name="least_connections")


def least_loaded(waiting_weight: float = 1.0,
                 default_request_tokens: int = 512) -> PipelineRouter:
    """Fewest outstanding tokens, own bookkeeping plus the engine-reported queue
    (formula in :class:`~control_plane.routing.scorers.InflightTokensScorer`)."""
    scorer = InflightTokensScorer(waiting_weight, default_request_tokens)
    return PipelineRouter(MaxScorePicker(), [(scorer, 1.0)], name="least_loaded")


def least_response_time(metric: str = "e2e", prior_factor: float = 0.9) -> PipelineRouter:
    """Lowest ``ewma latency * (inflight + 1)``; unobserved instances optimistic."""
    scorer = ResponseTimeScorer(metric, prior_factor)
    return PipelineRouter(MaxScorePicker(), [(scorer, 1.0)], name="least_response_time")


def session_affinity(load_factor: float = 1.25, vnodes: int = 128,
                     fallback: str = "request") -> PipelineRouter:
    """Consistent hashing with bounded loads on the session id (see ``affinity``)."""
    return PipelineRouter(RandomPicker(), filters=[
        SessionAffinityFilter(load_factor, vnodes, fallback)], name="session_affinity")


def locality(block_size: int = 16, max_blocks: int | None = None, stride: int = 8,
             load_weight: float = 0.5, balance_abs_threshold: float = 8,
             balance_rel_threshold: float = 1.5) -> PipelineRouter:
    """Prefix-cache aware routing: the ``locality`` filter (imbalance guard, then the best
    ``prefix match + load_weight * (1 - inflight / max_inflight)``; decision rule in
    ``control_plane.routing.locality``), ties at random. With the defaults a full prefix
    hit outweighs any load difference the guard lets through (at most 0.5), a hit on more
    than half the prompt beats an idle instance without one, and a request without a cached
    prefix goes to the least utilised instance."""
    return PipelineRouter(RandomPicker(), filters=[LocalityFilter(
        block_size, max_blocks, stride, load_weight, balance_abs_threshold,
        balance_rel_threshold)], name="locality")


def _scorer_entry(entry: object) -> tuple[Scorer, float]:
    """``"name"`` | ``[name, weight]`` | ``{type, params, weight}`` -> (scorer, weight)."""
    weight: object = 1.0
    spec: object = entry
    if isinstance(entry, (list, tuple)):
        if len(entry) != 2:
            raise ConfigError(f"pipeline scorer {entry!r}: expected [name or spec, weight]")
        spec, weight = entry
    elif isinstance(entry, Mapping):
        spec = {k: v for k, v in entry.items() if k != "weight"}
        weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            0 <= weight < float("inf")):
        raise ConfigError(f"pipeline scorer {entry!r}: weight must be a finite number >= 0, "
                          f"got {weight!r}")
    return SCORERS.create(spec), float(weight)


def pipeline(filters: Sequence[Any] = (), scorers: Sequence[Any] = (),
             picker: Any = "max_score", name: str = "pipeline") -> PipelineRouter:
    """A router composed from the FILTERS / SCORERS / PICKERS registries.

    ``scorers`` entries: ``"name"`` (weight 1), ``[name_or_spec, weight]`` or
    ``{"type": name, "params": {...}, "weight": w}``.
    """
    for key, value in (("filters", filters), ("scorers", scorers)):
        if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
            raise ConfigError(f"pipeline {key} must be a list, got {value!r}")
    return PipelineRouter(PICKERS.create(picker), [_scorer_entry(s) for s in scorers],
                          [FILTERS.create(f) for f in filters], name=name)
