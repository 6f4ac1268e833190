"""A literal, slow reference of the engine model, for randomized cross-checks.

Written the way vLLM's v1 scheduler and KV cache manager are: every request holds a list
of block ids, free blocks sit one by one in an LRU queue, cached blocks are found through a
key -> block dict, every iteration loops over every request, and the iteration time is
``predictor.iteration_s`` of the batch. It implements the same documented model as
:mod:`control_plane.engine` (own blocks reusable only by the same request's recompute, no
second copy of an already cached key) without any of its shortcuts (implicit decode state,
segments, fast paths, fast-forward). Times agree to float rounding.
"""

from __future__ import annotations

from collections import OrderedDict

from control_plane.perf.base import Batch


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class RefReq:
    def __init__(self, r, order, now):
        self.r = r
        self.rid = r.request_id
        self.prompt = r.prompt_tokens
        self.out = r.expected_output_tokens
        self.prio = r.priority
        self.arrival = now
        self.order = order
        self.num_tokens = r.prompt_tokens
        self.computed = 0
        self.blocks: list[int] = []
        self.keys = None
        self.kh = 0
        self.decoding = False
        self.first = None
        self.cached = -1
        self.preemptions = 0
        self.own_keys: set = set()


class RefEngine:
    def __init__(self, cfg, predictor):
        self.cfg = cfg
        self.pred = predictor
        self.B = cfg.block_size
        n = cfg.num_gpu_blocks
        self.free_q: OrderedDict[int, None] = OrderedDict((b, None) for b in range(n))
        self.ref = [0] * n
        self.key_of: list[object] = [None] * n
        self.cache: dict[object, int] = {}
        self.waiting: list[RefReq] = []
        self.running: list[RefReq] = []
        self.order = 0
        self.outputs = []

    # -- blocks ---------------------------------------------------------------------
    def num_free(self):
        return len(self.free_q)

    def alloc(self, n):
        assert n <= len(self.free_q)
        out = []
        for _ in range(n):
            b, _ = self.free_q.popitem(last=False)
            k = self.key_of[b]
            if k is not None:
                del self.cache[k]
                self.key_of[b] = None
            self.ref[b] = 1
            out.append(b)
        return out

    def free_blocks(self, req, own_upto):
        """Release in reverse order; own full blocks below ``own_upto`` keep own keys."""
        for j in range(len(req.blocks) - 1, -1, -1):
            b = req.blocks[j]
            if req.kh <= j < own_upto:  # held blocks past the keyed prefix are keyless
                k = ("own", req.rid, j)
                assert k not in self.cache and self.key_of[b] is None
                self.cache[k] = b
                self.key_of[b] = k
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free_q[b] = None
        req.blocks = []
        req.kh = 0

    def prompt_keys(self, req):
        hashes = req.r.prefix_hashes
        B = self.B
        H = self.cfg.hash_block_size or B
        if not hashes or not self.cfg.enable_prefix_caching:
            return []
        keys = []
        for j in range(req.prompt // B):
            k = ((j + 1) * B - 1) // H
            if k >= len(hashes):
                break
            keys.append(hashes[k] if H == B else hash((hashes[k], j)))
        return keys

    def register(self, req, upto_tokens):
        last = min(upto_tokens // self.B, len(req.keys))
        while req.kh < last:
            k = req.keys[req.kh]
            if k in self.cache:
                req.keys = req.keys[:req.kh]  # a duplicate: index nothing further
                break
            b = req.blocks[req.kh]
            self.cache[k] = b
            self.key_of[b] = k
            req.kh += 1

    # -- requests -----------------------------------------------------------------------
    def add(self, r, now):
        req = RefReq(r, self.order, now)
        self.order += 1
        self.waiting.append(req)
        if self.cfg.scheduling_policy == "priority":
            self.waiting.sort(key=lambda q: (q.prio, q.arrival, q.order))

    def has_work(self):
        return bool(self.running or self.waiting)

    def preempt(self, req):
        c = req.computed
        self.free_blocks(req, c // self.B if self.cfg.enable_prefix_caching else 0)
        req.computed = 0
        req.decoding = False
        req.preemptions += 1
        if self.cfg.scheduling_policy == "priority":
            self.waiting.append(req)
            self.waiting.sort(key=lambda q: (q.prio, q.arrival, q.order))
        else:
            self.waiting.insert(0, req)

    # -- one iteration ------------------------------------------------------------------
    def schedule(self):
        cfg, B = self.cfg, self.B
        budget = cfg.max_num_batched_tokens
        thr = cfg.long_prefill_token_threshold
        sched: dict[RefReq, int] = {}
        before: dict[RefReq, int] = {}
        preempted = []
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = req.num_tokens - req.computed
            if 0 < thr < num_new:
                num_new = thr
            num_new = min(num_new, budget)
            victim = None
            while True:
                need = _cdiv(req.computed + num_new, B) - len(req.blocks)
                if need <= self.num_free():
                    victim = None
                    break
                if cfg.scheduling_policy == "priority":
                    victim = max(self.running, key=lambda q: (q.prio, q.arrival))
                    if victim in sched:
                        budget += sched.pop(victim)
                        before.pop(victim)
                        i -= 1
                else:
                    victim = self.running[-1]
                self.running.remove(victim)
                self.preempt(victim)
                preempted.append(victim)
                if victim is req:
                    break
            if victim is req:
                break
            req.blocks += self.alloc(need)
            if not req.decoding and req.kh < len(req.keys):
                self.register(req, req.computed + num_new)
            sched[req] = num_new
            before[req] = req.computed
            budget -= num_new
            i += 1
        if not preempted:
            while self.waiting and budget > 0:
                if len(self.running) >= cfg.max_num_seqs:
                    break
                req = self.waiting[0]
                if req.keys is None:
                    req.keys = self.prompt_keys(req)
                cap = (req.num_tokens - 1) // B
                hits = []
                for j in range(cap):
                    k = req.keys[j] if j < len(req.keys) else ("own", req.rid, j)
                    b = self.cache.get(k)
                    if b is None:
                        break
                    hits.append(b)
                h = len(hits)
                hit_tokens = h * B
                num_new = req.num_tokens - hit_tokens
                if 0 < thr < num_new:
                    num_new = thr
                if not cfg.enable_chunked_prefill and num_new > budget:
                    break
                num_new = min(num_new, budget)
                need = _cdiv(hit_tokens + num_new, B) - h
                evictable = sum(1 for b in hits if self.ref[b] == 0)
                if need > self.num_free() - evictable:
                    break
                self.waiting.pop(0)
                for b in hits:
                    if self.ref[b] == 0:
                        del self.free_q[b]
                    self.ref[b] += 1
                nk = min(h, len(req.keys))
                self.drop_own_beyond(req, h)  # own blocks not taken back: unreachable
                req.blocks = hits + self.alloc(need)
                req.kh = nk
                for b in hits[nk:]:  # own blocks taken back: keyless while held
                    del self.cache[self.key_of[b]]
                    self.key_of[b] = None
                req.computed = hit_tokens
                if req.cached < 0:
                    req.cached = hit_tokens
                if req.kh < len(req.keys):
                    self.register(req, hit_tokens + num_new)
                self.running.append(req)
                sched[req] = num_new
                before[req] = hit_tokens
                budget -= num_new
        ptok = patt = ndec = ctx = 0
        for req, n in sched.items():
            c = before[req]
            if req.decoding:
                ndec += 1
                ctx += c
            else:
                ptok += n
                patt += n * (c + n)
            req.computed = c + n
        return sched, Batch(ptok, patt, ndec, ctx)

    def drop_own_beyond(self, req, h):
        """Own keyed blocks this admission does not take are unreachable: keyless."""
        for k in list(self.cache):
            if isinstance(k, tuple) and k[0] == "own" and k[1] == req.rid and k[2] >= h:
                b = self.cache.pop(k)
                self.key_of[b] = None

    def finish_step(self, sched, end):
        out = []
        for req in list(sched):
            if req not in self.running or req.computed < req.num_tokens:
                continue
            req.num_tokens += 1
            req.decoding = True
            if req.first is None:
                req.first = end
                out.append(("first", req.rid, end))
            if req.num_tokens - req.prompt >= req.out:
                self.running.remove(req)
                self.free_blocks(req, 0)
                out.append(("finish", req.rid, end, req.cached, req.preemptions))
        return out


def ref_run(cfg, predictor, requests):
    """Drive the reference with the simulator's arrival semantics: a request arriving
    during an iteration joins the next one; one arriving exactly when an iteration starts
    joins the one after; an idle engine starts with everything that has arrived."""
    eng = RefEngine(cfg, predictor)
    reqs = sorted(requests, key=lambda r: r.arrival_s)
    res: dict[str, dict] = {}
    i, t = 0, 0.0
    while i < len(reqs) or eng.has_work():
        if not eng.has_work():
            t = max(t, reqs[i].arrival_s)
            while i < len(reqs) and reqs[i].arrival_s <= t:
                eng.add(reqs[i], reqs[i].arrival_s)
                i += 1
        sched, batch = eng.schedule()
        if not sched:
            continue  # everything preempted: schedule again at once
        end = t + predictor.iteration_s(batch)
        while i < len(reqs) and reqs[i].arrival_s < end:
            eng.add(reqs[i], reqs[i].arrival_s)
            i += 1
        for ev in eng.finish_step(sched, end):
            if ev[0] == "first":
                res.setdefault(ev[1], {})["first"] = ev[2]
            else:
                res[ev[1]].update(finish=ev[2], cached=ev[3], preemptions=ev[4])
        t = end
        assert sum(1 for b in eng.ref if b) + len(eng.free_q) == cfg.num_gpu_blocks
    return res
