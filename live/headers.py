"""Request headers the gateway reads (scheduling hints) and writes (what happened).

Read from the client (all optional; a bad value is answered with HTTP 400 whose message
names the header and the value):

=====================  ==================================================================
``x-priority``         ``0``..``4`` (0 most important, the vLLM convention) or a name:
                       ``critical`` 0, ``high`` 1, ``normal`` 2 (default), ``low`` 3,
                       ``background`` 4 (case-insensitive)
``x-tenant``           tenant name (default ``default``), up to 128 characters
``x-session-id``       session key for session-affine routing, up to 256 characters
``x-slo-ttft-ms``      time-to-first-token objective, milliseconds > 0
``x-slo-tpot-ms``      time-per-output-token objective, milliseconds > 0
``x-slo-e2e-ms``       end-to-end objective, milliseconds > 0
``x-cost-budget-usd``  cost budget of the request, US dollars >= 0
``x-prompt-tokens``    the prompt's exact token count (integer >= 1); replaces the
                       gateway's estimate (see :mod:`live.gateway_body`)
``x-output-tokens``    the expected output length (integer >= 1), e.g. from a replayed
                       trace; otherwise the body's ``max_tokens`` is the estimate
``x-request-id``       the request's id (up to 128 printable characters) in the control
                       plane and the records; default: generated (``gw-<n>``). An id that
                       is still queued or in flight is refused with 409
=====================  ==================================================================

Written on every response: ``x-request-id``; when an engine answered:
``x-sagellm-instance`` (the instance that served it) and ``x-sagellm-attempts``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from control_plane.types import SLO, Priority

__all__ = [
    "ATTEMPTS",
    "COST_BUDGET",
    "INSTANCE",
    "OUTPUT_TOKENS",
    "PRIORITY",
    "PRIORITY_NAMES",
    "PROMPT_TOKENS",
    "REQUEST_ID",
    "SESSION",
    "SLO_E2E_MS",
    "SLO_TPOT_MS",
    "SLO_TTFT_MS",
    "TENANT",
    "HeaderError",
    "RequestHints",
    "parse_hints",
]

PRIORITY = "x-priority"
TENANT = "x-tenant"
SESSION = "x-session-id"
SLO_TTFT_MS = "x-slo-ttft-ms"
SLO_TPOT_MS = "x-slo-tpot-ms"
SLO_E2E_MS = "x-slo-e2e-ms"
COST_BUDGET = "x-cost-budget-usd"
PROMPT_TOKENS = "x-prompt-tokens"
OUTPUT_TOKENS = "x-output-tokens"
REQUEST_ID = "x-request-id"
INSTANCE = "x-sagellm-instance"
ATTEMPTS = "x-sagellm-attempts"

PRIORITY_NAMES: dict[str, int] = {p.name.lower(): int(p) for p in Priority}
_PRIORITY_VALUES: dict[str, int] = {**PRIORITY_NAMES, **{str(int(p)): int(p) for p in Priority}}
_MAX_TENANT = 128
_MAX_SESSION = 256
_MAX_REQUEST_ID = 128


class HeaderError(ValueError):
    """A request header holds a bad value; ``header`` and ``value`` say which."""

    def __init__(self, header: str, value: str, why: str) -> None:
        self.header = header
        self.value = value
        super().__init__(f"header {header}: {value!r} {why}")


@dataclass(frozen=True, slots=True)
class RequestHints:
    """The scheduling hints of one request, parsed from its headers."""

    priority: int = int(Priority.NORMAL)
    tenant: str = "default"
    session_id: str | None = None
    slo: SLO | None = None
    cost_budget_usd: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    request_id: str | None = None


_DEFAULT = RequestHints()
_KNOWN = (PRIORITY, TENANT, SESSION, SLO_TTFT_MS, SLO_TPOT_MS, SLO_E2E_MS, COST_BUDGET,
          PROMPT_TOKENS, OUTPUT_TOKENS, REQUEST_ID)
_KNOWN_SET = frozenset(_KNOWN)


def _positive_ms(header: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise HeaderError(header, value, "is not a number (milliseconds)") from None
    if not math.isfinite(x) or x <= 0:
        raise HeaderError(header, value, "must be a finite number of milliseconds > 0")
    return x / 1000.0


def _count(header: str, value: str) -> int:
    try:
        x = int(value)
    except ValueError:
        raise HeaderError(header, value, "is not an integer") from None
    if x < 1:
        raise HeaderError(header, value, "must be an integer >= 1")
    return x


def _text(header: str, value: str, limit: int) -> str:
    if not value or len(value) > limit or not value.isprintable():
        raise HeaderError(header, value, f"must be 1..{limit} printable characters")
    return value


def parse_hints(headers: Mapping[str, str]) -> RequestHints:
    """The hints in ``headers`` (case-insensitive mapping, e.g. aiohttp's CIMultiDict).

    Raises :class:`HeaderError` for a bad value. Costs a few dict lookups when no hint is
    present (the common case of a plain OpenAI client).
    """
    if (_KNOWN_SET.isdisjoint(headers) if type(headers) is dict  # lower-case names
            else not any(h in headers for h in _KNOWN)):
        return _DEFAULT
    priority = int(Priority.NORMAL)
    v = headers.get(PRIORITY)
    if v is not None:
        p = _PRIORITY_VALUES.get(v.strip().lower())
        if p is None:
            raise HeaderError(PRIORITY, v, "must be 0..4 or one of "
                              + ", ".join(PRIORITY_NAMES))
        priority = p
    tenant = headers.get(TENANT)
    tenant = "default" if tenant is None else _text(TENANT, tenant, _MAX_TENANT)
    session = headers.get(SESSION)
    if session is not None:
        session = _text(SESSION, session, _MAX_SESSION)
    bounds = []
    for h in (SLO_TTFT_MS, SLO_TPOT_MS, SLO_E2E_MS):
        v = headers.get(h)
        bounds.append(None if v is None else _positive_ms(h, v))
    slo = SLO(*bounds) if any(b is not None for b in bounds) else None
    budget = None
    v = headers.get(COST_BUDGET)
    if v is not None:
        try:
            budget = float(v)
        except ValueError:
            raise HeaderError(COST_BUDGET, v, "is not a number (US dollars)") from None
        if not math.isfinite(budget) or budget < 0:
            raise HeaderError(COST_BUDGET, v, "must be a finite number >= 0")
    v = headers.get(PROMPT_TOKENS)
    prompt = None if v is None else _count(PROMPT_TOKENS, v)
    v = headers.get(OUTPUT_TOKENS)
    output = None if v is None else _count(OUTPUT_TOKENS, v)
    rid = headers.get(REQUEST_ID)
    if rid is not None:
        rid = _text(REQUEST_ID, rid, _MAX_REQUEST_ID)
    return RequestHints(priority, tenant, session, slo, budget, prompt, output, rid)
