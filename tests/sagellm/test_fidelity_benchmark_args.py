"""benchmarks/fidelity.py refuses bad arguments by name before it launches any engine."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"


@pytest.mark.parametrize(("args", "message"), [
    (["--routers", "round_robin,nope"], "router 'nope': unknown (known: "),
    (["--train-router", "fastest"], "router 'fastest': unknown"),
    (["--contention-scale", "0.5", "--fit-contention"], "give one"),
    (["--contention-scale", "-1"], "--contention-scale -1.0: must be a number >= 0"),
    (["--train-requests", "5"], "--train-requests 5: must be >= 20"),
    (["--train-load", "0"], "--train-load 0.0: must be > 0"),
    (["--speed-band", "1.5"], "--speed-band 1.5: must be in [0, 1)"),
    (["--live-repeats", "0"], "--live-repeats 0: must be >= 1"),
    (["--engine", "http://127.0.0.1:8000"], "--engine needs --profile"),
    (["--engine", "127.0.0.1:8000", "--profile", "vllm-cpu-llama-tiny"],
     "--engine '127.0.0.1:8000': not an http(s) URL"),
    (["--engine", "http://a:1", "--profile", "p.csv", "--engines", "3"],
     "--engines is for the engines launched here, not with --engine"),
    (["--engine", "http://a:1", "--profile", "p.csv", "--engine-arg=--enforce-eager"],
     "--engine-arg is for the engines launched here, not with --engine"),
    (["--engines", "0"], "--engines 0: must be >= 1"),
])
def test_bad_arguments_are_refused_by_name(args, message, tmp_path):
    res = subprocess.run([sys.executable, str(BENCH), *args, "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "out").exists()      # nothing launched, nothing written


def _bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fidelity_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_refit_recovers_the_scale_recorded_replays_were_made_with(tmp_path):
    """--refit-contention on a recorded run whose "live" replays are simulations with the
    slowdowns x 0.6 (at the engines' checked speed) finds 0.6 again."""
    import dataclasses

    import numpy as np

    from control_plane.types import Request
    from sagellm.contention_fit import with_contention_scale
    from sagellm.fidelity import sim_instances, sim_run, write_records

    bench = _bench()
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.exponential(0.25, 150))
    reqs = [Request(f"q{k}", float(t[k]), int(rng.integers(30, 300)), output_tokens=int(o),
                    max_tokens=int(o)) for k, o in enumerate(rng.integers(10, 100, 150))]
    engine = {"max_num_seqs": 16}
    insts = [i for n in ("engine-0", "engine-1") for i in sim_instances(
        "vllm-cpu-llama-small-pinned", [n], engine, host="this-machine")]
    check = {"decode": 0.95, "prefill": 1.02, "decode_ratios": [0.95],
             "prefill_ratios": [1.02]}
    at = [dataclasses.replace(i, predictor=with_contention_scale(
        i.predictor.scaled(0.95, 1.02), 0.6)) for i in insts]
    for source, made in (("live", at), ("sim", insts), ("live-2", at), ("sim-2", insts)):
        write_records(tmp_path, 0.5, "round_robin", source, sim_run(
            reqs, made, router="round_robin", network_delay_s=0.006).records)
    run = {"setup": {"profile": "vllm-cpu-llama-small-pinned", "out": str(tmp_path),
                     "engine": {**engine, "engines": 2}, "network_delay_s": 0.006},
           "runs": [{"load": 0.5, "router": "round_robin", "live_replays": [{}, {}],
                     "speed": {n: {"checks": [check] * 3} for n in ("engine-0", "engine-1")}}]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    out = bench.refit_contention([str(path)])
    assert out["replays"] == 2 and not out["at_bound"]
    assert out["scale"] == pytest.approx(0.6, abs=0.05)
    assert out["paired_at_1"]["tpot"] > 0.01 and abs(out["paired_fitted"]["tpot"]) < 0.01
    with pytest.raises(SystemExit, match=r"--refit-contention .*nope\.json: not a fidelity run"):
        bench.refit_contention([str(tmp_path / "nope.json")])


def test_reassess_classifies_recorded_runs_again_without_engines(tmp_path):
    """--reassess on a run recorded before the speed-resolution classification: the misses
    whose target needs the speed finer than the checks moved are listed; a run without
    checks or band gets no speed figures; a file that is not a run is named."""
    nan = float("nan")
    spread = dict.fromkeys(("e2e_p50", "ttft_p90", "throughput"), nan)

    def band(el):   # signed e2e errors at 0.97 / 1.03 of a figure going as factor^el
        return {f"{f:g}": {"e2e_p50": 1.1 * f ** el - 1} for f in (0.97, 1.03)}

    checks = [{"decode": 1.0}, {"decode": 1.05}, {"decode": 1.0}]
    runs = [{"load": 0.8, "router": "round_robin", "live_spread": spread,
             "err": {"e2e_p50": 0.2, "ttft_p90": 0.0, "throughput": 0.0},
             "err_speed_band": band(4.0), "speed": {"engine-0": {"checks": checks}}},
            {"load": 0.5, "router": "least_loaded", "live_spread": spread,
             "err": {"e2e_p50": 0.08, "ttft_p90": 0.0, "throughput": 0.0}}]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"runs": runs, "targets": {"e2e_p50": 0.05}}))
    res = subprocess.run([sys.executable, str(BENCH), "--reassess", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (doc,) = json.loads(res.stdout)["reassessed"]
    assert doc["path"] == str(path)
    first, second = doc["runs"]
    assert first["speed_elasticity"]["e2e_p50"] == pytest.approx(4.0)
    assert first["speed_tolerance"] == {"e2e_p50": pytest.approx(0.0125)}
    assert first["speed_moved"] == pytest.approx([math.log(1.05)] * 2, abs=1e-4)
    assert second == {"load": 0.5, "router": "least_loaded"}
    assert len(doc["target_failures"]) == 2
    assert doc["failures_below_speed_resolution"] == [doc["target_failures"][0]]
    bad = tmp_path / "empty.json"
    bad.write_text("")
    with pytest.raises(SystemExit, match=r"--reassess .*empty\.json: not a fidelity run"):
        _bench().reassess([str(bad)])
