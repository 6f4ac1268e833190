"""Load and latency scorers: one score in [0, 1] per candidate, higher is better.

Normalisations (each scorer's docstring says which it uses):

- capacity: against the instance's own limit (``inflight``, ``kv_utilization``), so a score
  means the same thing on every instance and composes well with other scorers;
- max: ``1 - x / max(x)`` over the candidates (``inflight_tokens``): ratios are kept, the
  idle instance scores 1;
- min-max: ``(max - x) / (max - min)`` (``queue_depth``): best 1, worst 0, all 1 when equal;
- ratio: ``min(x) / x`` (``response_time``): twice the best expected latency scores 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

from control_plane.errors import ConfigError
from control_plane.routing.base import Scorer
from control_plane.types import ClusterView, InstanceView, Request

__all__ = [
    "InflightScorer",
    "InflightTokensScorer",
    "KvUtilizationScorer",
    "QueueDepthScorer",
    "ResponseTimeScorer",
]


class InflightScorer(Scorer):
    """``1 - inflight / spec.max_inflight`` (capacity-normalised in-flight requests).

    On a homogeneous cluster this orders exactly like "fewest connections"; on a mixed one
    it prefers the instance with the most spare concurrency relative to its limit.
    """

    name = "inflight"

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        return [1.0 - v.inflight / v.spec.max_inflight for v in candidates]


class InflightTokensScorer(Scorer):
    """Outstanding tokens, max-normalised: ``1 - load / max(load)``.

    ``load = inflight_tokens + waiting_weight * engine_waiting * avg_tokens``:
    ``inflight_tokens`` (own bookkeeping, exact) is the prompt + expected output of every
    request this control plane has in flight there; ``engine_waiting`` is the queue the
    engine last reported (stale; 0 before the first report or once expired) and
    ``avg_tokens`` our mean tokens per in-flight request there (``default_request_tokens``
    when none). Queued requests are thus counted again as a queueing penalty: an engine
    with a backlog starts new work later than its token count alone says, and work other
    clients sent it shows up only there. ``waiting_weight=0`` uses own bookkeeping only.
    """

    name = "inflight_tokens"

    def __init__(self, waiting_weight: float = 1.0, default_request_tokens: int = 512) -> None:
        if isinstance(waiting_weight, bool) or not isinstance(waiting_weight, (int, float)) or (
                not 0 <= waiting_weight < float("inf")):
            raise ConfigError(f"{self.name}: waiting_weight must be a finite number >= 0, "
                              f"got {waiting_weight!r}")
        if isinstance(default_request_tokens, bool) or not isinstance(
                default_request_tokens, int) or default_request_tokens < 1:
            raise ConfigError(f"{self.name}: default_request_tokens must be an integer >= 1, "
                              f"got {default_request_tokens!r}")
        self.waiting_weight = float(waiting_weight)
        self.default_request_tokens = default_request_tokens

    def loads(self, candidates: Sequence[InstanceView]) -> list[float]:
        loads = [v.inflight_tokens for v in candidates]
        ww = self.waiting_weight
        if ww:
            d = self.default_request_tokens
            for i, v in enumerate(candidates):
                w = v.engine_waiting
                if w:
                    n = v.inflight
                    loads[i] += ww * w * (loads[i] / n if n else d)
        return loads

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        loads = self.loads(candidates)
        hi = max(loads)
        if hi <= 0:
            return [1.0] * len(loads)
        return [1.0 - x / hi for x in loads]


class QueueDepthScorer(Scorer):
    """``engine_waiting + inflight`` (engine-reported queue + own in-flight), min-max."""

    name = "queue_depth"

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        depth = [v.engine_waiting + v.inflight for v in candidates]
        lo, hi = min(depth), max(depth)
        if hi == lo:
            return [1.0] * len(depth)
        inv = 1.0 / (hi - lo)
        return [(hi - d) * inv for d in depth]


class KvUtilizationScorer(Scorer):
    """``1 - est_kv_usage`` (engine-reported KV usage plus tokens dispatched since)."""

    name = "kv_utilization"

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        return [1.0 - v.est_kv_usage for v in candidates]


class ResponseTimeScorer(Scorer):
    """Expected latency ``ewma * (inflight + 1)``, ratio-normalised: ``min / expected``.

    ``ewma`` is the decaying average of observed end-to-end (``metric="e2e"``) or
    time-to-first-token (``metric="ttft"``) latency the cluster state keeps per instance.
    An instance without observations is assumed ``prior_factor`` times the fastest observed
    average among the candidates (optimistic: at equal in-flight it is tried first, but it
    is not flooded before its first completion). No observations at all: every ewma is 1,
    which orders like fewest in-flight requests.
    """

    name = "response_time"

    def __init__(self, metric: str = "e2e", prior_factor: float = 0.9) -> None:
        if metric not in ("e2e", "ttft"):
            raise ConfigError(f"{self.name}: metric must be 'e2e' or 'ttft', got {metric!r}")
        if isinstance(prior_factor, bool) or not isinstance(prior_factor, (int, float)) or (
                prior_factor <= 0):
            raise ConfigError(f"{self.name}: prior_factor must be a number > 0, "
                              f"got {prior_factor!r}")
        self.metric = metric
        self.prior_factor = float(prior_factor)

    def expected(self, candidates: Sequence[InstanceView]) -> list[float]:
        if self.metric == "e2e":
            ewma = [v.ewma_e2e_s for v in candidates]
        else:
            ewma = [v.ewma_ttft_s for v in candidates]
        if None in ewma:
            seen = [x for x in ewma if x is not None]
            prior = self.prior_factor * min(seen) if seen else 1.0
            ewma = [prior if x is None else x for x in ewma]
        return [x * (v.inflight + 1) for x, v in zip(ewma, candidates, strict=True)]

    def score(self, request: Request, candidates: Sequence[InstanceView],
              cluster: ClusterView) -> Sequence[float]:
        exp = self.expected(candidates)
        lo = min(exp) + 1e-12  # an instance with a zero average must not divide by zero
        return [lo / (x + 1e-12) for x in exp]
