"""ControlPlane behaviour: dispatch, queueing, bounds, shedding, retries, health, switching."""

from __future__ import annotations

import pytest

from control_plane import (
    ConfigError,
    ControlPlane,
    ControlPlaneError,
    Dispatch,
    DuplicateRequestError,
    EngineStats,
    Health,
    Outcome,
    PolicySwitch,
    Queued,
    Reject,
    RejectCause,
    Retry,
    UnknownInstanceError,
    UnknownRequestError,
)
from control_plane.routing import Router
from tests.builders import req, specs


class FirstFit(Router):
    """Test router: the first candidate in cluster order."""

    name = "first_fit"

    def route(self, request, candidates, cluster, rng):
        return candidates[0].instance_id if candidates else None


class Rogue(Router):
    name = "rogue"

    def route(self, request, candidates, cluster, rng):
        return "i0"


def cp(n=2, max_inflight=1, policy="fifo", router=None, **config):
    return ControlPlane(specs(n, max_inflight=max_inflight), policy=policy,
                        router=router or FirstFit(), config=config)


def kinds(actions):
    out = []
    for a in actions:
        if isinstance(a, Dispatch):
            out.append(("dispatch", a.request.request_id, a.instance_id, a.attempt))
        elif isinstance(a, Queued):
            out.append(("queued", a.request.request_id))
        elif isinstance(a, Reject):
            out.append(("reject", a.request.request_id, a.cause.value))
        elif isinstance(a, Retry):
            out.append(("retry", a.request.request_id, a.from_instance))
        elif isinstance(a, PolicySwitch):
            out.append(("switch", a.from_policy, a.to_policy))
    return out


def test_dispatch_until_full_then_queue_then_drain_in_order():
    m = cp()
    assert kinds(m.submit(req("a"), 0)) == [("dispatch", "a", "i0", 1)]
    assert kinds(m.submit(req("b"), 0)) == [("dispatch", "b", "i1", 1)]
    assert kinds(m.submit(req("c", 1), 1)) == [("queued", "c")]
    assert kinds(m.submit(req("d", 2), 2)) == [("queued", "d")]
    assert m.queued_ids() == ["c", "d"]
    assert kinds(m.complete("b", 3)) == [("dispatch", "c", "i1", 1)]
    assert kinds(m.complete("a", 4)) == [("dispatch", "d", "i0", 1)]
    assert m.cluster.queued == 0
    assert m.counters.completed == 2 and m.counters.dispatched == 4


def test_per_priority_bound_rejects_with_reason():
    m = cp(n=1, max_queue_per_priority=(5, 5, 1, 5, 5))
    m.submit(req("a"), 0)
    m.submit(req("b"), 0)
    [rej] = m.submit(req("c"), 0)
    assert isinstance(rej, Reject) and rej.cause is RejectCause.QUEUE_FULL
    assert rej.reason == "queue_full: priority 2 queue holds 1 requests (limit 1)"
    assert m.counters.rejected == {"queue_full": 1}


@pytest.mark.parametrize(
    ("policy", "queued_priorities", "incoming", "expected"),
    [
        # background (4) is sheddable by default: the newest one goes first
        ("fifo", (2, 4, 4), 1, [("reject", "q2", "shed"), ("queued", "new")]),
        # nothing sheddable and fifo does not preempt: the incoming request is refused
        ("fifo", (2, 3, 3), 1, [("reject", "new", "queue_full")]),
        # an incoming background request cannot evict another background request
        ("fifo", (4, 4, 4), 4, [("reject", "new", "queue_full")]),
    ],
)
def test_full_queue_sheds_sheddable_classes_first(policy, queued_priorities, incoming,
                                                  expected):
    m = cp(n=1, policy=policy, max_queue=3)
    m.submit(req("busy"), 0)
    for k, p in enumerate(queued_priorities):
        m.submit(req(f"q{k}", priority=p), 0)
    assert kinds(m.submit(req("new", priority=incoming), 1)) == expected
    assert len(m.queued_ids()) == 3 or expected[0][1] == "new"


def test_instance_down_retries_in_flight_elsewhere():
    m = cp(n=3, max_inflight=2)
    for k in range(4):
        m.submit(req(f"r{k}"), 0)
    assert {m.instance_of(f"r{k}") for k in range(4)} == {"i0", "i1"}
    acts = kinds(m.set_health("i0", Health.DOWN, 5))
    assert acts == [("retry", "r0", "i0"), ("queued", "r0"), ("retry", "r1", "i0"),
                    ("queued", "r1"), ("dispatch", "r0", "i2", 2), ("dispatch", "r1", "i2", 2)]
    # nothing goes to the down instance any more
    assert kinds(m.submit(req("x"), 6)) == [("queued", "x")]
    assert m.counters.retried == 2


def test_retryable_failure_avoids_failed_instance_and_exhausts():
    m = cp(n=3, max_inflight=4, max_attempts=2)
    m.submit(req("a"), 0)
    acts = kinds(m.complete("a", 1, Outcome(ok=False, retryable=True, error="conn reset")))
    assert acts == [("retry", "a", "i0"), ("queued", "a"), ("dispatch", "a", "i1", 2)]
    acts = m.complete("a", 2, Outcome(ok=False, retryable=True, error="conn reset"))
    assert kinds(acts) == [("retry", "a", "i1"), ("reject", "a", "retries_exhausted")]
    assert acts[-1].detail == ("a failed on i0, i1 after 2 attempt(s) (max_attempts 2); "
                               "last error: conn reset")
    assert not m.is_tracked("a")


def test_retry_waits_for_room_elsewhere_rather_than_the_instance_that_failed_it():
    # i1 is full; a fails on i0 (down, not yet known): it waits for i1, never back to i0
    m = cp(n=2, max_inflight=1, max_attempts=3)
    m.submit(req("a"), 0)
    m.submit(req("b"), 0)
    assert (m.instance_of("a"), m.instance_of("b")) == ("i0", "i1")
    acts = kinds(m.complete("a", 1, Outcome(ok=False, retryable=True, error="conn refused")))
    assert acts == [("retry", "a", "i0"), ("queued", "a")]
    assert kinds(m.complete("b", 2)) == [("dispatch", "a", "i1", 2)]
    # with no other instance up, going back to the failed one is the only way
    m = cp(n=2, max_inflight=1, max_attempts=3)
    m.submit(req("a"), 0)
    m.set_health("i1", Health.DOWN, 0)
    acts = kinds(m.complete("a", 1, Outcome(ok=False, retryable=True, error="timeout")))
    assert acts == [("retry", "a", "i0"), ("queued", "a"), ("dispatch", "a", "i0", 2)]


def test_non_retryable_failure_finishes():
    m = cp()
    m.submit(req("a"), 0)
    assert m.complete("a", 1, Outcome(ok=False, error="bad request")) == []
    assert m.counters.failed == 1 and not m.is_tracked("a")


def test_draining_instance_keeps_work_gets_none_new():
    m = cp(n=2, max_inflight=5)
    m.submit(req("a"), 0)
    assert m.set_health("i0", Health.DRAINING, 1) == []
    assert m.instance_of("a") == "i0"
    assert kinds(m.submit(req("b"), 2)) == [("dispatch", "b", "i1", 1)]
    assert m.complete("a", 3) == []


def test_no_instance_up_rejects_with_states():
    m = cp(n=2)
    m.set_health("i0", Health.DOWN, 0)
    m.set_health("i1", Health.DRAINING, 0)
    [rej] = m.submit(req("a"), 1)
    assert rej.cause is RejectCause.NO_INSTANCES
    assert rej.detail == "no instance is up (i0 down, i1 draining)"


def test_kv_headroom_holds_requests_until_engine_reports_room():
    m = ControlPlane(specs(1, max_inflight=10, kv_capacity_tokens=1000), router=FirstFit(),
                     config={"kv_headroom": 0.9})
    m.observe("i0", EngineStats(running=3, kv_usage=0.5), 0)
    assert kinds(m.submit(req("a", prompt=300, output=50), 0)) == [("dispatch", "a", "i0", 1)]
    # 0.5 + 350/1000 = 0.85 < 0.9: one more fits; after it, 0.5 + 700/1000 >= 0.9
    assert kinds(m.submit(req("b", prompt=300, output=50), 0)) == [("dispatch", "b", "i0", 1)]
    assert kinds(m.submit(req("c", prompt=10, output=5), 0)) == [("queued", "c")]
    assert kinds(m.observe("i0", EngineStats(running=2, kv_usage=0.6), 1)) == [
        ("dispatch", "c", "i0", 1)]


def test_health_timeout_marks_down_and_report_brings_back():
    m = cp(n=2, max_inflight=3, health_timeout_s=2.0)
    m.observe("i0", EngineStats(), 0)
    m.observe("i1", EngineStats(), 0)
    m.submit(req("a"), 0)
    m.observe("i1", EngineStats(), 2)
    acts = m.tick(2.5)
    assert kinds(acts) == [("retry", "a", "i0"), ("queued", "a"), ("dispatch", "a", "i1", 2)]
    assert "no engine report for 2.500s" in acts[0].reason
    assert m.cluster["i0"].health is Health.DOWN
    m.observe("i0", EngineStats(), 3)
    assert m.cluster["i0"].health is Health.UP


def test_queue_timeout_rejects_old_requests():
    m = cp(n=1, max_queue_wait_s=5.0)
    m.submit(req("a"), 0)
    m.submit(req("b"), 1)
    m.submit(req("c"), 4)
    acts = m.tick(6.5)
    assert kinds(acts) == [("reject", "b", "queue_timeout")]
    assert acts[0].detail == "b waited 5.500s in the queue (max_queue_wait_s 5)"
    assert m.queued_ids() == ["c"]


def test_duplicate_and_unknown_ids_are_loud():
    m = cp(n=1)
    m.submit(req("a"), 0)
    m.submit(req("b"), 0)
    with pytest.raises(DuplicateRequestError, match="'a'"):
        m.submit(req("a"), 1)
    with pytest.raises(DuplicateRequestError, match="'b'"):
        m.submit(req("b"), 1)
    with pytest.raises(UnknownRequestError, match=r"complete\('b'\).*queued"):
        m.complete("b", 1)
    with pytest.raises(UnknownRequestError, match="unknown or finished"):
        m.complete("zzz", 1)
    with pytest.raises(UnknownInstanceError, match="'i9'; known: i0"):
        m.observe("i9", EngineStats(), 1)


def test_set_policy_moves_queue_without_loss():
    m = cp(n=1)
    m.submit(req("busy"), 0)
    for k in range(5):
        m.submit(req(f"q{k}", arrival=float(k)), float(k))
    acts = m.set_policy("fifo", 10)
    assert kinds(acts) == [("switch", "fifo", "fifo")]
    assert m.queued_ids() == [f"q{k}" for k in range(5)]
    dispatched = []
    for rid in ["busy", "q0", "q1", "q2", "q3"]:
        dispatched += [a.request.request_id for a in m.complete(rid, 11)]
    assert dispatched == ["q0", "q1", "q2", "q3", "q4"]


def test_router_picking_a_non_candidate_is_an_error():
    m = cp(n=2, router=Rogue())
    m.set_health("i0", Health.DOWN, 0)
    with pytest.raises(ControlPlaneError, match=r"rogue.*'i0'.*not a candidate"):
        m.submit(req("a"), 0)


def test_views_are_read_only():
    m = cp()
    with pytest.raises(AttributeError, match="read-only"):
        m.cluster["i0"].inflight = 5
    with pytest.raises(AttributeError, match="read-only"):
        m.cluster.queued = 3


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max_queue": 0}, "max_queue=0"),
        ({"max_queue_per_priority": (1, 2)}, "max_queue_per_priority"),
        ({"sheddable_priorities": [7]}, "sheddable_priorities"),
        ({"kv_headroom": 1.5}, "kv_headroom=1.5"),
        ({"health_timeout_s": -1}, "health_timeout_s=-1"),
        ({"max_queu": 3}, r"unknown key\(s\) \['max_queu'\]"),
    ],
)
def test_bad_config_names_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        ControlPlane(specs(1), router=FirstFit(), config=config)


def test_cancel_queued_and_in_flight():
    m = cp(n=1)
    m.submit(req("a"), 0)
    m.submit(req("b"), 0)
    m.submit(req("c"), 0)
    [rej] = m.cancel("b", 1)
    assert rej.cause is RejectCause.CANCELLED
    assert rej.detail == "b: client disconnected while queued"
    assert m.queued_ids() == ["c"]
    # cancelling the running request frees its slot for the next queued one
    assert kinds(m.cancel("a", 2, "stream closed")) == [("dispatch", "c", "i0", 1)]
    assert m.counters.failed == 1 and not m.is_tracked("a") and not m.is_tracked("b")
    with pytest.raises(UnknownRequestError, match=r"cancel\('b'\)"):
        m.cancel("b", 3)
