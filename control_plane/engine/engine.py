"""Iteration-level model of one vLLM engine (v1 scheduler semantics), independent of any
clock: the caller says what time it is. The simulator runs it in SimPy time, the emulated
engine (``sagellm emulate``) on the event loop's clock.

:class:`Engine` is the facade; the model is split into

- :mod:`control_plane.engine.seq`: the per-request state (``_Seq``);
- :mod:`control_plane.engine.scheduler`: one scheduling step (running requests within the
  token budget, preemption by recompute, admission from the waiting queue with prefix-cache
  hits);
- :mod:`control_plane.engine.decode`: the implicit decode state and fast-forward of decode
  runs;
- :mod:`control_plane.engine.kv_cache`: the paged KV block pool and prefix cache; settings
  and outputs in :mod:`control_plane.engine.config`.

The iteration's time comes from an :class:`~control_plane.perf.base.IterationPredictor`.
Tokens come out at the end of an iteration: a request whose prompt (or recompute) completes
gets a token (its first token the first time), a decoding request one more; a request with
``expected_output_tokens`` tokens finishes and frees its blocks. A request added while an
iteration runs joins the next one (an iteration starting exactly when a request arrives has
already been scheduled without it; an idle engine starts when woken). Runs of identical
pure-decode iterations are planned at once (fast-forward, see
:mod:`control_plane.engine.decode`) with bit-identical results to planning them one by one.

Deliberate simplifications (vLLM behaviour not modelled):

- No ``max_model_len`` clamp, speculative decoding, async scheduling, encoder inputs, LoRA
  or KV connectors; pipeline parallelism is not scheduled as separate micro-batches: its
  ``pp`` batches in flight are folded into the iteration time
  (:class:`control_plane.perf.pipelined.PipelinedPredictor`, used by ``sim.hardware``);
  no stop strings: a request produces exactly
  ``expected_output_tokens`` tokens. Requests that could never fit (more blocks than the
  pool, or without chunked prefill more tokens than the budget) are refused by :meth:`fits`.
- Prefix identity comes from ``Request.prefix_hashes`` (hashes of ``hash_block_size``-token
  blocks, prefix-chained): engine block ``j`` is keyed by the hash of the hash block holding
  its last token (with ``j`` mixed in when the sizes differ), so sharing is detected at the
  trace's granularity. Prompt blocks beyond the hashes and generated-token blocks are unique
  to their request and only reusable by its own recompute after preemption.
- A full block whose key is already cached (two requests computing the same prefix in the
  same step without hitting each other) is not indexed a second time, and that request
  indexes no further blocks (vLLM keeps both copies under one hash).
- Ties in ``(priority, arrival)`` are broken by engine arrival order (vLLM: request id).
- The prefix-cache hit rate in :meth:`stats` is cumulative since the engine started.
"""

from __future__ import annotations

import heapq
from collections import deque

from control_plane.engine.config import EngineConfig, StepOutcome
from control_plane.engine.decode import _DecodeRuns
from control_plane.engine.kv_cache import BlockPool
from control_plane.engine.scheduler import _Scheduler
from control_plane.engine.seq import (
    _DECODE,
    _DONE,
    _LAST,
    _NONE,
    _PREFILL,
    _RUN,
    _STEP,
    _WAITING,
    _cdiv,
    _Seq,
)
from control_plane.perf.base import Batch, IterationPredictor
from control_plane.types import EngineStats, Request

__all__ = ["Engine", "EngineConfig", "StepOutcome"]


class Engine(_Scheduler, _DecodeRuns):
    """One engine: add requests, then alternate :meth:`start` (plan the next iteration or
    decode run from ``now``; returns its end time) and :meth:`complete` (at that end time:
    apply outputs). :meth:`step` does both; :meth:`add` / :meth:`abort` may come at any
    time and cut a run in progress. ``fast_forward=False`` plans one iteration at a time.
    ``track_admissions``: log ``(request id, iteration start)`` of every request's first
    admission in :attr:`admissions` (the caller drains it; vLLM's queue time)."""

    def __init__(self, config: EngineConfig, predictor: IterationPredictor, *,
                 fast_forward: bool = True, track_admissions: bool = False,
                 _exact: bool = False) -> None:
        self.config = config
        self._exact = _exact  # tests: always take the request-by-request path
        self.predictor = predictor
        self.fast_forward = fast_forward
        self._B = config.block_size
        self._priority = config.scheduling_policy == "priority"
        self._hash_bs = config.hash_block_size or config.block_size
        self.pool = BlockPool(config.num_gpu_blocks, config.block_size,
                              config.enable_prefix_caching)
        self._seqs: dict[str, _Seq] = {}
        self._running: dict[int, _Seq] = {}  # pos -> seq, running order
        self._prefilling: list[_Seq] = []  # running, not decoding, in running order
        self._wq: deque[_Seq] = deque()  # fcfs waiting queue
        self._wh: list[_Seq] = []  # priority waiting heap
        self.n_waiting = 0
        self._order = 0
        self._pos = 0
        # implicit decode state
        self.G = 0
        self._cnt = [0] * self._B
        self._n_dec = 0
        self._sum_base = 0
        self._fin: list[tuple[int, int, int, _Seq]] = []  # (fin_g, pos, epoch, seq)
        self._max_dec_pos = -1
        # anchor of consecutive identical pure-decode iterations
        self._anc_ok = False
        self._anc_t = self._anc_m = self._anc_ctx = 0
        self._last_end = None
        # the plan in progress
        self._kind = _NONE
        self.plan_start_s = 0.0
        self.plan_end_s: float | None = None
        self._k = self._done = self._g0 = self._m0 = self._n = 0
        self._blocked = False
        self._pref: list[_Seq] = []
        self._cum: list[int] = []
        self.last_batch: Batch | None = None
        # counters
        self.steps = 0
        self.preemptions = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.admissions: list[tuple[str, float]] | None = [] if track_admissions else None

    # -- queries ------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._kind != _NONE

    @property
    def prefilling(self) -> bool:
        """The iteration in progress computes prompt tokens."""
        b = self.last_batch
        return self._kind == _STEP and b is not None and b.prefill_tokens > 0

    @property
    def step_tokens(self) -> int:
        """Tokens each iteration of the plan in progress schedules: prompt tokens computed
        plus sequences decoding (0 when idle)."""
        if self._kind == _STEP and self.last_batch is not None:
            return self.last_batch.tokens
        return self._n if self._kind == _RUN else 0

    @property
    def num_running(self) -> int:
        return len(self._running)

    def has_work(self) -> bool:
        return bool(self._running) or self.n_waiting > 0

    def fits(self, request: Request) -> bool:
        """Whether the request can ever complete here (vLLM refuses longer requests)."""
        c = self.config
        tokens = request.prompt_tokens + request.expected_output_tokens - 1
        if _cdiv(tokens, self._B) > c.num_gpu_blocks:
            return False
        return c.enable_chunked_prefill or tokens <= c.max_num_batched_tokens

    def stats(self, now: float | None = None) -> EngineStats:
        """What the engine's metrics endpoint reports at ``now`` (inside a decode run: the
        iterations started by then have allocated their blocks)."""
        if now is not None:
            self.sync(now)
        pool = self.pool
        rate = (self.prefix_hits / self.prefix_queries
                if pool.caching and self.prefix_queries else None)
        return EngineStats(len(self._running), self.n_waiting,
                           pool.used / pool.num_blocks, rate)

    def output_tokens(self, request_id: str) -> int | None:
        """Output tokens the request has produced so far (tokens recomputed after a
        preemption are not produced again); None once it finished or was aborted, or if it
        never came. Only between :meth:`complete` and the next :meth:`start` (a decoding
        request's progress is implicit and counts the planned iterations)."""
        if self._kind != _NONE:
            raise RuntimeError("output_tokens() while an iteration is in progress")
        seq = self._seqs.get(request_id)
        if seq is None:
            return None
        if seq.state == _DECODE:
            return seq.base + self.G + 1 - seq.prompt
        return seq.num_tokens - seq.prompt

    def held_blocks(self) -> int:
        """Blocks held by requests, counted request by request (shared prefix blocks
        once), for invariant checks."""
        G, B = self.G, self._B
        total = refs = 0
        for s in self._running.values():
            held = _cdiv(s.base + G, B) if s.state == _DECODE else s.held
            total += held - s.kh
            refs += s.kh
        shared = [e[0] for e in self.pool._cache.values() if e[0]]
        assert sum(shared) == refs, f"cache references {sum(shared)} != holders {refs}"
        return total + len(shared)

    def check(self) -> None:
        """Raise AssertionError unless the KV accounting is consistent."""
        self.pool.check(self.held_blocks())
        assert len(self._running) <= self.config.max_num_seqs
        assert self.n_waiting == (len(self._wh) if self._priority else len(self._wq))

    # -- requests in --------------------------------------------------------------------
    def add(self, request: Request, now: float) -> None:
        """A request reaches the engine; it joins the iteration after the one in progress."""
        rid = request.request_id
        if rid in self._seqs:
            raise ValueError(f"request {rid!r} is already in the engine")
        seq = _Seq(request, self._order, now)
        self._order += 1
        self._seqs[rid] = seq
        if self._priority:
            head = self._wh[0] if self._wh else None
            heapq.heappush(self._wh, seq)
            new_head = head is None or seq < head
        else:
            self._wq.append(seq)
            new_head = self.n_waiting == 0
        self.n_waiting += 1
        if self._kind == _RUN and (new_head or not self._blocked):
            self._cut(now)

    def abort(self, request_id: str, now: float) -> bool:
        """Remove a request (its blocks are freed now). False if unknown."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        if self._kind == _RUN:
            self._cut(now)
        if seq.state == _WAITING:
            if self._priority:
                self._wh.remove(seq)
                heapq.heapify(self._wh)
            else:
                self._wq.remove(seq)
            self.n_waiting -= 1
            if seq.own_seg is not None:
                self.pool.orphan(seq.own_seg)
                seq.own_seg = None
        else:
            self._release(seq, None, 0)
            self._remove_running(seq)
        seq.state = _DONE
        return True

    # -- the run in progress ------------------------------------------------------------
    def sync(self, now: float) -> None:
        """Bring the KV state up to the iterations started by ``now``."""
        if self._kind == _RUN and self._done < self._k:
            self._materialize(self._started(now)[0])


    def retime(self, now: float) -> None:
        """The predictor's speed is about to change (e.g. a neighbour engine on the host
        became busy): a decode run in progress ends with the iteration in progress at
        ``now`` (timed as planned), and the next plan is timed afresh rather than continued
        from the run's anchor. A single planned iteration keeps its end. Check
        :attr:`plan_end_s` afterwards."""
        if self._kind == _RUN:
            self._cut(now)
        self._anc_ok = False

    # -- scheduling ---------------------------------------------------------------------
    def step(self, now: float) -> StepOutcome | None:
        """Plan from ``now`` and complete at once (no arrivals in between)."""
        end = self.start(now)
        return None if end is None else self.complete(end)

    def start(self, now: float) -> float | None:
        """Schedule the next iteration (or run of identical decode iterations) starting at
        ``now``; return its end time, or None when there is nothing to do."""
        if self._kind != _NONE:
            raise RuntimeError("start() while an iteration is in progress")
        while self._running or self.n_waiting:
            if self._schedule(now):
                return self.plan_end_s
        return None

    # -- outputs ------------------------------------------------------------------------
    def complete(self, now: float) -> StepOutcome:
        """The planned stretch ends at ``now`` (= the end time start/add returned)."""
        kind = self._kind
        if kind == _NONE:
            raise RuntimeError("complete() without an iteration in progress")
        start, k = self.plan_start_s, self._k
        first: list[tuple[str, float]] = []
        finished: list[tuple[str, float, int, int, int]] = []
        if kind == _RUN:
            self._materialize(k)
            self._anc_m = self._m0 + k
            self.steps += k - 1
        else:
            done = None
            for seq in self._pref:
                if seq.state != _PREFILL or seq.computed < seq.num_tokens:
                    continue  # aborted, or prefill continues
                seq.num_tokens += 1
                if seq.first_token_s is None:
                    seq.first_token_s = now
                    first.append((seq.rid, now))
                if seq.num_tokens - seq.prompt >= seq.out_total:
                    if done is None:
                        done = []
                    done.append(seq)
                else:
                    self._to_decode(seq)
            self._pref = []
            if done is not None:  # freed below with the decodes, in running order
                for seq in done:
                    seq.state = _LAST
                    seq.epoch += 1
                    heapq.heappush(self._fin, (self.G, seq.pos, seq.epoch, seq))
        fin, G = self._fin, self.G
        while fin and fin[0][0] <= G:
            _, _, epoch, seq = heapq.heappop(fin)
            if epoch != seq.epoch or (seq.state != _DECODE and seq.state != _LAST):
                continue
            finished.append((seq.rid, now, seq.out_total, max(seq.cached_tokens, 0),
                             seq.preemptions))
            self._finish(seq)
        self._kind = _NONE
        self._last_end = now
        self.plan_end_s = None
        return StepOutcome(start, now, k, first, finished)
