"""Instances sharing a host slow each other down (profiles with neighbour slowdowns)."""

from __future__ import annotations

import dataclasses

import pytest

from control_plane.engine import EngineConfig
from control_plane.perf.profile import FittedPredictor
from control_plane.types import InstanceSpec, Request
from sim import SimConfig, simulate
from sim.config import InstanceSim

BASE = FittedPredictor(0.010, 4e-4, 1e-7, 6e-4, 3e-6)
SLOWED = dataclasses.replace(BASE, neighbour_decode_slowdown_decode=0.2,
                             neighbour_decode_slowdown_prefill=0.3,
                             neighbour_prefill_slowdown_decode=0.05,
                             neighbour_prefill_slowdown_prefill=0.25)


def _insts(pred, host):
    cfg = EngineConfig(num_gpu_blocks=2048, block_size=16)
    return [InstanceSim(InstanceSpec(f"i{k}", max_inflight=64), cfg, pred, host=host)
            for k in range(2)]


def _run(reqs, pred, host, **cfg):
    res = simulate(reqs, _insts(pred, host), policy="fifo", router="round_robin",
                   config=SimConfig(network_delay_s=0.0, **cfg))
    return {r.request_id: r for r in res.records}


def _req(rid, t, prompt=200, out=80):
    return Request(rid, t, prompt, output_tokens=out, max_tokens=out)


def _tpot(r):
    return (r.finish_s - r.first_token_s) / (r.output_tokens - 1)


def test_engines_decoding_together_on_a_host_run_slower_by_the_profiles_slowdown():
    reqs = [_req("a", 0.0), _req("b", 0.0)]          # round robin: one per instance
    alone, shared = _run(reqs, SLOWED, None), _run(reqs, SLOWED, "h")
    assert {r.instance_id for r in shared.values()} == {"i0", "i1"}
    for rid in "ab":
        # both decode together almost throughout: x1.2 (the one that prefilled first
        # decodes a few iterations alone, and its neighbour's prefill slows it by 0.3)
        assert _tpot(shared[rid]) / _tpot(alone[rid]) == pytest.approx(1.2, abs=0.02)
    # the second prefill starts while the first engine prefills: x1.25 on its prompt part
    ttft = sorted(r.first_token_s - r.arrival_s for r in shared.values())
    ttft0 = sorted(r.first_token_s - r.arrival_s for r in alone.values())
    assert ttft[0] == pytest.approx(ttft0[0]) and ttft[1] > 1.2 * ttft0[1]


def test_a_lone_engine_and_a_profile_without_slowdowns_are_unaffected():
    reqs = [_req("a", 0.0), _req("b", 30.0)]          # never busy at the same time
    assert _figures(_run(reqs, SLOWED, "h")) == _figures(_run(reqs, SLOWED, None))
    both = [_req("a", 0.0), _req("b", 0.0)]
    assert _figures(_run(both, BASE, "h")) == _figures(_run(both, BASE, None))
    # different hosts: no contention
    insts = _insts(SLOWED, None)
    insts = [dataclasses.replace(i, host=f"h{k}") for k, i in enumerate(insts)]
    res = simulate(both, insts, policy="fifo", router="round_robin",
                   config=SimConfig(network_delay_s=0.0))
    assert _figures({r.request_id: r for r in res.records}) == _figures(
        _run(both, SLOWED, None))


def _figures(records):
    return {k: (r.instance_id, r.first_token_s, r.finish_s) for k, r in records.items()}


def test_contention_keeps_fast_forward_exact_and_runs_deterministic():
    reqs = [_req(f"r{k}", 0.05 * k + (0.4 if k % 3 == 0 else 0.0), 50 + 37 * (k % 5),
                 20 + 13 * (k % 7)) for k in range(40)]
    reqs.sort(key=lambda r: r.arrival_s)
    ff = _run(reqs, SLOWED, "h")
    step = _run(reqs, SLOWED, "h", fast_forward=False)
    assert ff.keys() == step.keys()
    for rid in ff:
        assert ff[rid].first_token_s == pytest.approx(step[rid].first_token_s, abs=1e-9)
        assert ff[rid].finish_s == pytest.approx(step[rid].finish_s, abs=1e-9)
    assert _figures(ff) == _figures(_run(reqs, SLOWED, "h"))
    slower = sum(ff[r].finish_s for r in ff) / sum(x.finish_s for x in
                                                   _run(reqs, SLOWED, None).values())
    assert slower > 1.02


def test_admissions_are_tracked_on_request_and_follow_a_retry():
    reqs = [_req("a", 0.0, 200, 400), _req("b", 0.0, 200, 400)]
    plain = simulate(reqs, _insts(BASE, None), config=SimConfig(network_delay_s=0.0))
    assert plain.admissions == {}
    # i0 fails while "a" decodes there: "a" is retried on i1, which admits it after "b"
    res = simulate(reqs, _insts(BASE, None), failures=[("i0", 1.0, None)],
                   config=SimConfig(network_delay_s=0.0, track_admissions=True))
    recs = {r.request_id: r for r in res.records}
    assert recs["a"].instance_id == "i1" and recs["a"].attempts == 2
    assert res.admissions["b"] == 0.0
    assert res.admissions["a"] > 1.0     # on i1, after the failure (not i0's at 0.0)


SPINNING = dataclasses.replace(BASE, neighbour_decode_slowdown_spin=0.1,
                               neighbour_prefill_slowdown_spin=0.05, neighbour_spin_s=1.0)


def test_a_neighbour_spins_for_its_spin_s_after_its_last_iteration():
    # "a" (i0) ends at about 0.2 s; "b" (i1) then decodes next to a spinning i0 (x1.1)
    # until i0's spin ends 1 s later, then alone
    short = _req("a", 0.0, 50, 10)
    alone = _run([short, _req("b", 0.0, 50, 10)], BASE, None)
    end_a = alone["a"].finish_s
    tpot0 = _tpot(alone["b"])
    within = _run([short, _req("b", end_a + 0.01, 50, 10)], SPINNING, "h")
    after = _run([short, _req("b", end_a + 1.5, 50, 10)], SPINNING, "h")
    assert within["a"].finish_s == pytest.approx(end_a)     # "b" arrives after "a" ends
    assert _tpot(within["b"]) == pytest.approx(1.1 * tpot0, rel=1e-6)
    assert _tpot(after["b"]) == pytest.approx(tpot0, rel=1e-6)
    # the same request while "a" runs again within the spin: decoding, not spinning
    busy = _run([short, _req("b", end_a + 0.01, 50, 10), _req("c", end_a + 0.01, 50, 400)],
                SPINNING, "h")
    assert busy["b"].instance_id == "i1" and busy["c"].instance_id == "i0"
    assert _tpot(busy["b"]) == pytest.approx(tpot0, rel=1e-6)  # no decode slowdown set


def test_a_failed_engine_does_not_spin():
    # i0 fails at 0.5 s while decoding "a"; "a" is retried on i1 at once and decodes there
    # at full speed (a spinning dead i0 would slow it by 10 % for a second)
    reqs = [_req("a", 0.0, 50, 300), _req("b", 0.0, 50, 4)]

    def run(host):
        res = simulate(reqs, _insts(SPINNING, host), failures=[("i0", 0.5, None)],
                       config=SimConfig(network_delay_s=0.0))
        return {r.request_id: r for r in res.records}

    got, ref = run("h"), run(None)
    assert got["a"].instance_id == "i1" and got["a"].attempts == 2
    assert got["a"].finish_s == pytest.approx(ref["a"].finish_s, rel=1e-9)


def test_an_engine_woken_with_nothing_to_do_spins_on_until_its_timer():
    # the path where a spinning engine is started but finds no work (a request aborted
    # between its delivery and the start): it keeps spinning, its neighbour slowed, until
    # its spin_s after its last iteration, then idles
    from control_plane import ControlPlane
    from control_plane.engine.contention import DECODING as _DECODING
    from control_plane.engine.contention import IDLE as _IDLE
    from control_plane.engine.contention import SPINNING as _SPINNING
    from sim.cluster import ClusterRun

    insts = _insts(SPINNING, "h")
    run = ClusterRun(ControlPlane([i.spec for i in insts]), insts,
                     SimConfig(network_delay_s=0.0), [])
    a, b = run.insts
    run._work(a, _DECODING)
    assert (b.predictor.decoding, b.predictor.spinning) == (1, 0)
    run._work(a, _IDLE)                       # its last iteration ended at t = 0
    assert a.work == _SPINNING and b.predictor.spinning == 1
    run.env.run(until=0.5)
    run._work(a, _IDLE)                       # woken at 0.5 with nothing to do
    assert a.work == _SPINNING and b.predictor.spinning == 1
    run.env.run(until=1.0 + 1e-9)             # spin_s = 1.0 after the last iteration
    assert a.work == _IDLE and b.predictor.spinning == 0
