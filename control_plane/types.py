"""Core data types: requests, SLOs, instance specs, engine stats and the read-only views.

Units are in field names: ``*_s`` seconds, ``*_tokens`` tokens, ``*_usd`` US dollars,
``kv_usage`` a fraction in [0, 1]. Every type validates itself on construction and raises
:class:`~control_plane.errors.ValidationError` naming the field and the value.

``InstanceView`` and ``ClusterView`` are the snapshots policies and routers read. The manager
updates them in place as events arrive (never rebuilt per decision); they refuse attribute
assignment, so a policy cannot mutate them by accident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from control_plane.errors import ValidationError

__all__ = [
    "SLO",
    "ClusterView",
    "EngineStats",
    "Health",
    "InstanceSpec",
    "InstanceView",
    "Priority",
    "Request",
]


class Priority(IntEnum):
    """Five levels, lower value = more important (the vLLM convention)."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    BACKGROUND = 4


NUM_PRIORITIES = len(Priority)


class Health(Enum):
    UP = "up"
    DRAINING = "draining"  # finishes its in-flight work, gets nothing new
    DOWN = "down"  # gets nothing; its in-flight work is retried elsewhere


def _check_number(owner: str, name: str, value: object, *, minimum: float = 0.0,
                  strict: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(owner, name, value, "must be a number")
    if math.isnan(value) or math.isinf(value):
        raise ValidationError(owner, name, value, "must be finite")
    if strict and value <= minimum:
        raise ValidationError(owner, name, value, f"must be > {minimum}")
    if not strict and value < minimum:
        raise ValidationError(owner, name, value, f"must be >= {minimum}")


def _check_int(owner: str, name: str, value: object, *, minimum: int = 0,
               allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(owner, name, value, "must be an integer")
    if value < minimum:
        raise ValidationError(owner, name, value, f"must be >= {minimum}")


@dataclass(frozen=True, slots=True)
class SLO:
    """Service-level objectives of one request, relative to its arrival.

    ``ttft_s``: time to first token; ``tpot_s``: time per output token after the first;
    ``e2e_s``: end-to-end deadline. Any may be None (not constrained).
    """

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            _check_number("SLO", name, getattr(self, name), strict=True, allow_none=True)

    def met(self, ttft_s: float | None, tpot_s: float | None, e2e_s: float | None) -> bool:
        """True when every constrained objective is met by the measured values."""
        for bound, got in ((self.ttft_s, ttft_s), (self.tpot_s, tpot_s), (self.e2e_s, e2e_s)):
            if bound is not None and (got is None or got > bound):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as the control plane sees it.

    ``output_tokens`` is the true output length when known (traces); ``max_tokens`` the
    client's cap. At least one is required; ``expected_output_tokens`` is the first known.
    ``prefix_hashes`` holds one hash per KV block of the prompt (prefix-chained), used by
    prefix-aware routing.
    """

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int | None = None
    max_tokens: int | None = None
    priority: int = Priority.NORMAL
    tenant: str = "default"
    session_id: str | None = None
    prefix_hashes: tuple[int, ...] = ()
    slo: SLO | None = None
    cost_budget_usd: float | None = None
    expected_output_tokens: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValidationError("Request", "request_id", self.request_id,
                                  "must be a non-empty string")
        owner = f"Request[{self.request_id}]"
        _check_number(owner, "arrival_s", self.arrival_s)
        _check_int(owner, "prompt_tokens", self.prompt_tokens, minimum=1)
        _check_int(owner, "output_tokens", self.output_tokens, minimum=1, allow_none=True)
        _check_int(owner, "max_tokens", self.max_tokens, minimum=1, allow_none=True)
        if self.output_tokens is None and self.max_tokens is None:
            raise ValidationError(owner, "output_tokens", None,
                                  "output_tokens or max_tokens is required")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) or not (
                0 <= self.priority < NUM_PRIORITIES):
            raise ValidationError(owner, "priority", self.priority,
                                  f"must be an integer in 0..{NUM_PRIORITIES - 1}")
        if not isinstance(self.tenant, str) or not self.tenant:
            raise ValidationError(owner, "tenant", self.tenant, "must be a non-empty string")
        if self.session_id is not None and not isinstance(self.session_id, str):
            raise ValidationError(owner, "session_id", self.session_id, "must be a string")
        if not isinstance(self.prefix_hashes, tuple):
            raise ValidationError(owner, "prefix_hashes", type(self.prefix_hashes).__name__,
                                  "must be a tuple of ints")
        if self.slo is not None and not isinstance(self.slo, SLO):
            raise ValidationError(owner, "slo", self.slo, "must be an SLO")
        _check_number(owner, "cost_budget_usd", self.cost_budget_usd, allow_none=True)
        out = self.output_tokens if self.output_tokens is not None else self.max_tokens
        object.__setattr__(self, "expected_output_tokens", out)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.expected_output_tokens

    def ttft_deadline_s(self) -> float | None:
        """Absolute time by which the first token is due, if the SLO constrains it."""
        slo = self.slo
        if slo is None or slo.ttft_s is None:
            return None
        return self.arrival_s + slo.ttft_s

    def e2e_deadline_s(self) -> float | None:
        """Absolute end-to-end deadline: the e2e SLO, else TTFT + TPOT x (outputs - 1)."""
        slo = self.slo
        if slo is None:
            return None
        if slo.e2e_s is not None:
            return self.arrival_s + slo.e2e_s
        if slo.ttft_s is not None and slo.tpot_s is not None:
            return self.arrival_s + slo.ttft_s + slo.tpot_s * (self.expected_output_tokens - 1)
        return None

    def deadline_s(self) -> float:
        """The earliest deadline the SLO implies (TTFT first), +inf when unconstrained."""
        d = self.ttft_deadline_s()
        if d is None:
            d = self.e2e_deadline_s()
        return math.inf if d is None else d


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Static description of one engine instance (a vLLM server, or a modelled one).

    ``max_inflight``: concurrency limit the control plane enforces (requests held in the
    global queue beyond it). ``kv_capacity_tokens``: KV cache size in tokens (0 = unknown,
    no KV headroom check). ``weight``: relative capacity for weighted routing.
    ``tokens_per_s``: nominal batched throughput, used to price a token on this instance.
    ``prefill_tokens_per_s`` / ``decode_s_per_token``: nominal speeds for latency estimates
    until a performance model or observed latencies refine them (``decode_s_per_token``: one
    decode iteration of a batch of 32 sequences). ``decode_s_per_seq``: how much longer a
    decode iteration gets per further sequence in the batch (0: unknown, taken as flat; used
    by the TPOT admission gate, :mod:`control_plane.gate`).
    """

    instance_id: str
    gpu_type: str = "unknown"
    price_per_hour_usd: float = 0.0
    max_inflight: int = 64
    kv_capacity_tokens: int = 0
    weight: float = 1.0
    tokens_per_s: float = 2000.0
    prefill_tokens_per_s: float = 8000.0
    decode_s_per_token: float = 0.02
    decode_s_per_seq: float = 0.0
    url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.instance_id, str) or not self.instance_id:
            raise ValidationError("InstanceSpec", "instance_id", self.instance_id,
                                  "must be a non-empty string")
        owner = f"InstanceSpec[{self.instance_id}]"
        _check_number(owner, "price_per_hour_usd", self.price_per_hour_usd)
        _check_int(owner, "max_inflight", self.max_inflight, minimum=1)
        _check_int(owner, "kv_capacity_tokens", self.kv_capacity_tokens)
        _check_number(owner, "weight", self.weight, strict=True)
        _check_number(owner, "tokens_per_s", self.tokens_per_s, strict=True)
        _check_number(owner, "prefill_tokens_per_s", self.prefill_tokens_per_s, strict=True)
        _check_number(owner, "decode_s_per_token", self.decode_s_per_token, strict=True)
        _check_number(owner, "decode_s_per_seq", self.decode_s_per_seq)

    @property
    def usd_per_token(self) -> float:
        return self.price_per_hour_usd / 3600.0 / self.tokens_per_s


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What an engine reports about itself (vLLM ``/metrics``), at observation time."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0  # fraction of KV blocks in use, [0, 1]
    prefix_cache_hit_rate: float | None = None

    def __post_init__(self) -> None:
        _check_int("EngineStats", "running", self.running)
        _check_int("EngineStats", "waiting", self.waiting)
        _check_number("EngineStats", "kv_usage", self.kv_usage)
        if self.kv_usage > 1.0:
            raise ValidationError("EngineStats", "kv_usage", self.kv_usage, "must be <= 1")


class _ReadOnly:
    """Slotted object whose attributes only its owner (via ``_set``) may change."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (tried to delete {name!r})")


_set = object.__setattr__


class InstanceView(_ReadOnly):
    """Live, read-only snapshot of one instance, kept current by the manager.

    Own bookkeeping (exact, updated on every dispatch / completion):
    ``inflight`` requests, ``inflight_tokens`` outstanding tokens (prompt + expected output
    of in-flight requests), ``inflight_prompt_tokens``, ``dispatched_total``.
    Engine-reported (stale, from the last ``observe``): ``engine_running``,
    ``engine_waiting``, ``engine_kv_usage``, ``observed_s`` (None before the first report),
    ``kv_tokens_since_observed`` (tokens dispatched since that report).
    Observed latencies (decaying averages of completed requests): ``ewma_ttft_s``,
    ``ewma_e2e_s``, ``ewma_s_per_output_token``.
    TPOT admission gate (maintained only while ``ControlPlaneConfig.tpot_gate`` is set; see
    :mod:`control_plane.gate`): ``tpot_bound_s`` the tightest TPOT SLO among the in-flight
    requests (+inf when none has one), ``prefill_per_step`` the estimated prefill tokens per
    decode step of the in-flight mix, ``next_tpot_s`` the predicted seconds per output
    token with one more request in flight.
    ``has_room``: the instance accepts one more request under its limits.
    """

    __slots__ = (
        "dispatched_total",
        "engine_kv_usage",
        "engine_running",
        "engine_waiting",
        "ewma_e2e_s",
        "ewma_s_per_output_token",
        "ewma_ttft_s",
        "has_room",
        "health",
        "index",
        "inflight",
        "inflight_prompt_tokens",
        "inflight_tokens",
        "instance_id",
        "kv_tokens_since_observed",
        "next_tpot_s",
        "observed_s",
        "prefill_per_step",
        "spec",
        "tpot_bound_s",
    )

    def __init__(self, spec: InstanceSpec, index: int) -> None:
        _set(self, "spec", spec)
        _set(self, "instance_id", spec.instance_id)
        _set(self, "index", index)
        _set(self, "health", Health.UP)
        _set(self, "inflight", 0)
        _set(self, "inflight_tokens", 0)
        _set(self, "inflight_prompt_tokens", 0)
        _set(self, "dispatched_total", 0)
        _set(self, "engine_running", 0)
        _set(self, "engine_waiting", 0)
        _set(self, "engine_kv_usage", 0.0)
        _set(self, "observed_s", None)
        _set(self, "kv_tokens_since_observed", 0)
        _set(self, "ewma_ttft_s", None)
        _set(self, "ewma_e2e_s", None)
        _set(self, "ewma_s_per_output_token", None)
        _set(self, "tpot_bound_s", math.inf)
        _set(self, "prefill_per_step", 0.0)
        _set(self, "next_tpot_s", 0.0)
        _set(self, "has_room", True)

    @property
    def routable(self) -> bool:
        return self.health is Health.UP

    @property
    def est_kv_usage(self) -> float:
        """Engine-reported KV usage plus what was dispatched since the report."""
        cap = self.spec.kv_capacity_tokens
        if cap <= 0:
            return self.engine_kv_usage
        return min(1.0, self.engine_kv_usage + self.kv_tokens_since_observed / cap)

    def __repr__(self) -> str:
        return (f"InstanceView({self.instance_id!r}, {self.health.value}, inflight={self.inflight},"
                f" tokens={self.inflight_tokens}, kv={self.engine_kv_usage:.2f})")


class ClusterView(_ReadOnly):
    """Read-only snapshot of the whole cluster as routers and policies see it.

    ``instances``: every instance in configuration order. ``routable``: those UP.
    ``candidates``: those UP with room for one more request (what routers choose from).
    ``queued``: requests held in the global queue; ``queued_by_priority``: per level.
    """

    __slots__ = ("_by_id", "_candidates", "_routable", "instances", "queued",
                 "queued_by_priority")

    def __init__(self, instances: tuple[InstanceView, ...]) -> None:
        _set(self, "instances", instances)
        _set(self, "_by_id", {v.instance_id: v for v in instances})
        _set(self, "_routable", None)
        _set(self, "_candidates", None)
        _set(self, "queued", 0)
        _set(self, "queued_by_priority", (0,) * NUM_PRIORITIES)

    def get(self, instance_id: str) -> InstanceView | None:
        return self._by_id.get(instance_id)

    def __getitem__(self, instance_id: str) -> InstanceView:
        return self._by_id[instance_id]

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._by_id

    def __len__(self) -> int:
        return len(self.instances)

    @property
    def routable(self) -> tuple[InstanceView, ...]:
        r = self._routable
        if r is None:
            r = tuple(v for v in self.instances if v.health is Health.UP)
            _set(self, "_routable", r)
        return r

    @property
    def candidates(self) -> tuple[InstanceView, ...]:
        c = self._candidates
        if c is None:
            c = tuple(v for v in self.routable if v.has_room)
            _set(self, "_candidates", c)
        return c

    def __repr__(self) -> str:
        return (f"ClusterView({len(self.instances)} instances, {len(self.routable)} routable,"
                f" {self.queued} queued)")
