"""benchmarks/bench_emulated_scale.py: per engine count, the gateway over that many emulated
engines against the simulator (a small run; the figures it prints are not asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_emulated_scale.py"


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          timeout=120)


def test_each_engine_count_is_measured_against_the_simulator():
    res = _bench("--engines", "1,3", "--per-engine", "6", "--repeats", "2", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert [s["engines"] for s in out["scales"]] == [1, 3]
    assert [s["requests"] for s in out["scales"]] == [6, 18]
    one, three = out["scales"]
    assert three["offered_rps"] > 2.5 * one["offered_rps"]  # the rate grows with the engines
    for s in out["scales"]:
        assert s["repeats"] == 2 and 0 <= s["real_time_runs"] <= 2
        assert set(s["err"]) == {"ttft_p50", "ttft_p90", "e2e_p50", "e2e_p90"}
        assert all(math.isfinite(v) and v > -1 for v in s["err"].values())
        assert s["max_send_lag_ms"] >= 0 and s["max_engine_late_ms"] >= 0
    kept = [s["engines"] for s in out["scales"] if s["real_time_runs"] == 2]
    assert out["largest_real_time"] == (max(kept) if kept else None)


def test_bad_engine_counts_are_refused_by_name():
    res = _bench("--engines", "4,x")
    assert res.returncode == 2 and "'4,x': want engine counts like 4,16,32" in res.stderr
    res = _bench("--engines", "0")
    assert res.returncode == 2 and "engine counts must be >= 1" in res.stderr


def test_split_runs_the_engines_and_the_gateway_as_processes_of_their_own():
    """--split: ``sagellm emulate`` and ``sagellm gateway`` started per run; every request
    served through them, the engines' lateness read from their /metrics."""
    res = _bench("--engines", "2", "--per-engine", "5", "--repeats", "1", "--split", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["split"] is True
    (s,) = out["scales"]
    assert s["engines"] == 2 and s["requests"] == 10
    assert 0 <= s["max_engine_late_ms"] < 1000 and s["max_send_lag_ms"] >= 0
    assert all(math.isfinite(v) and v > -1 for v in s["err"].values())
