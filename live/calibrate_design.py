"""What ``sagellm calibrate`` asks an engine to do: probes of known batch composition.

Pure data, no I/O (:mod:`live.calibrate` sends the probes). Two kinds of probe, each giving
one profile row (format in :mod:`control_plane.perf.profile`):

- **prefill** ``P``: while one *background* request (a short prompt of ``BG_PROMPT``
  tokens, streamed, long output) is decoding, one request with a prompt of ``P`` token ids
  and ``max_tokens=1`` joins: one iteration prefills ``P`` tokens from an empty context
  (``prefill_attention = P * P``) next to one decoding sequence (``decode_seqs = 1``, its
  context as measured). Row time: the engine's prefill time of the joining request (from
  its scheduling to its first token). The engine is busy, as when serving: a lone request
  on an idle engine pays extra (waking threads, a cold batch), which the warm-up measures
  but no row holds.
- **decode** ``B x L``: ``B`` streamed requests with prompts of ``L`` token ids and long
  outputs (``ignore_eos``). Once the engine has reported all ``B`` first tokens, every
  iteration decodes exactly those ``B`` sequences; two scrapes a *window* apart (at least
  ``window_steps`` iterations and ``decode_probe_s`` seconds) give the mean iteration time
  over the window (the inter-token latency histogram: every sequence observes each
  iteration's full period, from one output to the next) and the sequences' total context
  (``B * L`` + the tokens generated so far, from the generation counter, averaged over the
  window). Then the requests are cancelled (the engine aborts them). Checks: in the window
  no request started or finished and each iteration scheduled exactly ``B`` tokens. (When
  the API server reports the run only after its end, the whole runs are measured instead,
  see :mod:`live.calibrate`.)

Prompts are distinct random token ids (never a prefix-cache hit); output lengths are exact.
Limits (:class:`EngineLimits`) drop infeasible points: ``P`` at most
``max_batched_tokens - 1`` and ``max_model_len - 1`` (longer sweep points become that cap);
``B * L <= max_batched_tokens`` (the ``B`` prefills fit one iteration: a short probe),
``B <= max_num_seqs``, ``L + 2 * window_steps <= max_model_len``, and the KV cache when
known. Interior points of each sweep alternate into a *held-out* set (the extremes always
train; on the decode grid, odd squares of a checkerboard that lie between two feasible
points in batch or in context), on which the fit is judged. :func:`schedule` runs the
design in ``repeats`` rounds, each in a seeded shuffled order, so slow drift of a shared
machine spreads over all points instead of biasing some.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BG_PROMPT", "DESIGNS", "Design", "EngineLimits", "Probe", "plan", "prompts", "schedule"]

TOKEN_LO, TOKEN_HI = 16, 4000   # token ids drawn from [TOKEN_LO, TOKEN_HI): valid in any vocab
BG_PROMPT = 16                  # prompt tokens of the background request of prefill probes


def _check_int(name: str, v: object, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}={v!r}: must be an integer >= {minimum}")


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """What the engine accepts. ``kv_capacity_tokens`` None: unknown (not checked)."""

    max_model_len: int = 2048
    max_batched_tokens: int = 2048
    max_num_seqs: int = 256
    kv_capacity_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_batched_tokens", "max_num_seqs"):
            _check_int(f"EngineLimits.{name}", getattr(self, name), 2 if name != "max_num_seqs"
                       else 1)
        if self.kv_capacity_tokens is not None:
            _check_int("EngineLimits.kv_capacity_tokens", self.kv_capacity_tokens, 1)

    @property
    def max_prompt(self) -> int:
        """Longest prompt prefilled in one iteration next to one decoding sequence."""
        return min(self.max_model_len - 1, self.max_batched_tokens - 1)


@dataclass(frozen=True, slots=True)
class Design:
    """The sweeps. ``window_steps``: fewest iterations in a decode probe's window."""

    prefill_tokens: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2047)
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    decode_contexts: tuple[int, ...] = (16, 128, 512, 1024)
    window_steps: int = 16
    repeats: int = 3

    def __post_init__(self) -> None:
        for name in ("prefill_tokens", "decode_batches", "decode_contexts"):
            vals = getattr(self, name)
            if not vals:
                raise ValueError(f"Design.{name}: must not be empty")
            for v in vals:
                _check_int(f"Design.{name}", v, 1)
        _check_int("Design.window_steps", self.window_steps, 1)
        _check_int("Design.repeats", self.repeats, 1)


DESIGNS: dict[str, Design] = {
    "standard": Design(),
    "quick": Design(prefill_tokens=(16, 64, 256, 512, 1024), decode_batches=(1, 2, 4, 8),
                    decode_contexts=(16, 256), window_steps=8, repeats=1),
}


@dataclass(frozen=True, slots=True)
class Probe:
    """One design point: ``batch`` requests of ``prompt_tokens`` each."""

    kind: str                # "prefill" | "decode"
    prompt_tokens: int
    batch: int = 1
    holdout: bool = False

    def features(self, context: float) -> tuple[float, float, float, float]:
        """The measured iteration's (prefill_tokens, prefill_attention, decode_seqs,
        decode_context): ``context`` is the background request's context (prefill) or the
        ``batch`` sequences' total context, mean over the window (decode)."""
        if self.kind == "prefill":   # batch prompts of prompt_tokens in one iteration
            p, k = self.prompt_tokens, self.batch
            return (float(k * p), float(k * p * p), 1.0, float(context))
        return (0.0, 0.0, float(self.batch), float(context))

    @property
    def label(self) -> str:
        if self.kind == "prefill":
            return (f"prefill {self.prompt_tokens}" if self.batch == 1
                    else f"prefill {self.batch}x{self.prompt_tokens}")
        return f"decode {self.batch}x{self.prompt_tokens}"


def _holdout_1d(n: int) -> list[bool]:
    """Alternate interior points of a sorted sweep of ``n`` into the held-out set."""
    return [0 < i < n - 1 and i % 2 == 1 for i in range(n)]


def plan(design: Design, limits: EngineLimits) -> list[Probe]:
    """The feasible probes of ``design`` under ``limits`` (prefill sweep, then decode grid)."""
    cap = limits.max_prompt
    pre = sorted({min(p, cap) for p in design.prefill_tokens})  # the cap ends a cut sweep
    probes = [Probe("prefill", p, holdout=h) for p, h in zip(pre, _holdout_1d(len(pre)),
                                                            strict=True)]
    n = 2 * design.window_steps
    kv = limits.kv_capacity_tokens

    def ok(b: int, ctx: int) -> bool:
        return (b * ctx <= limits.max_batched_tokens and b <= limits.max_num_seqs
                and ctx + n <= limits.max_model_len
                and (kv is None or b * (ctx + n) <= kv))

    batches = sorted(set(design.decode_batches))
    contexts = sorted(set(design.decode_contexts))
    grid = {(b, c) for b in batches for c in contexts if ok(b, c)}
    for b in batches:
        row = [c for c in contexts if (b, c) in grid]
        for c in row:
            col = [bb for bb in batches if (bb, c) in grid]
            # held out: odd checkerboard squares inside the grid in at least one direction
            interior = row[0] < c < row[-1] or col[0] < b < col[-1]
            hold = interior and (batches.index(b) + contexts.index(c)) % 2 == 1
            probes.append(Probe("decode", c, b, hold))
    return probes


def schedule(probes: Sequence[Probe], repeats: int, seed: int = 0) -> list[tuple[int, Probe]]:
    """(round, probe) pairs: ``repeats`` rounds of all probes, each round shuffled (seeded)."""
    rng = random.Random(seed)
    out = []
    for r in range(repeats):
        order = list(probes)
        rng.shuffle(order)
        out += [(r, p) for p in order]
    return out


def prompts(rng: random.Random, count: int, length: int) -> list[list[int]]:
    """``count`` prompts of ``length`` random token ids (distinct with overwhelming odds)."""
    return [[rng.randrange(TOKEN_LO, TOKEN_HI) for _ in range(length)] for _ in range(count)]
