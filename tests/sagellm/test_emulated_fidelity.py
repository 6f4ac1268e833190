"""sagellm.emulated_fidelity: the same requests through the simulator and through the
gateway over emulated engines (a short real-time run; no latency asserts: those are in
tests/live/test_emulate_vs_sim.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sagellm.emulated_fidelity import LIVE, SIM, EmulatedSetup, compare_emulated, emulated_workload
from workloads import arrivals
from workloads.trace import Trace


def test_emulated_workload_is_seeded_and_short():
    a, b = emulated_workload(30, seed=2), emulated_workload(30, seed=2)
    assert len(a) == 30
    np.testing.assert_array_equal(a.prompt_tokens, b.prompt_tokens)
    assert a.output_tokens.min() >= 8 and a.output_tokens.max() <= 32
    assert a.prefix_hashes is not None and a.block_size == 16


def test_both_sides_serve_every_request_with_its_exact_output():
    trace = emulated_workload(12, seed=1)
    setup = EmulatedSetup(engines=2)
    records, runs = compare_emulated(trace, loads=(0.3,), routers=("round_robin",),
                                     setup=setup, retries=0)
    assert list(records.columns[:4]) == ["source", "load", "router", "offered_rps"]
    assert sorted(set(records["source"])) == sorted({SIM, LIVE})
    assert (records["status"] == "ok").all()
    want = {r.request_id: r.output_tokens for r in trace.requests()}
    for source in (SIM, LIVE):
        part = records[records["source"] == source]
        assert dict(zip(part["request_id"], part["output_tokens"], strict=True)) == want
    assert set(records.loc[records["source"] == SIM, "instance_id"]) == {"e0", "e1"}
    assert records.loc[records["source"] == LIVE, "instance_id"].notna().all()
    (run,) = runs.to_dict("records")
    assert run["requests"] == run["sim_ok"] == run["live_ok"] == 12
    assert run["offered_rps"] == pytest.approx(0.3 * setup.capacity_rps(trace))
    assert run["max_send_lag_s"] >= 0 and run["max_engine_late_s"] >= 0
    assert run["attempts"] == 1
    assert run["kept_real_time"] == (max(run["max_send_lag_s"], run["max_engine_late_s"])
                                     <= 0.05)


def test_late_runs_are_repeated_and_flagged(monkeypatch):
    import sagellm.emulated_fidelity as ef

    lateness = iter([0.5, 0.2, 0.01])  # send lag of successive live runs

    def fake_live(requests, setup, policy, router):
        return [], next(lateness), 0.0

    monkeypatch.setattr(ef, "_run_live", fake_live)
    trace = emulated_workload(5)
    _, runs = compare_emulated(trace, retries=2)
    assert runs.loc[0, "attempts"] == 3 and bool(runs.loc[0, "kept_real_time"])
    lateness = iter([0.5, 0.2])
    _, runs = compare_emulated(trace, retries=1)
    assert runs.loc[0, "attempts"] == 2 and not runs.loc[0, "kept_real_time"]
    assert runs.loc[0, "max_send_lag_s"] == 0.2
    with pytest.raises(ValueError, match="retries"):
        compare_emulated(trace, retries=-1)


def test_needs_a_spread_of_arrivals():
    t = Trace(np.zeros(3), np.full(3, 10), np.full(3, 4))
    with pytest.raises(ValueError, match="spread"):
        compare_emulated(t)
    t = Trace(arrivals.poisson(1.0, n=1), np.full(1, 10), np.full(1, 4))
    with pytest.raises(ValueError, match="spread"):
        compare_emulated(t)
