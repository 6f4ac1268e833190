"""Prefix-sharing workloads with KV block hashes, for prefix-aware routing and caching studies.

Prompts are made of synthetic token ids (``base + counter``; every distinct piece of text
gets fresh ids, ``base`` is drawn from the seed) and ``prefix_hashes`` is
:func:`control_plane.prefix.block_hashes` of a request's prompt tokens: one chained hash per
*full* block of ``block_size`` tokens (a trailing partial block has none). Two requests share
their leading ``k`` hashes exactly when their first ``k * block_size`` tokens are equal.

- :func:`shared_system_prompts`: ``n_prompts`` system prompts, picked per request by Zipf
  (``p_k ~ (k + 1) ** -zipf_s``) or uniform popularity, followed by a unique user message.
- :func:`few_shot_templates`: one instruction shared by all templates + per-template
  examples (long, shared by the template's requests) + a short unique query.
- :func:`multi_turn_sessions`: each session's turn ``t`` prompt is the whole conversation so
  far (optional shared system prompt, every earlier user message and model output) plus a
  new user message, so its hashes extend the previous turn's. Open loop: turn ``t + 1``
  arrives an exponential think time (mean ``think_time_s``) after turn ``t``'s arrival.

``meta["ideal_prefix_reuse"]`` is the fraction of prompt blocks whose hash appeared in an
earlier request (arrival order): the hit ratio of an unbounded prefix cache;
``meta["ideal_prefix_reuse_tokens"]`` the same in tokens (hit blocks x block_size over all
prompt tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from control_plane.prefix import DEFAULT_BLOCK_SIZE, block_hashes
from workloads._params import Seed, as_rng, check_count, check_number
from workloads.describe import ideal_prefix_reuse
from workloads.lengths import Fixed, LengthDist, LogNormal, Uniform
from workloads.trace import Trace

__all__ = ["few_shot_templates", "multi_turn_sessions",
           "shared_system_prompts"]

_KIND_SYSTEM, _KIND_FEW_SHOT, _KIND_SESSION = 1, 2, 3
# default lengths (tokens)
_SYSTEM, _USER, _OUTPUT = Uniform(200, 2000), LogNormal(200, 1.0, 4096), LogNormal(128, 0.7, 1024)
_EXAMPLE, _QUERY = Uniform(150, 400), LogNormal(60, 0.6, 512)
_SHORT_OUTPUT = LogNormal(64, 0.7, 512)
_TURNS, _MESSAGE, _ANSWER = Uniform(2, 8), LogNormal(150, 0.9, 2048), LogNormal(200, 0.7, 2048)


class _Tokens:
    """Fresh synthetic token ids: ``base + counter`` (kind in the top bits)."""

    def __init__(self, kind: int, rng: np.random.Generator) -> None:
        self.next = (kind << 56) | (int(rng.integers(1 << 40)) << 12)

    def take(self, n: int) -> list[int]:
        start = self.next
        self.next += n
        return list(range(start, start + n))


def _dist(name: str, value: int | LengthDist) -> LengthDist:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return Fixed(check_count(name, value, minimum=1))
    if not callable(getattr(value, "sample", None)):
        raise ValueError(f"{name}={value!r}: must be a token count or a length distribution")
    return value


def _arrivals(arrivals: np.ndarray) -> np.ndarray:
    a = np.asarray(arrivals, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"arrivals: must be one-dimensional, got shape {a.shape}")
    return a


def _popularity(popularity: str | Sequence[float], k: int, zipf_s: float) -> np.ndarray:
    if isinstance(popularity, str):
        if popularity == "uniform":
            w = np.ones(k)
        elif popularity == "zipf":
            w = np.arange(1, k + 1, dtype=np.float64) ** -check_number("zipf_s", zipf_s)
        else:
            raise ValueError(f"popularity={popularity!r}: must be 'zipf', 'uniform' or weights")
    else:
        w = np.asarray(popularity, dtype=np.float64)
        if w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"popularity={popularity!r}: need {k} weights >= 0, positive sum")
    return w / w.sum()


def _trace(arrivals: np.ndarray, prompt: np.ndarray, output: np.ndarray, hashes: list,
           block_size: int, name: str, meta: dict[str, Any], **cols: Any) -> Trace:
    col = np.empty(len(hashes), dtype=object)
    col[:] = hashes
    blocks, tokens = ideal_prefix_reuse(hashes, prompt.tolist(), block_size)
    meta.update(block_size=block_size, ideal_prefix_reuse=blocks,
                ideal_prefix_reuse_tokens=tokens)
    return Trace(arrivals, prompt, output, prefix_hashes=col, block_size=block_size,
                 name=name, meta=meta, **cols)


def _shared_prefix(arrivals: np.ndarray, prefixes: list[list[int]], p: np.ndarray,
                   unique: LengthDist, output: LengthDist, tokens: _Tokens, block_size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Requests ``prefixes[k] + fresh unique tokens``; k drawn with probabilities ``p``."""
    n = len(arrivals)
    kinds = rng.choice(len(prefixes), size=n, p=p)
    own = np.maximum(np.asarray(unique.sample(n, rng), dtype=np.int64), 1)
    out = np.maximum(np.asarray(output.sample(n, rng), dtype=np.int64), 1)
    heads = [block_hashes(t, block_size) for t in prefixes]
    tails = [t[len(h) * block_size:] for t, h in zip(prefixes, heads, strict=True)]
    hashes = []
    for k, m in zip(kinds.tolist(), own.tolist(), strict=True):
        head = heads[k]
        hashes.append(head + block_hashes(tails[k] + tokens.take(m), block_size,
                                          parent=head[-1] if head else None))
    lens = np.array([len(t) for t in prefixes], dtype=np.int64)
    return kinds, lens[kinds] + own, out, hashes


def shared_system_prompts(arrivals: np.ndarray, *, n_prompts: int = 8,
                          system_tokens: int | Sequence[int] | LengthDist = _SYSTEM,
                          user_tokens: int | LengthDist = _USER,
                          output_tokens: int | LengthDist = _OUTPUT,
                          popularity: str | Sequence[float] = "zipf", zipf_s: float = 1.0,
                          block_size: int = DEFAULT_BLOCK_SIZE, seed: Seed = 0,
                          name: str = "system-prompts") -> Trace:
    """Each request: one of ``n_prompts`` system prompts + a unique user message.

    ``system_tokens``: one length for all, ``n_prompts`` lengths, or a distribution sampled
    once per prompt. Draws: base, prompt lengths, prompt choice, user and output lengths.
    """
    arrivals = _arrivals(arrivals)
    k = check_count("n_prompts", n_prompts, minimum=1)
    block_size = check_count("block_size", block_size, minimum=1)
    rng = as_rng(seed)
    tokens = _Tokens(_KIND_SYSTEM, rng)
    if isinstance(system_tokens, Sequence):
        lens = [check_count(f"system_tokens[{i}]", v, minimum=1)
                for i, v in enumerate(system_tokens)]
        if len(lens) != k:
            raise ValueError(f"system_tokens: {len(lens)} lengths for n_prompts={k}")
    else:
        lens = _dist("system_tokens", system_tokens).sample(k, rng).tolist()
    p = _popularity(popularity, k, zipf_s)
    prefixes = [tokens.take(m) for m in lens]
    kinds, prompt, out, hashes = _shared_prefix(
        arrivals, prefixes, p, _dist("user_tokens", user_tokens),
        _dist("output_tokens", output_tokens), tokens, block_size, rng)
    meta = {"generator": "shared_system_prompts", "system_tokens": lens,
            "prompt_counts": np.bincount(kinds, minlength=k).tolist()}
    return _trace(arrivals, prompt, out, hashes, block_size, name, meta)


def few_shot_templates(arrivals: np.ndarray, *, n_templates: int = 4,
                       instruction_tokens: int = 300, examples: int = 5,
                       example_tokens: int | LengthDist = _EXAMPLE,
                       query_tokens: int | LengthDist = _QUERY,
                       output_tokens: int | LengthDist = _SHORT_OUTPUT,
                       popularity: str | Sequence[float] = "uniform", zipf_s: float = 1.0,
                       block_size: int = DEFAULT_BLOCK_SIZE, seed: Seed = 0,
                       name: str = "few-shot") -> Trace:
    """Each request: instruction (shared by all) + its template's ``examples`` examples +
    a unique short query. Draws: base, example lengths (template-major), template choice,
    query and output lengths."""
    arrivals = _arrivals(arrivals)
    k = check_count("n_templates", n_templates, minimum=1)
    n_ex = check_count("examples", examples)
    instr = check_count("instruction_tokens", instruction_tokens)
    block_size = check_count("block_size", block_size, minimum=1)
    rng = as_rng(seed)
    tokens = _Tokens(_KIND_FEW_SHOT, rng)
    ex_lens = _dist("example_tokens", example_tokens).sample(k * n_ex, rng).reshape(k, n_ex)
    p = _popularity(popularity, k, zipf_s)
    head = tokens.take(instr)
    prefixes = [head + tokens.take(int(ex_lens[j].sum())) for j in range(k)]
    kinds, prompt, out, hashes = _shared_prefix(
        arrivals, prefixes, p, _dist("query_tokens", query_tokens),
        _dist("output_tokens", output_tokens), tokens, block_size, rng)
    meta = {"generator": "few_shot_templates", "instruction_tokens": instr,
            "template_tokens": [len(t) for t in prefixes],
            "template_counts": np.bincount(kinds, minlength=k).tolist()}
    return _trace(arrivals, prompt, out, hashes, block_size, name, meta)


def multi_turn_sessions(starts: np.ndarray, *, turns: int | LengthDist = _TURNS,
                        think_time_s: float = 30.0, system_tokens: int = 0,
                        user_tokens: int | LengthDist = _MESSAGE,
                        output_tokens: int | LengthDist = _ANSWER,
                        max_prompt_tokens: int | None = None,
                        block_size: int = DEFAULT_BLOCK_SIZE, seed: Seed = 0,
                        name: str = "sessions") -> Trace:
    """Sessions starting at ``starts`` (s), ``turns`` turns each; see the module docstring.

    ``prompt_t = system + sum_{u < t} (user_u + output_u) + user_t`` tokens. A turn whose
    prompt would exceed ``max_prompt_tokens`` ends its session (counted in
    ``meta["truncated_sessions"]`` / ``meta["dropped_turns"]``). ``system_tokens > 0`` adds
    one system prompt shared by all sessions. ``session_id`` is ``session-<j>`` (``j`` the
    index in ``starts``). Draws: base, turns per session, think gaps, user and output lengths.
    """
    starts = _arrivals(starts)
    think = check_number("think_time_s", think_time_s, strict=False)
    sys_len = check_count("system_tokens", system_tokens)
    if max_prompt_tokens is not None:
        check_count("max_prompt_tokens", max_prompt_tokens, minimum=1)
    block_size = check_count("block_size", block_size, minimum=1)
    rng = as_rng(seed)
    tokens = _Tokens(_KIND_SESSION, rng)
    n = len(starts)
    counts = np.maximum(_dist("turns", turns).sample(n, rng), 1)
    total = int(counts.sum())
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    gaps = rng.exponential(think, total) if think > 0 else np.zeros(total)
    gaps[first] = 0.0
    user = np.maximum(_dist("user_tokens", user_tokens).sample(total, rng), 1).tolist()
    out = np.maximum(_dist("output_tokens", output_tokens).sample(total, rng), 1).tolist()
    system = tokens.take(sys_len)
    sys_hashes = block_hashes(system, block_size)
    arrival, prompt, output, session, hashes_col = [], [], [], [], []
    truncated = dropped = 0
    for j in range(n):
        t = float(starts[j])
        # hashes of the context's full blocks; tail = its tokens after them
        hashes, tail, length = sys_hashes, system[len(sys_hashes) * block_size:], sys_len
        pending: list[int] = []  # the previous turn's output, not yet in a prompt
        for r in range(int(first[j]), int(first[j] + counts[j])):
            t += float(gaps[r])
            length += len(pending) + user[r]
            if max_prompt_tokens is not None and length > max_prompt_tokens:
                truncated += 1
                dropped += int(first[j] + counts[j]) - r
                break
            seq = tail + pending + tokens.take(user[r])
            new = block_hashes(seq, block_size, parent=hashes[-1] if hashes else None)
            hashes, tail = hashes + new, seq[len(new) * block_size:]
            arrival.append(t)
            prompt.append(length)
            output.append(out[r])
            session.append(f"session-{j}")
            hashes_col.append(hashes)
            pending = tokens.take(out[r])
    order = np.argsort(np.asarray(arrival, dtype=np.float64), kind="stable")
    sess = np.empty(len(session), dtype=object)
    sess[:] = session
    meta = {"generator": "multi_turn_sessions", "sessions": n, "turns": len(arrival),
            "system_tokens": sys_len, "think_time_s": think, "truncated_sessions": truncated,
            "dropped_turns": dropped}
    return _trace(np.asarray(arrival, dtype=np.float64)[order],
                  np.asarray(prompt, dtype=np.int64)[order],
                  np.asarray(output, dtype=np.int64)[order],
                  [hashes_col[i] for i in order.tolist()], block_size, name, meta,
                  session_id=sess[order])
