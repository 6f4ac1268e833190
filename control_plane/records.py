"""RequestRecord: what happened to one request, the record format both drivers produce.

The simulator and the live gateway both emit these; other packages write them to Parquet /
CSV through :meth:`RequestRecord.to_dict`, whose keys are :attr:`RequestRecord.FIELDS`, and
read them back with :meth:`RequestRecord.from_dict`. Summaries are in
:mod:`control_plane.metrics`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from control_plane.actions import RejectCause
from control_plane.errors import ValidationError
from control_plane.types import (
    NUM_PRIORITIES,
    SLO,
    Request,
    _check_int,
    _check_number,
)

__all__ = ["STATUSES", "RequestRecord"]

STATUSES = ("ok", "rejected", "failed")
_NAN = math.nan
_TIMES = ("arrival_s", "dispatch_s", "first_token_s", "finish_s")
_INT_FIELDS = frozenset({"priority", "prompt_tokens", "output_tokens", "attempts", "preemptions",
                         "cached_prompt_tokens"})
_FLOAT_FIELDS = frozenset({"arrival_s", "dispatch_s", "first_token_s", "finish_s", "cost_usd",
                           "slo_ttft_s", "slo_tpot_s", "slo_e2e_s"})
_OPTIONAL = frozenset({"slo_ttft_s", "slo_tpot_s", "slo_e2e_s", "instance_id", "dispatch_s",
                       "first_token_s", "finish_s", "reject_cause"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """What happened to one request. Times are absolute seconds on the driver's clock.

    ``instance_id``: the instance that last served it (None if never dispatched);
    ``dispatch_s``: first dispatch; ``finish_s``: completion (None when it never finished).
    ``status`` is one of :data:`STATUSES`; ``reject_cause`` (a :class:`RejectCause` value or
    any string) is required when rejected, allowed when failed, forbidden when ok.
    ``preemptions`` are engine-level; ``attempts`` counts dispatches.
    """

    FIELDS: ClassVar[tuple[str, ...]] = (
        "request_id", "tenant", "priority", "arrival_s", "prompt_tokens", "output_tokens",
        "slo_ttft_s", "slo_tpot_s", "slo_e2e_s", "instance_id", "dispatch_s", "first_token_s",
        "finish_s", "status", "reject_cause", "reject_detail", "attempts", "preemptions",
        "cached_prompt_tokens", "cost_usd",
    )

    request_id: str
    arrival_s: float
    prompt_tokens: int
    tenant: str = "default"
    priority: int = 2
    output_tokens: int = 0
    slo: SLO | None = None
    instance_id: str | None = None
    dispatch_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    status: str = "ok"
    reject_cause: str | None = None
    reject_detail: str = ""
    attempts: int = 0
    preemptions: int = 0
    cached_prompt_tokens: int = 0
    cost_usd: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValidationError("RequestRecord", "request_id", self.request_id,
                                  "must be a non-empty string")
        owner = f"RequestRecord[{self.request_id}]"
        if not isinstance(self.tenant, str) or not self.tenant:
            raise ValidationError(owner, "tenant", self.tenant, "must be a non-empty string")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) or not (
                0 <= self.priority < NUM_PRIORITIES):
            raise ValidationError(owner, "priority", self.priority,
                                  f"must be an integer in 0..{NUM_PRIORITIES - 1}")
        for name in ("prompt_tokens", "output_tokens", "attempts", "preemptions",
                     "cached_prompt_tokens"):
            _check_int(owner, name, getattr(self, name))
        if self.cached_prompt_tokens > self.prompt_tokens:
            raise ValidationError(owner, "cached_prompt_tokens", self.cached_prompt_tokens,
                                  f"must be <= prompt_tokens={self.prompt_tokens}")
        _check_number(owner, "cost_usd", self.cost_usd)
        if self.slo is not None and not isinstance(self.slo, SLO):
            raise ValidationError(owner, "slo", self.slo, "must be an SLO or None")
        prev_name, prev = None, None
        for name in _TIMES:
            t = getattr(self, name)
            _check_number(owner, name, t, allow_none=name != "arrival_s")
            if t is None:
                continue
            if prev is not None and t < prev:
                raise ValidationError(owner, name, t, f"must be >= {prev_name}={prev!r}")
            prev_name, prev = name, t
        if self.instance_id is not None and (
                not isinstance(self.instance_id, str) or not self.instance_id):
            raise ValidationError(owner, "instance_id", self.instance_id,
                                  "must be a non-empty string or None")
        if (self.instance_id is None) != (self.dispatch_s is None):
            raise ValidationError(owner, "instance_id", self.instance_id,
                                  f"must be set exactly when dispatch_s is "
                                  f"(dispatch_s={self.dispatch_s!r})")
        if self.first_token_s is not None and self.dispatch_s is None:
            raise ValidationError(owner, "first_token_s", self.first_token_s,
                                  "needs dispatch_s (a first token without a dispatch)")
        if self.status not in STATUSES:
            raise ValidationError(owner, "status", self.status, f"must be one of {STATUSES}")
        if isinstance(self.reject_cause, RejectCause):
            object.__setattr__(self, "reject_cause", self.reject_cause.value)
        if self.reject_cause is not None and (
                not isinstance(self.reject_cause, str) or not self.reject_cause):
            raise ValidationError(owner, "reject_cause", self.reject_cause,
                                  "must be a non-empty string or None")
        if self.status == "rejected" and self.reject_cause is None:
            raise ValidationError(owner, "reject_cause", None, "a rejected record needs a cause")
        if self.status == "ok":
            if self.reject_cause is not None:
                raise ValidationError(owner, "reject_cause", self.reject_cause,
                                      "must be None when status is 'ok'")
            if self.finish_s is None:
                raise ValidationError(owner, "finish_s", None, "an ok record needs finish_s")
        if not isinstance(self.reject_detail, str):
            raise ValidationError(owner, "reject_detail", self.reject_detail, "must be a string")

    # -- derived ----------------------------------------------------------------------
    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """(finish - first token) / (output_tokens - 1); None with fewer than 2 outputs."""
        if self.output_tokens < 2 or self.first_token_s is None or self.finish_s is None:
            return None
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def e2e_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.arrival_s

    @property
    def queue_delay_s(self) -> float | None:
        return None if self.dispatch_s is None else self.dispatch_s - self.arrival_s

    @property
    def slo_met(self) -> bool:
        """Ok and every objective of the SLO met (no SLO: met when ok)."""
        if self.status != "ok":
            return False
        if self.slo is None:
            return True
        tpot = self.tpot_s if self.output_tokens > 1 else 0.0
        return self.slo.met(self.ttft_s, tpot, self.e2e_s)

    # -- construction / serialisation ---------------------------------------------------
    @classmethod
    def from_request(cls, request: Request, **kw: Any) -> RequestRecord:
        """A record for ``request``: copies id, tenant, priority, arrival, prompt and SLO."""
        return cls(request_id=request.request_id, tenant=request.tenant,
                   priority=int(request.priority), arrival_s=request.arrival_s,
                   prompt_tokens=request.prompt_tokens, slo=request.slo, **kw)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of plain scalars keyed by :attr:`FIELDS` (the SLO is split in three)."""
        slo = self.slo
        return {
            "request_id": self.request_id, "tenant": self.tenant, "priority": self.priority,
            "arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "slo_ttft_s": None if slo is None else slo.ttft_s,
            "slo_tpot_s": None if slo is None else slo.tpot_s,
            "slo_e2e_s": None if slo is None else slo.e2e_s,
            "instance_id": self.instance_id, "dispatch_s": self.dispatch_s,
            "first_token_s": self.first_token_s, "finish_s": self.finish_s,
            "status": self.status, "reject_cause": self.reject_cause,
            "reject_detail": self.reject_detail, "attempts": self.attempts,
            "preemptions": self.preemptions, "cached_prompt_tokens": self.cached_prompt_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> RequestRecord:
        """Inverse of :meth:`to_dict`; validates. Unknown keys are an error; missing keys
        other than ``request_id``, ``arrival_s``, ``prompt_tokens`` take their defaults.
        NaN in an optional column reads as None and numpy scalars are accepted (as Parquet
        readers return them); strings are not parsed into numbers.
        """
        rid = row.get("request_id")
        owner = f"RequestRecord[{rid}]"
        unknown = sorted(set(row) - set(cls.FIELDS))
        if unknown:
            raise ValidationError(owner, unknown[0], row[unknown[0]],
                                  f"unknown column; known: {', '.join(cls.FIELDS)}")
        for name in ("request_id", "arrival_s", "prompt_tokens"):
            if name not in row:
                raise ValidationError(owner, name, None, "is required")
        kw: dict[str, Any] = {}
        for name, value in row.items():
            if isinstance(value, float) and math.isnan(value) and name in _OPTIONAL:
                value = None
            elif isinstance(value, np.generic) and not isinstance(value, np.bool_):
                value = value.item()
            if name in _INT_FIELDS and isinstance(value, numbers.Integral) and not isinstance(
                    value, bool):
                value = int(value)
            elif name in _FLOAT_FIELDS and isinstance(value, numbers.Real) and not isinstance(
                    value, bool):
                value = float(value)
            kw[name] = value
        bounds = (kw.pop("slo_ttft_s", None), kw.pop("slo_tpot_s", None),
                  kw.pop("slo_e2e_s", None))
        if any(b is not None for b in bounds):
            kw["slo"] = SLO(*bounds)
        return cls(**kw)
