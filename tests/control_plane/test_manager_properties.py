"""Property test: over random event sequences no request is lost or dispatched twice.

Hypothesis drives submit / complete (ok, retryable failure, fatal failure) / observe /
health changes / ticks / policy and router switches against every registered policy and
router. A model tracks each request from the actions alone; after every step it must agree
with the manager, every rejection must carry a reason, and no limit may be broken.
"""

from __future__ import annotations

import os

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from control_plane import (
    ControlPlane,
    Dispatch,
    EngineStats,
    Health,
    Outcome,
    PolicySwitch,
    Queued,
    Reject,
    Retry,
)
from control_plane.policies import POLICIES
from control_plane.routing import ROUTERS
from tests.builders import req, specs

N_INSTANCES = 4


class ManagerMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(POLICIES.names()),
                router=st.sampled_from(ROUTERS.names()),
                max_queue=st.integers(1, 12), seed=st.integers(0, 3))
    def setup(self, policy, router, max_queue, seed):
        self.specs = specs(N_INSTANCES, max_inflight=2, kv_capacity_tokens=4000)
        self.m = ControlPlane(self.specs, policy=policy, router=router,
                              config={"max_queue": max_queue, "seed": seed,
                                      "max_queue_wait_s": 50.0, "health_timeout_s": 30.0})
        self.now = 0.0
        self.next_id = 0
        self.where: dict[str, str] = {}  # rid -> "queued" | instance id | "done" | "rejected"
        self.health = {s.instance_id: Health.UP for s in self.specs}

    # -- applying actions to the model --------------------------------------------------
    def apply(self, actions, submitted=None):
        retrying = set()
        for a in actions:
            if isinstance(a, Dispatch):
                rid = a.request.request_id
                state = self.where.get(rid)
                assert state in ("queued", None) or rid in retrying, \
                    f"{rid} dispatched twice (was {state})"
                assert rid == submitted or state == "queued" or rid in retrying
                assert self.health[a.instance_id] is Health.UP, \
                    f"{rid} dispatched to {a.instance_id} which is {self.health[a.instance_id]}"
                self.where[rid] = a.instance_id
                retrying.discard(rid)
            elif isinstance(a, Queued):
                rid = a.request.request_id
                assert self.where.get(rid) is None or rid in retrying, f"{rid} queued twice"
                self.where[rid] = "queued"
                retrying.discard(rid)
            elif isinstance(a, Reject):
                rid = a.request.request_id
                assert a.detail and a.cause.value, "a rejection without a reason"
                state = self.where.get(rid)
                assert state in ("queued", None) or rid in retrying, \
                    f"{rid} rejected while {state}"
                self.where[rid] = "rejected"
                retrying.discard(rid)
            elif isinstance(a, Retry):
                rid = a.request.request_id
                assert self.where.get(rid) == a.from_instance, \
                    f"retry of {rid} from {a.from_instance} but it was {self.where.get(rid)}"
                assert a.reason
                retrying.add(rid)
                self.where[rid] = "retrying"
            else:
                assert isinstance(a, PolicySwitch) and a.cause
        assert not retrying, f"retried requests left nowhere: {retrying}"

    # -- rules --------------------------------------------------------------------------
    @rule(dt=st.floats(0, 5), priority=st.integers(0, 4), tenant=st.sampled_from("ab"),
          prompt=st.integers(1, 3000), output=st.integers(1, 200),
          ttft=st.one_of(st.none(), st.floats(0.05, 20)),
          session=st.one_of(st.none(), st.sampled_from(["s1", "s2", "s3"])),
          prefix=st.lists(st.integers(0, 5), max_size=4))
    def submit(self, dt, priority, tenant, prompt, output, ttft, session, prefix):
        self.now += dt
        rid = f"r{self.next_id}"
        self.next_id += 1
        r = req(rid, self.now, prompt=prompt, output=output, priority=priority, tenant=tenant,
                session=session, prefix=tuple(prefix), ttft=ttft)
        self.apply(self.m.submit(r, self.now), submitted=rid)
        assert rid in self.where, f"{rid} got no decision"

    @precondition(lambda self: any(w.startswith("i") for w in self.where.values()))
    @rule(dt=st.floats(0, 5), pick=st.integers(0, 10_000),
          kind=st.sampled_from(["ok", "ok", "ok", "retry", "fatal"]))
    def complete(self, dt, pick, kind):
        self.now += dt
        inflight = sorted(r for r, w in self.where.items() if w.startswith("i"))
        rid = inflight[pick % len(inflight)]
        outcome = {"ok": Outcome(ttft_s=0.1, e2e_s=1.0, output_tokens=10),
                   "retry": Outcome(ok=False, retryable=True, error="reset"),
                   "fatal": Outcome(ok=False, error="400")}[kind]
        if kind != "retry":
            self.where[rid] = "done"
        self.apply(self.m.complete(rid, self.now, outcome))

    @precondition(lambda self: any(w == "queued" or w.startswith("i")
                                   for w in self.where.values()))
    @rule(dt=st.floats(0, 5), pick=st.integers(0, 10_000))
    def cancel(self, dt, pick):
        self.now += dt
        live = sorted(r for r, w in self.where.items() if w == "queued" or w.startswith("i"))
        rid = live[pick % len(live)]
        was = self.where[rid]
        actions = self.m.cancel(rid, self.now)
        if was == "queued":
            assert isinstance(actions[0], Reject) and actions[0].cause.value == "cancelled"
        else:
            self.where[rid] = "done"
        self.apply(actions)

    @rule(inst=st.integers(0, N_INSTANCES - 1), running=st.integers(0, 4),
          waiting=st.integers(0, 4), kv=st.floats(0, 1))
    def observe(self, inst, running, waiting, kv):
        iid = f"i{inst}"
        before = self.m.cluster[iid].health
        actions = self.m.observe(iid, EngineStats(running, waiting, kv), self.now)
        # a report from an instance the health timeout took down brings it back up
        after = self.m.cluster[iid].health
        assert after is before or (before is Health.DOWN and after is Health.UP)
        self.health[iid] = after
        self.apply(actions)

    @rule(inst=st.integers(0, N_INSTANCES - 1),
          health=st.sampled_from([Health.UP, Health.DOWN, Health.DRAINING]))
    def set_health(self, inst, health):
        iid = f"i{inst}"
        self.health[iid] = health
        self.apply(self.m.set_health(iid, health, self.now))

    @rule(dt=st.floats(0, 40))
    def tick(self, dt):
        self.now += dt
        before = {v.instance_id: v.health for v in self.m.cluster.instances}
        actions = self.m.tick(self.now)
        # health timeouts mark instances down inside tick (before it dispatches anything)
        for v in self.m.cluster.instances:
            assert before[v.instance_id] is v.health or v.health is Health.DOWN
            self.health[v.instance_id] = v.health
        self.apply(actions)

    @rule(name=st.sampled_from(POLICIES.names()))
    def set_policy(self, name):
        self.apply(self.m.set_policy(name, self.now))

    @rule(name=st.sampled_from(ROUTERS.names()))
    def set_router(self, name):
        self.apply(self.m.set_router(name, self.now))

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def model_agrees(self):
        queued = {r for r, w in self.where.items() if w == "queued"}
        inflight = {r: w for r, w in self.where.items() if w.startswith("i")}
        assert set(self.m.queued_ids()) == queued
        assert len(self.m.queued_ids()) == len(queued), "a request queued twice"
        assert {r: self.m.instance_of(r) for r in self.m.inflight_ids()} == inflight
        assert self.m.cluster.queued == len(queued) == len(self.m.policy)
        assert sum(self.m.cluster.queued_by_priority) == len(queued)
        assert len(self.where) == self.next_id, "a submitted request is unaccounted for"

    @invariant()
    def limits_hold(self):
        for v in self.m.cluster.instances:
            assert 0 <= v.inflight <= v.spec.max_inflight
            assert v.inflight == sum(1 for w in self.where.values() if w == v.instance_id)
            if v.health is Health.DOWN:
                assert v.inflight == 0


# SAGELLM_PROPERTY_EXAMPLES=3000 for a deeper hunt than the CI default
ManagerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SAGELLM_PROPERTY_EXAMPLES", "200")),
    stateful_step_count=60, deadline=None)
TestManagerProperties = ManagerMachine.TestCase
