"""Implicit decode state and fast-forward of decode runs for the engine model.

Fast-forward: when an iteration is pure decode and admitted nothing, the following ones are
identical except for growing contexts until a request finishes, a KV block would be missing,
or a request arrives. The engine then plans ``k`` iterations at once, timed in closed form by
``predictor.decode_run_s``. Decode requests are kept implicitly (their computed tokens are
``base + G`` for a global step counter ``G``, bucketed by ``base mod block_size`` for block
crossings, with a heap of finishing steps), so a run costs O(block_size + log n), not O(n k).
Consecutive pure-decode iterations over the same set of requests are timed from a common
anchor (``anchor + decode_run_s(n, ctx, m)``) in both modes, so fast-forward and
step-by-step runs give bit-identical times; a request arriving inside a run *cuts* it at the
end of the iteration in progress (:meth:`control_plane.engine.Engine.add`).

:class:`_DecodeRuns` holds the methods of :class:`control_plane.engine.Engine` that plan, time,
materialize and cut a run, and keep the implicit decode state (``G``, the per-residue
counts, the finishing heap) up to date as requests enter and leave decoding. The state
itself is initialised in ``Engine.__init__``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from itertools import accumulate

from control_plane.engine.seq import _DECODE, _RUN, _STEP, _Seq
from control_plane.perf.base import Batch


class _DecodeRuns:
    """Mixin of :class:`control_plane.engine.Engine`: decode runs and the implicit decode
    state."""

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
        if k == 1 or now >= end or self._done >= k:  # (all started: a run cut by retime)
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

    def _cut(self, now: float) -> None:
        """End the run with the iteration in progress at ``now``."""
        j, end = self._started(now)
        self._materialize(j)
        if j < self._k:
            self._k = j
            self.plan_end_s = end


    # -- planning -----------------------------------------------------------------------
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

    # -- decode state changes -----------------------------------------------------------
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
