"""Iteration-level model of one vLLM engine (v1 scheduler semantics), independent of SimPy.

Each iteration (``schedule`` in vLLM's ``vllm/v1/core/sched/scheduler.py``):

1. *Running* requests first, in running order, within a token budget of
   ``max_num_batched_tokens``: a decoding request takes 1 token, a request still prefilling
   takes the rest of its prompt (capped by ``long_prefill_token_threshold`` when > 0, and by
   the remaining budget: chunked prefill). Its new KV blocks are allocated; when the pool
   cannot supply them, a victim is preempted *by recompute* (blocks freed, progress reset,
   back to the front of the waiting queue): the last running request under ``fcfs``, the
   one with the largest ``(priority, arrival)`` under ``priority`` (an already scheduled
   victim gives its tokens back), until the request fits or is itself the victim.
2. *Waiting* requests next, only if nothing was preempted, while there is budget and fewer
   than ``max_num_seqs`` run: the head of the waiting queue (FIFO under ``fcfs``, lowest
   ``(priority, arrival)`` under ``priority``) gets its prefix-cache hits and as much of the
   rest of its tokens as the budget allows (without chunked prefill it must fit whole), if
   its blocks can be allocated; otherwise admission stops (head-of-line).

The iteration's time comes from an :class:`~control_plane.perf.base.IterationPredictor`.
Tokens come out at the end of an iteration: a request whose prompt (or recompute) completes
gets a token (its first token the first time), a decoding request one more; a request with
``expected_output_tokens`` tokens finishes and frees its blocks. A request added while an
iteration runs joins the next one (an iteration starting exactly when a request arrives has
already been scheduled without it; an idle engine starts when woken).

Fast-forward: when an iteration is pure decode and admitted nothing, the following ones are
identical except for growing contexts until a request finishes, a KV block would be missing,
or a request arrives. The engine then plans ``k`` iterations at once, timed in closed form by
``predictor.decode_run_s``. Decode requests are kept implicitly (their computed tokens are
``base + G`` for a global step counter ``G``, bucketed by ``base mod block_size`` for block
crossings, with a heap of finishing steps), so a run costs O(block_size + log n), not O(n k).
Consecutive pure-decode iterations over the same set of requests are timed from a common
anchor (``anchor + decode_run_s(n, ctx, m)``) in both modes, so fast-forward and
step-by-step runs give bit-identical times; a request arriving inside a run *cuts* it at the
end of the iteration in progress (:meth:`Engine.add`).

Deliberate simplifications (vLLM behaviour not modelled):

- No ``max_model_len`` clamp, speculative decoding, async scheduling, encoder inputs, LoRA,
  KV connectors or pipeline parallelism; no stop strings: a request produces exactly
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
from bisect import bisect_right
from collections import deque
from itertools import accumulate

from control_plane.perf.base import Batch, IterationPredictor
from control_plane.types import EngineStats, Request
from sim.engine_config import EngineConfig, StepOutcome
from sim.kv_cache import BlockPool

__all__ = ["Engine", "EngineConfig", "StepOutcome"]

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


class Engine:
    """One engine: add requests, then alternate :meth:`start` (plan the next iteration or
    decode run from ``now``; returns its end time) and :meth:`complete` (at that end time:
    apply outputs). :meth:`step` does both; :meth:`add` / :meth:`abort` may come at any
    time and cut a run in progress. ``fast_forward=False`` plans one iteration at a time."""

    def __init__(self, config: EngineConfig, predictor: IterationPredictor, *,
                 fast_forward: bool = True, _exact: bool = False) -> None:
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

    # -- queries ------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._kind != _NONE

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
    def _bound(self, j: int) -> float:
        """End of iteration ``j`` (1-based) of the decode run in progress."""
        if j == 0:
            return self.plan_start_s
        return self._anc_t + self.predictor.decode_run_s(self._n, self._anc_ctx, self._m0 + j)

    def _started(self, now: float) -> tuple[int, float]:
        """(iterations of the run started at or before ``now``, end of the last of them).
        The interpolated guess is usually right: two predictor calls."""
        k, end = self._k, self.plan_end_s
        if k == 1 or now >= end:
            return k, end
        start = self.plan_start_s
        bound = self._bound
        j = min(k, max(1, int((now - start) / (end - start) * k) + 1))
        lo, hi = 1, k
        while True:  # find bound(j - 1) <= now < bound(j)
            if j > 1 and bound(j - 1) > now:
                hi = j - 1
            else:
                b = end if j == k else bound(j)
                if now < b:
                    return j, b
                lo = j + 1
            j = (lo + hi) // 2

    def _materialize(self, j: int) -> None:
        """Allocate the blocks of the run's iterations up to ``j`` (they have started)."""
        done = self._done
        if j <= done:
            return
        B, cum, n = self._B, self._cum, self._n
        need = ((j // B) * n + cum[j % B]) - ((done // B) * n + cum[done % B])
        if need:
            self.pool.allocate(need)
        self.G += j - done
        self._done = j

    def sync(self, now: float) -> None:
        """Bring the KV state up to the iterations started by ``now``."""
        if self._kind == _RUN and self._done < self._k:
            self._materialize(self._started(now)[0])

    def _cut(self, now: float) -> None:
        """End the run with the iteration in progress at ``now``."""
        j, end = self._started(now)
        self._materialize(j)
        if j < self._k:
            self._k = j
            self.plan_end_s = end

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

    def _schedule(self, now: float) -> bool:
        cfg, B, G = self.config, self._B, self.G
        pool = self.pool
        budget = cfg.max_num_batched_tokens
        n = self._n_dec
        pref = self._prefilling
        # -- fast path: all decodes first, nothing preempted ----------------------------
        need = self._cnt[(-G) % B] if n else 0
        chunks = None
        if (n <= budget and need <= pool.free and not self._exact
                and (not pref or self._max_dec_pos < pref[0].pos)):
            budget -= n
            avail = pool.free - need
            chunks = []
            thr = cfg.long_prefill_token_threshold
            for seq in pref:
                if budget <= 0:
                    break
                num_new = seq.num_tokens - seq.computed
                if 0 < thr < num_new:
                    num_new = thr
                if num_new > budget:
                    num_new = budget
                nb = _cdiv(seq.computed + num_new, B) - seq.held
                if nb > avail:
                    chunks = None
                    break
                avail -= nb
                budget -= num_new
                chunks.append((seq, num_new, nb))
        if chunks is None:
            return self._schedule_slow(now)
        if need:
            pool.allocate(need)
        ptok = patt = 0
        sched = []
        for seq, num_new, nb in chunks:
            if nb:
                pool.allocate(nb)
                seq.held += nb
            c = seq.computed
            if seq.kh < seq.nkeys:
                self._register(seq, c + num_new)
            ptok += num_new
            patt += num_new * (c + num_new)
            seq.computed = c + num_new
            sched.append(seq)
        if budget > 0 and self.n_waiting:
            budget, t, a = self._admit(budget, sched)
            ptok += t
            patt += a
        self.G = G + 1
        self.steps += 1
        if not sched:  # pure decode
            if not n:
                raise RuntimeError("engine cannot make progress (nothing schedulable)")
            self._plan_decode(now, G, n, need)
            return True
        ctx = self._sum_base + n * G
        batch = Batch(ptok, patt, n, ctx)
        self._plan_step(now, batch, sched)
        return True

    def _plan_step(self, now: float, batch: Batch, sched: list[_Seq]) -> None:
        self.last_batch = batch
        self._anc_ok = False
        self._kind = _STEP
        self._pref = sched
        self._k = 1
        self.plan_start_s = now
        self.plan_end_s = now + self.predictor.iteration_s(batch)

    def _plan_decode(self, now: float, g0: int, n: int, need1: int) -> None:
        """The iteration just scheduled (at step counter ``g0``) is pure decode over the
        same requests as before: time it from the anchor and extend it to a run."""
        ctx = self._sum_base + n * g0
        if not (self._anc_ok and self._last_end == now and self._n == n):
            self._anc_t = now
            self._anc_ctx = ctx
            self._anc_m = 0
            self._anc_ok = True
        self._m0 = self._anc_m
        self._n = n
        self._g0 = g0
        self._kind = _RUN
        self.plan_start_s = now
        self._blocked = self.n_waiting > 0
        k = 1
        if self.fast_forward:
            fin = self._fin
            while fin and fin[0][2] != fin[0][3].epoch:
                heapq.heappop(fin)
            k_fin = fin[0][0] - g0
            if k_fin > 1:
                B, cnt = self._B, self._cnt
                r = (-g0) % B  # cum[t]: blocks the first t iterations need
                self._cum = cum = [0, *accumulate(cnt[r::-1] + cnt[:r:-1])]
                free0 = self.pool.free + need1  # before the first iteration's blocks
                q = free0 // n
                k_kv = q * B + bisect_right(cum, free0 - q * n, 0, B) - 1
                k = min(k_fin, k_kv)
        self._k = k
        self._done = 1
        self.last_batch = None
        self.plan_end_s = self._bound(k)

    def _register(self, seq: _Seq, upto_tokens: int) -> None:
        """Index the prompt's keyed blocks that ``upto_tokens`` computed tokens fill."""
        last = min(upto_tokens // self._B, seq.nkeys)
        pool, keys = self.pool, seq.keys
        kh = seq.kh
        while kh < last:
            if not pool.register(keys[kh]):
                seq.nkeys = kh  # a concurrent duplicate: index nothing further
                break
            kh += 1
        seq.kh = kh

    def _keys(self, seq: _Seq) -> None:
        hashes = seq.req.prefix_hashes
        B = self._B
        if not hashes or not self.pool.caching:
            seq.keys = ()
            seq.nkeys = 0
            return
        nfull = seq.prompt // B
        H = self._hash_bs
        if H == B:
            keys = hashes[:nfull]
        else:
            keys = []
            nh = len(hashes)
            for j in range(nfull):
                k = ((j + 1) * B - 1) // H
                if k >= nh:
                    break
                keys.append(hash((hashes[k], j)))
        seq.keys = keys
        seq.nkeys = len(keys)

    def _admit(self, budget: int, sched: list[_Seq]) -> tuple[int, int, int]:
        """vLLM's waiting loop. Returns (budget left, prefill tokens, attention pairs)."""
        cfg, B, pool = self.config, self._B, self.pool
        max_seqs = cfg.max_num_seqs
        thr = cfg.long_prefill_token_threshold
        chunked = cfg.enable_chunked_prefill
        running = self._running
        ptok = patt = 0
        while self.n_waiting and budget > 0:
            if len(running) >= max_seqs:
                break
            seq = self._wh[0] if self._priority else self._wq[0]
            if seq.keys is None:
                self._keys(seq)
            cap = (seq.num_tokens - 1) // B
            h = ev = 0
            if seq.nkeys:
                hit = seq.hit
                if hit is not None and hit[0] == pool.version:
                    h, ev = hit[1], hit[2]
                else:
                    h, ev = pool.lookup(seq.keys, seq.nkeys, cap)
                    seq.hit = (pool.version, h, ev)
            own = 0
            oseg = seq.own_seg
            if oseg is not None and h == seq.nkeys:
                own = min(oseg[0], cap - h)
            hit_blocks = h + own
            hit_tokens = hit_blocks * B
            num_new = seq.num_tokens - hit_tokens
            if 0 < thr < num_new:
                num_new = thr
            if not chunked and num_new > budget:
                break
            if num_new > budget:
                num_new = budget
            nb = _cdiv(hit_tokens + num_new, B) - hit_blocks
            if nb > pool.free - ev - own:
                break
            # admit
            if self._priority:
                heapq.heappop(self._wh)
            else:
                self._wq.popleft()
            self.n_waiting -= 1
            if h:
                pool.touch(seq.keys, h)
            if oseg is not None:
                if own:
                    pool.take_own(oseg, own)
                else:
                    pool.orphan(oseg)
                seq.own_seg = None
            if nb:
                pool.allocate(nb)
            seq.held = hit_blocks + nb
            seq.kh = h
            seq.computed = hit_tokens
            if seq.cached_tokens < 0:
                seq.cached_tokens = hit_tokens
            self.prefix_queries += seq.num_tokens
            self.prefix_hits += hit_tokens
            if h < seq.nkeys:
                self._register(seq, hit_tokens + num_new)
            seq.state = _PREFILL
            seq.pos = self._pos
            self._pos += 1
            running[seq.pos] = seq
            self._prefilling.append(seq)
            budget -= num_new
            ptok += num_new
            patt += num_new * (hit_tokens + num_new)
            seq.computed = hit_tokens + num_new
            sched.append(seq)
        return budget, ptok, patt

    def _schedule_slow(self, now: float) -> bool:
        """The general iteration, request by request in running order (preemption,
        prefills ahead of decodes, budget exhausted before every decode is served)."""
        cfg, B, G, pool = self.config, self._B, self.G, self.pool
        budget = cfg.max_num_batched_tokens
        thr = cfg.long_prefill_token_threshold
        run = list(self._running.values())
        num: dict[_Seq, int] = {}  # scheduled -> tokens
        dec_new: dict[_Seq, int] = {}  # scheduled decodes -> blocks allocated now
        pre_c: dict[_Seq, int] = {}  # scheduled prefills -> computed before
        preempted = False
        i = 0
        while i < len(run) and budget > 0:
            seq = run[i]
            dec = seq.state == _DECODE
            if dec:
                num_new = 1
            else:
                num_new = seq.num_tokens - seq.computed
                if 0 < thr < num_new:
                    num_new = thr
                if num_new > budget:
                    num_new = budget
            while True:
                if dec:
                    nb = 1 if (seq.base + G) % B == 0 else 0
                else:
                    nb = _cdiv(seq.computed + num_new, B) - seq.held
                if nb <= pool.free:
                    victim = None
                    break
                if self._priority:
                    victim = max(run, key=lambda r: (r.prio, r.arrival))
                    if victim in num:
                        budget += num.pop(victim)
                        i -= 1
                else:
                    victim = run[-1]
                run.remove(victim)
                self._preempt(victim, dec_new.pop(victim, 0))
                pre_c.pop(victim, None)
                preempted = True
                if victim is seq:
                    break
            if victim is seq:
                break
            if nb:
                pool.allocate(nb)
            if dec:
                dec_new[seq] = nb
            else:
                seq.held += nb
                pre_c[seq] = seq.computed
                if seq.kh < seq.nkeys:
                    self._register(seq, seq.computed + num_new)
            num[seq] = num_new
            budget -= num_new
            i += 1
        # requests not reached: decodes among them make no progress this iteration
        for seq in run[i:]:
            if seq.state == _DECODE:
                self._skip(seq)
        ptok = patt = ndec = ctx = 0
        sched = []
        for seq, num_new in num.items():
            if seq.state == _DECODE:
                ndec += 1
                ctx += seq.base + G
            else:
                c = pre_c[seq]
                ptok += num_new
                patt += num_new * (c + num_new)
                seq.computed = c + num_new
                sched.append(seq)
        if not preempted and budget > 0 and self.n_waiting:
            budget, t, a = self._admit(budget, sched)
            ptok += t
            patt += a
        self._max_dec_pos = max((s.pos for s in self._running.values() if s.state == _DECODE),
                                default=-1)
        self.G = G + 1
        self.steps += 1
        if not num and not sched:
            return False  # everything preempted: schedule again at once
        pure = (not sched and not preempted and ndec == self._n_dec and ndec
                and len(run) == ndec)
        if pure:
            self._plan_decode(now, G, ndec, sum(dec_new.values()))
            return True
        self._plan_step(now, Batch(ptok, patt, ndec, ctx), sched)
        return True

    # -- state changes ------------------------------------------------------------------
    def _to_decode(self, seq: _Seq) -> None:
        base = seq.computed - self.G
        seq.base = base
        seq.state = _DECODE
        self._cnt[base % self._B] += 1
        self._n_dec += 1
        self._sum_base += base
        seq.epoch += 1
        seq.fin_g = self.G + seq.out_total - (seq.num_tokens - seq.prompt)
        heapq.heappush(self._fin, (seq.fin_g, seq.pos, seq.epoch, seq))
        if seq.pos > self._max_dec_pos:
            self._max_dec_pos = seq.pos
        self._prefilling.remove(seq)
        self._anc_ok = False

    def _skip(self, seq: _Seq) -> None:
        """A decoding request was not scheduled in an iteration (G moves on without it)."""
        B = self._B
        self._cnt[seq.base % B] -= 1
        seq.base -= 1
        self._cnt[seq.base % B] += 1
        self._sum_base -= 1
        seq.fin_g += 1
        seq.epoch += 1
        heapq.heappush(self._fin, (seq.fin_g, seq.pos, seq.epoch, seq))
        self._anc_ok = False

    def _remove_running(self, seq: _Seq) -> None:
        del self._running[seq.pos]
        if seq.state == _DECODE:
            self._cnt[seq.base % self._B] -= 1
            self._n_dec -= 1
            self._sum_base -= seq.base
            seq.epoch += 1
            self._anc_ok = False
        else:
            self._prefilling.remove(seq)

    def _release(self, seq: _Seq, owner: _Seq | None, extra: int) -> None:
        """Free a running request's blocks (``extra``: decode blocks allocated in the
        iteration being scheduled)."""
        B = self._B
        if seq.state == _DECODE:
            c = seq.base + self.G
            held = _cdiv(c, B) + extra
        else:
            c = seq.computed
            held = seq.held
        kh = seq.kh
        own_full = max(0, c // B - kh) if owner is not None else 0
        plain = held - kh - own_full
        seg = self.pool.release(seq.keys, kh, own_full, plain, owner)
        seq.own_seg = seg
        seq.kh = 0
        seq.held = 0

    def _preempt(self, seq: _Seq, extra: int) -> None:
        if seq.state == _DECODE:
            seq.num_tokens = seq.base + self.G + 1
        self._release(seq, seq, extra)
        self._remove_running(seq)
        seq.state = _WAITING
        seq.computed = 0
        seq.hit = None
        seq.preemptions += 1
        self.preemptions += 1
        if self._priority:
            heapq.heappush(self._wh, seq)
        else:
            self._wq.appendleft(seq)
        self.n_waiting += 1

    def _finish(self, seq: _Seq) -> None:
        self._release(seq, None, 0)
        self._remove_running(seq)
        seq.state = _DONE
        del self._seqs[seq.rid]

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
