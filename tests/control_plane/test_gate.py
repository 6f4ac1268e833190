"""The TPOT admission gate: the prediction, the cluster state's bookkeeping, the manager."""

from __future__ import annotations

import math

import pytest

from control_plane import ConfigError, ControlPlane, ControlPlaneConfig, InstanceSpec, Outcome
from control_plane.cluster import ClusterState
from control_plane.errors import ValidationError
from control_plane.gate import decode_s, predicted_tpot_s
from control_plane.routing import Router
from tests.builders import load, req

# decode 20 ms at a batch of 32, +1 ms per further sequence; prefill 1,000 tokens/s
_SPEC = dict(decode_s_per_token=0.02, decode_s_per_seq=0.001, prefill_tokens_per_s=1000.0)


class FirstFit(Router):
    """Test router: the first candidate in cluster order."""

    name = "first_fit"

    def route(self, request, candidates, cluster, rng):
        return candidates[0].instance_id if candidates else None


def gated(n: int = 1, gate: float | None = 0.5, **kw) -> ClusterState:
    return ClusterState([InstanceSpec(f"i{k}", **{**_SPEC, **kw}) for k in range(n)],
                        tpot_gate=gate)


def kinds(actions) -> list[tuple]:
    out = []
    for a in actions:
        name = type(a).__name__.lower()
        if name == "dispatch":
            out.append((name, a.request.request_id, a.instance_id))
        else:
            out.append((name, a.request.request_id))
    return out


@pytest.mark.parametrize(
    ("n", "prefill_per_step", "expected_s"),
    [
        (32, 0.0, 0.020),  # the nominal batch: decode_s_per_token
        (42, 0.0, 0.030),  # 10 more sequences: +10 ms
        (22, 0.0, 0.010),
        (32, 50.0, 0.070),  # 50 prefill tokens per step at 1,000 tokens/s: +50 ms
        (1, 0.0, 0.0),  # below the linear model's zero: clamped
    ],
)
def test_predicted_tpot(n, prefill_per_step, expected_s):
    spec = InstanceSpec("i", **_SPEC)
    assert predicted_tpot_s(spec, n, prefill_per_step) == pytest.approx(expected_s)


def test_flat_decode_without_a_per_sequence_figure():
    spec = InstanceSpec("i", decode_s_per_token=0.02)
    assert decode_s(spec, 1) == decode_s(spec, 500) == 0.02


def test_state_tracks_tightest_bound_and_prefill_per_step():
    st = gated()
    v = st["i0"]
    a = req("a", prompt=100, output=10, tpot=0.2)
    b = req("b", prompt=300, output=100, tpot=0.1)
    c = req("c", prompt=50, output=5)  # no TPOT SLO
    load(st, "i0", a)
    assert v.tpot_bound_s == 0.2 and v.prefill_per_step == pytest.approx(10.0)
    # one more request: decode_s(2) = 0 (clamped) + 10 x 2 / 1 prefill tokens per step
    assert v.next_tpot_s == pytest.approx(0.020)
    load(st, "i0", b, c)
    assert v.tpot_bound_s == 0.1
    assert v.prefill_per_step == pytest.approx(10.0 + 3.0 + 10.0)
    # 4 in flight: 23 x 4 / 3 tokens per step at 1,000 tokens/s
    assert v.next_tpot_s == pytest.approx(23.0 * 4 / 3 / 1000.0)
    st.released(v, b)
    assert v.tpot_bound_s == 0.2  # the tightest left: the next one applies
    st.released(v, a)
    assert v.tpot_bound_s == math.inf  # c has no TPOT SLO
    st.released(v, c)
    assert v.prefill_per_step == 0.0 and v.inflight == 0


def test_two_requests_with_the_same_bound_keep_it_until_both_leave():
    st = gated()
    v = st["i0"]
    a, b = req("a", tpot=0.1), req("b", tpot=0.1)
    load(st, "i0", a, b)
    st.released(v, a)
    assert v.tpot_bound_s == 0.1
    st.released(v, b)
    assert v.tpot_bound_s == math.inf


def test_room_closes_when_one_more_would_pass_the_gate():
    # gate 0.5 of a 0.1 s bound: room while the prediction for one more is <= 50 ms
    st = gated(gate=0.5)
    v = st["i0"]
    load(st, "i0", req("a", prompt=20, output=1, tpot=0.1))
    assert v.next_tpot_s == pytest.approx(0.040) and v.has_room  # 20 x 2 tokens per step
    load(st, "i0", req("b", prompt=10, output=1))
    assert v.next_tpot_s == pytest.approx(0.045) and v.has_room  # 30 x 3 / 2
    c = req("c", prompt=10, output=1)
    load(st, "i0", c)
    assert v.next_tpot_s == pytest.approx(0.0533, abs=1e-4) and not v.has_room
    assert st.view.candidates == ()
    st.released(v, c)
    assert v.has_room and st.view.candidates == (v,)


def test_an_idle_instance_always_has_room():
    # even an instance too slow for any SLO takes work when it runs nothing
    st = gated(decode_s_per_token=5.0)
    v = st["i0"]
    r = req("a", tpot=0.1)
    assert v.has_room and st.gate_admits(v, r)
    load(st, "i0", r)
    assert not v.has_room


def test_request_own_bound_is_checked_per_request():
    st = gated(gate=0.5)
    v = st["i0"]
    load(st, "i0", req("a", prompt=20, output=1, tpot=1.0))
    assert v.next_tpot_s == pytest.approx(0.040) and v.has_room
    assert st.gate_admits(v, req("loose", tpot=0.1))  # 40 ms <= 0.5 x 100 ms
    assert not st.gate_admits(v, req("tight", tpot=0.05))  # 40 ms > 0.5 x 50 ms
    assert st.gate_admits(v, req("none"))  # no TPOT SLO: only the in-flight bounds


def test_gate_off_keeps_no_gate_figures():
    st = gated(gate=None)
    v = st["i0"]
    load(st, "i0", *(req(f"r{k}", prompt=1000, output=1, tpot=0.001) for k in range(5)))
    assert v.has_room and v.tpot_bound_s == math.inf and v.next_tpot_s == 0.0
    assert st.gate_admits(v, req("x", tpot=0.001))


@pytest.mark.parametrize("gate", [0, -0.5, math.inf, math.nan, True, "0.8"])
def test_state_rejects_bad_gate(gate):
    with pytest.raises(ValidationError, match="tpot_gate"):
        gated(gate=gate)


@pytest.mark.parametrize("gate", [0, -1, math.inf, math.nan, True, "0.8"])
def test_config_rejects_bad_gate_naming_the_field(gate):
    with pytest.raises(ConfigError, match=r"tpot_gate=.*must be a number > 0"):
        ControlPlaneConfig(tpot_gate=gate)


def test_config_default_is_off():
    assert ControlPlaneConfig().tpot_gate is None
    assert ControlPlaneConfig.from_dict({"tpot_gate": 0.8}).tpot_gate == 0.8


def _plane(policy: str = "priority", n: int = 1) -> ControlPlane:
    return ControlPlane([InstanceSpec(f"i{k}", max_inflight=100, **_SPEC) for k in range(n)],
                        policy=policy, router=FirstFit(), config={"tpot_gate": 0.5})


def test_manager_holds_requests_and_releases_them_in_policy_order():
    m = _plane("priority")
    assert kinds(m.submit(req("a", prompt=20, output=1, tpot=0.1), 0)) == [
        ("dispatch", "a", "i0")]
    assert kinds(m.submit(req("b", prompt=10, output=1), 0)) == [("dispatch", "b", "i0")]
    assert kinds(m.submit(req("c", prompt=10, output=1), 0)) == [("dispatch", "c", "i0")]
    # three in flight: one more would be predicted at 53 ms > 0.5 x 100 ms
    assert kinds(m.submit(req("low", priority=4, prompt=10, output=1), 1)) == [
        ("queued", "low")]
    assert kinds(m.submit(req("high", priority=0, prompt=10, output=1), 2)) == [
        ("queued", "high")]
    # a completion reopens the gate for one: the more important request goes first
    assert kinds(m.complete("c", 3, Outcome())) == [("dispatch", "high", "i0")]
    assert m.queued_ids() == ["low"]
    # the tight bound leaves with a: room for the rest
    assert kinds(m.complete("a", 4, Outcome())) == [("dispatch", "low", "i0")]


def test_manager_sends_a_tight_request_where_the_gate_admits_it():
    m = _plane("fifo", n=2)
    m.submit(req("a", prompt=20, output=1, tpot=1.0), 0)  # i0: one more predicted at 40 ms
    # 40 ms > 0.5 x 60 ms: i0 is skipped, the idle i1 takes it
    assert kinds(m.submit(req("tight", prompt=20, output=1, tpot=0.06), 0)) == [
        ("dispatch", "tight", "i1")]
    # both instances now predict 40 ms: a 50 ms request waits, a 100 ms one does not
    assert kinds(m.submit(req("t2", tpot=0.05), 0)) == [("queued", "t2")]
    assert kinds(m.submit(req("t3", tpot=0.1), 0)) == [("queued", "t3")]  # behind t2 (fifo)
    assert kinds(m.complete("tight", 1, Outcome())) == [("dispatch", "t2", "i1"),
                                                         ("dispatch", "t3", "i0")]
