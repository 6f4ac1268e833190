"""What the manager tells a driver to do, and what a driver reports back.

Drivers (sim, live) execute actions in list order: ``Dispatch`` sends a request to an
instance; ``Retry`` cancels the attempt on ``from_instance`` (the request is back in the
manager's hands and a later ``Dispatch`` places it again); ``Reject`` answers the client with
the reason; ``Queued`` only informs; ``PolicySwitch`` records an adaptive switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from control_plane.types import Request

__all__ = [
    "Dispatch",
    "Outcome",
    "PolicySwitch",
    "Queued",
    "Reject",
    "RejectCause",
    "Retry",
]


class RejectCause(StrEnum):
    """Machine-readable cause of a rejection (the ``detail`` string says the specifics)."""

    QUEUE_FULL = "queue_full"  # the bounded queue of the request's priority is full
    SHED = "shed"  # a queued sheddable request made room for more important work
    PREEMPTED = "preempted"  # a queued lower-priority request made room (priority policy)
    SLO_INFEASIBLE = "slo_infeasible"  # cannot meet its SLO any more
    BUDGET_EXHAUSTED = "budget_exhausted"  # tenant or request cost budget exceeded
    QUEUE_TIMEOUT = "queue_timeout"  # waited longer than the configured maximum
    RETRIES_EXHAUSTED = "retries_exhausted"  # failed on too many instances
    NO_INSTANCES = "no_instances"  # no instance is up to take it
    CANCELLED = "cancelled"  # the client went away while the request was queued


@dataclass(frozen=True, slots=True)
class Dispatch:
    request: Request
    instance_id: str
    attempt: int = 1  # 1 for the first try, 2+ after retries


@dataclass(frozen=True, slots=True)
class Queued:
    request: Request
    queue_length: int  # global queue length after adding this request


@dataclass(frozen=True, slots=True)
class Reject:
    request: Request
    cause: RejectCause
    detail: str  # human-readable: what was exceeded, by how much, on which instance

    @property
    def reason(self) -> str:
        return f"{self.cause.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Retry:
    request: Request
    from_instance: str
    reason: str
    attempt: int  # the attempt that failed


@dataclass(frozen=True, slots=True)
class PolicySwitch:
    at_s: float
    from_policy: str
    to_policy: str
    cause: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, as the driver reports it to ``ControlPlane.complete``.

    ``ok`` False with ``retryable`` True (for example an engine that failed before the first
    byte) sends the request back for another instance; ``ok`` False otherwise ends it.
    Latencies are measured by the driver from the request's arrival (what SLOs constrain);
    None when not known. The manager subtracts the time spent in its own queue before it
    folds them into an instance's observed latency.
    """

    ok: bool = True
    retryable: bool = False
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int | None = None
    cached_prompt_tokens: int = 0
    error: str | None = None


OK = Outcome()
