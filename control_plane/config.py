"""ControlPlaneConfig: admission bounds, retry and health settings, built from dicts (YAML)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from control_plane.errors import ConfigError
from control_plane.types import NUM_PRIORITIES

__all__ = ["ControlPlaneConfig"]


@dataclass(frozen=True, slots=True)
class ControlPlaneConfig:
    """Settings of the manager (policies and routers carry their own params).

    ``max_queue``: global queue bound (requests). ``max_queue_per_priority``: bound per
    priority level 0..4 (None: each level may use the whole queue). ``sheddable_priorities``:
    levels whose queued requests are evicted first when the queue is full and more important
    work arrives. ``max_attempts``: dispatch attempts per request (retries after instance
    failures included). ``kv_headroom``: an instance has room only while its estimated KV
    usage is below this. ``stats_stale_s``: engine stats older than this are ignored.
    ``health_timeout_s``: an instance that sent no stats for this long is marked down (and
    up again when stats arrive). ``max_queue_wait_s``: queued longer than this -> rejected.
    ``tpot_gate``: the TPOT admission gate (None: off), a fraction ``f`` > 0: an instance
    that runs work gets no new request while its predicted time per output token with one
    more request exceeds ``f`` x the tightest TPOT SLO among its in-flight requests and the
    new request's own; such requests wait in the global queue, in the policy's order (see
    :mod:`control_plane.gate` for the prediction).
    ``seed``: seeds the router's random generator.
    """

    max_queue: int = 100_000
    max_queue_per_priority: tuple[int, ...] | None = None
    sheddable_priorities: frozenset[int] = frozenset({4})
    max_attempts: int = 3
    kv_headroom: float = 0.95
    stats_stale_s: float | None = None
    health_timeout_s: float | None = None
    max_queue_wait_s: float | None = None
    tpot_gate: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"control plane config {name}={getattr(self, name)!r}: {why}")

        if _not_int(self.max_queue) or self.max_queue < 1:
            raise bad("max_queue", "must be an integer >= 1")
        mqp = self.max_queue_per_priority
        if mqp is not None:
            if not isinstance(mqp, (tuple, list)) or len(mqp) != NUM_PRIORITIES or any(
                    _not_int(x) or x < 0 for x in mqp):
                raise bad("max_queue_per_priority",
                          f"must be {NUM_PRIORITIES} integers >= 0 (one per priority 0..4)")
            object.__setattr__(self, "max_queue_per_priority", tuple(mqp))
        sp = self.sheddable_priorities
        if not isinstance(sp, (set, frozenset, list, tuple)) or any(
                _not_int(x) or not 0 <= x < NUM_PRIORITIES for x in sp):
            raise bad("sheddable_priorities", "must be a set of priorities in 0..4")
        object.__setattr__(self, "sheddable_priorities", frozenset(sp))
        if _not_int(self.max_attempts) or self.max_attempts < 1:
            raise bad("max_attempts", "must be an integer >= 1")
        if not isinstance(self.kv_headroom, (int, float)) or not 0 < self.kv_headroom <= 1:
            raise bad("kv_headroom", "must be in (0, 1]")
        for name in ("stats_stale_s", "health_timeout_s", "max_queue_wait_s"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                  or not math.isfinite(v) or v <= 0):
                raise bad(name, "must be a number > 0 or null")
        g = self.tpot_gate
        if g is not None and (not isinstance(g, (int, float)) or isinstance(g, bool)
                              or not math.isfinite(g) or g <= 0):
            raise bad("tpot_gate", "must be a number > 0 (a fraction of the TPOT SLO, e.g. "
                      "0.8) or null (off)")
        if _not_int(self.seed):
            raise bad("seed", "must be an integer")

    def queue_limit(self, priority: int) -> int:
        mqp = self.max_queue_per_priority
        return self.max_queue if mqp is None else mqp[priority]

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> ControlPlaneConfig:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"control plane config must be a mapping, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"control plane config: unknown key(s) {unknown}; "
                              f"known: {sorted(known)}")
        return cls(**data)  # type: ignore[arg-type]


def _not_int(x: object) -> bool:
    return isinstance(x, bool) or not isinstance(x, int)
