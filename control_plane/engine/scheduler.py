"""One scheduling step of the engine model (vLLM v1 ``schedule`` semantics).

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

:class:`_Scheduler` holds the methods of :class:`control_plane.engine.Engine` that do this: a fast
path (every decode fits, prefills after the decodes, nothing preempted), the general path
request by request with preemption, admission from the waiting queue with prefix-cache
lookups and block registration, and freeing a request's blocks (preempt, finish). The
state itself is initialised in ``Engine.__init__``.
"""

from __future__ import annotations

import heapq

from control_plane.engine.seq import _DECODE, _DONE, _PREFILL, _WAITING, _cdiv, _Seq
from control_plane.perf.base import Batch


class _Scheduler:
    """Mixin of :class:`control_plane.engine.Engine`: scheduling, admission and
    preemption."""

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
            budget, t, a = self._admit(budget, sched, now)
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

    def _admit(self, budget: int, sched: list[_Seq], now: float) -> tuple[int, int, int]:
        """vLLM's waiting loop (the iteration starts at ``now``). Returns (budget left,
        prefill tokens, attention pairs)."""
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
            if seq.cached_tokens < 0:  # first admission
                seq.cached_tokens = hit_tokens
                if self.admissions is not None:
                    self.admissions.append((seq.rid, now))
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
            budget, t, a = self._admit(budget, sched, now)
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
    # -- releasing blocks ---------------------------------------------------------------
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
