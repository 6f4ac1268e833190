"""Routers and load balancers: filters -> weighted scorers -> picker, registered by name.

Registries: ``ROUTERS`` (complete routers), ``FILTERS``, ``SCORERS``, ``PICKERS`` (parts
for the ``pipeline`` router that users compose in YAML).

Routers: round_robin, random, power_of_two, least_connections, least_loaded,
least_response_time, weighted_round_robin, session_affinity, locality, pipeline
(``routers.py``). Filters: min_free_kv, max_inflight_ratio, load_balance_guard,
session_affinity, locality. Scorers: inflight, inflight_tokens, queue_depth,
kv_utilization, response_time, prefix_cache, session_affinity. Pickers: max_score, random,
weighted_random, round_robin, smooth_weighted_round_robin, power_of_two.
"""

from __future__ import annotations

from control_plane.routing import routers as _r
from control_plane.routing.affinity import SessionAffinityFilter, SessionAffinityScorer
from control_plane.routing.base import Filter, Picker, PipelineRouter, Router, Scorer
from control_plane.routing.filters import LoadBalanceGuard, MaxInflightRatioFilter, MinFreeKvFilter
from control_plane.routing.locality import LocalityFilter
from control_plane.routing.pickers import (
    MaxScorePicker,
    PowerOfTwoPicker,
    RandomPicker,
    RoundRobinPicker,
    SmoothWeightedRoundRobinPicker,
    WeightedRandomPicker,
)
from control_plane.routing.prefix_cache import PrefixCacheScorer
from control_plane.routing.prefix_index import PrefixIndex
from control_plane.routing.registries import FILTERS, PICKERS, ROUTERS, SCORERS
from control_plane.routing.scorers import (
    InflightScorer,
    InflightTokensScorer,
    KvUtilizationScorer,
    QueueDepthScorer,
    ResponseTimeScorer,
)

__all__ = [
    "FILTERS",
    "PICKERS",
    "ROUTERS",
    "SCORERS",
    "Filter",
    "InflightScorer",
    "InflightTokensScorer",
    "KvUtilizationScorer",
    "LoadBalanceGuard",
    "LocalityFilter",
    "MaxInflightRatioFilter",
    "MaxScorePicker",
    "MinFreeKvFilter",
    "Picker",
    "PipelineRouter",
    "PowerOfTwoPicker",
    "PrefixCacheScorer",
    "PrefixIndex",
    "QueueDepthScorer",
    "RandomPicker",
    "ResponseTimeScorer",
    "RoundRobinPicker",
    "Router",
    "Scorer",
    "SessionAffinityFilter",
    "SessionAffinityScorer",
    "SmoothWeightedRoundRobinPicker",
    "WeightedRandomPicker",
    "create_router",
]

for _name, _factory in (
    ("round_robin", _r.round_robin),
    ("random", _r.random_router),
    ("least_loaded", _r.least_loaded),
    ("least_connections", _r.least_connections),
    ("least_response_time", _r.least_response_time),
    ("weighted_round_robin", _r.weighted_round_robin),
    ("power_of_two", _r.power_of_two),
    ("session_affinity", _r.session_affinity),
    ("locality", _r.locality),
    ("pipeline", _r.pipeline),
):
    ROUTERS.register(_name, _factory)

for _cls in (MinFreeKvFilter, MaxInflightRatioFilter, LoadBalanceGuard, SessionAffinityFilter,
             LocalityFilter):
    FILTERS.register(_cls.name, _cls)

for _cls in (PrefixCacheScorer, KvUtilizationScorer, QueueDepthScorer, InflightTokensScorer,
             InflightScorer, ResponseTimeScorer, SessionAffinityScorer):
    SCORERS.register(_cls.name, _cls)

for _cls in (MaxScorePicker, RandomPicker, WeightedRandomPicker, RoundRobinPicker,
             SmoothWeightedRoundRobinPicker, PowerOfTwoPicker):
    PICKERS.register(_cls.name, _cls)

del _name, _factory, _cls


def create_router(spec: object) -> Router:
    """``"round_robin"`` or ``{"type": "locality", "params": {...}}`` -> a new router."""
    return ROUTERS.create(spec)
