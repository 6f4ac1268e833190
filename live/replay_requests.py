"""What :mod:`live.replay` sends for one request: settings, prompt token ids, headers, body.

Pure functions of the request and the :class:`ReplayConfig` (no I/O); the rules are in
:mod:`live.replay`'s documentation. Deterministic across processes: prompt ids come from
BLAKE2b of the request's prefix hashes (per block) and of its id (the rest).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control_plane.prefix import DEFAULT_BLOCK_SIZE
from control_plane.types import Request
from live.headers import (
    COST_BUDGET,
    OUTPUT_TOKENS,
    PRIORITY,
    PROMPT_TOKENS,
    REQUEST_ID,
    SESSION,
    SLO_E2E_MS,
    SLO_TPOT_MS,
    SLO_TTFT_MS,
    TENANT,
)

__all__ = [
    "PROMPT_MODES",
    "ReplayConfig",
    "clip_lengths",
    "prompt_text",
    "prompt_token_ids",
    "request_body",
    "request_headers",
]

PROMPT_MODES = ("tokens", "text")
_WORDS_TEXT = ("the of and to in is you that it he was for on are as with his they at be this "
                "from have or by one had not but what all were when we there can an your which "
                "their said if do will each about how up out them then she many some so these "
                "would other into has more her two like him see time could no make than first "
                "been its who now people my made over did down only way find use may water long "
                "little very after words called just where most know")
_WORDS = tuple(_WORDS_TEXT.split())


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """How to replay. ``time_scale``: speed-up (a request is sent at ``arrival_s /
    time_scale``); ``max_concurrency``: requests in flight at most (later sends wait);
    ``model``: the model name (None: the first of ``GET /v1/models``); ``extra_body``:
    more body fields (e.g. ``{"temperature": 0}``)."""

    time_scale: float = 1.0
    max_concurrency: int = 256
    model: str | None = None
    stream: bool = True
    prompt_mode: str = "tokens"
    vocab_size: int = 4096
    first_token_id: int = 8
    block_size: int = DEFAULT_BLOCK_SIZE
    max_model_len: int | None = None
    id_prefix: str = ""
    request_timeout_s: float = 600.0   # longest silence of the server while answering
    connect_timeout_s: float = 10.0
    keep_token_times: bool = False
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("time_scale", "request_timeout_s", "connect_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    v > 0 and math.isfinite(v)):
                raise ValueError(f"ReplayConfig.{name}={v!r}: must be a finite number > 0")
        for name in ("max_concurrency", "vocab_size", "block_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ReplayConfig.{name}={v!r}: must be an integer >= 1")
        if not 0 <= self.first_token_id < self.vocab_size:
            raise ValueError(f"ReplayConfig.first_token_id={self.first_token_id!r}: must be "
                             f"in 0..vocab_size-1={self.vocab_size - 1}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"ReplayConfig.max_model_len={self.max_model_len!r}: must be "
                             ">= 2 (or None)")
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"ReplayConfig.prompt_mode={self.prompt_mode!r}: must be one of "
                             f"{PROMPT_MODES}")


def _ids_from(seed: bytes, n: int, lo: int, span: int) -> list[int]:
    """``n`` ids in ``[lo, lo + span)`` from blake2b in counter mode over ``seed``."""
    out: list[int] = []
    counter = 0
    while len(out) < n:
        d = hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
        out += [lo + int.from_bytes(d[i:i + 4], "little") % span for i in range(0, 64, 4)]
    del out[n:]
    return out


def _block_seed(h: int) -> bytes:
    return b"blk" + (h & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")


def prompt_token_ids(request: Request, prompt_tokens: int | None = None, *,
                     block_size: int = DEFAULT_BLOCK_SIZE, vocab_size: int = 4096,
                     first_token_id: int = 8) -> list[int]:
    """The request's prompt as ``prompt_tokens`` (default: the request's) token ids.

    Block ``i`` (``block_size`` ids) is a function of ``request.prefix_hashes[i]`` only;
    the rest of the prompt is a function of the request id. Deterministic across processes.
    """
    n = request.prompt_tokens if prompt_tokens is None else prompt_tokens
    span = vocab_size - first_token_id
    ids: list[int] = []
    for h in request.prefix_hashes[: n // block_size]:
        ids += _ids_from(_block_seed(h), block_size, first_token_id, span)
    if len(ids) < n:
        seed = b"req" + request.request_id.encode()
        ids += _ids_from(seed, n - len(ids), first_token_id, span)
    return ids


def prompt_text(token_ids: Sequence[int]) -> str:
    """Synthetic text of one common word per token id (same ids, same text)."""
    words = _WORDS
    return " ".join(words[t % len(words)] for t in token_ids)


def clip_lengths(r: Request, max_model_len: int | None) -> tuple[int, int, bool]:
    """(prompt tokens, output tokens, clipped) of what is sent."""
    prompt, out = r.prompt_tokens, max(1, r.expected_output_tokens)
    if max_model_len is None or prompt + out <= max_model_len:
        return prompt, out, False
    out = min(out, max_model_len - 1)
    return min(prompt, max_model_len - out), out, True


def request_headers(r: Request, cfg: ReplayConfig, output_tokens: int,
                    prompt_tokens: int | None = None) -> dict[str, str]:
    """The scheduling-hint headers of ``r`` (see :mod:`live.headers`)."""
    h = {REQUEST_ID: cfg.id_prefix + r.request_id, PRIORITY: str(int(r.priority)),
         TENANT: r.tenant, OUTPUT_TOKENS: str(output_tokens)}
    if prompt_tokens is not None:
        h[PROMPT_TOKENS] = str(prompt_tokens)
    if r.session_id:
        h[SESSION] = r.session_id
    if r.slo is not None:
        for name, v in ((SLO_TTFT_MS, r.slo.ttft_s), (SLO_TPOT_MS, r.slo.tpot_s),
                        (SLO_E2E_MS, r.slo.e2e_s)):
            if v is not None:
                h[name] = f"{v * 1000:.6g}"
    if r.cost_budget_usd is not None:
        h[COST_BUDGET] = f"{r.cost_budget_usd:.10g}"
    return h


def request_body(r: Request, cfg: ReplayConfig, model: str, prompt_tokens: int,
                 output_tokens: int) -> dict[str, Any]:
    """The ``/v1/completions`` body of ``r`` (prompt, exact output length, streaming)."""
    ids = prompt_token_ids(r, prompt_tokens, block_size=cfg.block_size,
                           vocab_size=cfg.vocab_size, first_token_id=cfg.first_token_id)
    body: dict[str, Any] = {
        "model": model, "prompt": ids if cfg.prompt_mode == "tokens" else prompt_text(ids),
        "max_tokens": output_tokens, "ignore_eos": True, "stream": cfg.stream}
    if cfg.stream:
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    body.update(cfg.extra_body)
    return body
