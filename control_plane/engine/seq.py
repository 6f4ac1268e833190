"""Per-request state inside the engine model (:mod:`control_plane.engine.engine`).

A :class:`_Seq` is one request from the moment it reaches the engine until it finishes or
is aborted: its lifecycle state (waiting, prefilling, decoding, finishing), its progress in
tokens, its KV blocks (``held``, the leading prefix-cache blocks ``kh`` among them, the
blocks of its own kept after a preemption ``own_seg``) and its outputs. It is ordered for
the priority waiting queue by ``(priority, arrival, engine arrival order)``.

A decoding request's progress is implicit: its computed tokens are ``base + G`` for the
engine's step counter ``G`` (see :mod:`control_plane.engine.decode`), so ``computed`` and ``held``
are stale while it decodes.
"""

from __future__ import annotations

from control_plane.types import Request

_WAITING, _PREFILL, _DECODE, _DONE, _LAST = 0, 1, 2, 3, 4  # _LAST: finishing at prefill
_NONE, _STEP, _RUN = 0, 1, 2  # plan kinds: none, one general iteration, a decode run


class _Seq:
    """One request inside the engine. For a decoding request, computed tokens are
    ``base + G`` (``G``: the engine's step counter) and ``computed``/``held`` are stale."""

    __slots__ = ("arrival", "base", "cached_tokens", "computed", "epoch", "fin_g",
                 "first_token_s", "held", "hit", "keys", "kh", "nkeys", "num_tokens", "order",
                 "out_total", "own_seg", "pos", "preemptions", "prio", "prompt", "req", "rid",
                 "state")

    def __init__(self, req: Request, order: int, now: float) -> None:
        self.req = req
        self.rid = req.request_id
        self.order = order
        self.prio = req.priority
        self.arrival = now
        self.prompt = req.prompt_tokens
        self.out_total = req.expected_output_tokens
        self.state = _WAITING
        self.num_tokens = req.prompt_tokens
        self.computed = 0
        self.held = 0
        self.base = 0
        self.pos = -1
        self.keys = None  # block keys of the prompt's cacheable full blocks (lazy)
        self.nkeys = 0
        self.kh = 0  # leading keyed blocks held
        self.own_seg = None
        self.fin_g = 0
        self.epoch = 0
        self.first_token_s = None
        self.cached_tokens = -1
        self.preemptions = 0
        self.hit = None  # (pool version, keyed hits, free among them)

    def __lt__(self, other: _Seq) -> bool:  # priority waiting queue order
        return (self.prio, self.arrival, self.order) < (other.prio, other.arrival, other.order)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)
