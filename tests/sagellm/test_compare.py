"""sagellm compare: grid expansion, sweep validation, run files, resuming, executors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import sagellm.compare_exec as compare_exec
from control_plane import ConfigError
from sagellm.capacity import cluster_capacity_rps
from sagellm.compare import (
    Grid,
    RunFailed,
    WorkloadChoice,
    builtin_cluster,
    load_records,
    load_summaries,
    load_sweep,
    plan_runs,
    run_grid,
)
from sagellm.compare_grid import expand
from sagellm.compare_store import read_run, summarize_run
from sagellm.compare_workload import prepare_workload
from sim import simulate
from tests.sagellm.compare_helpers import SMALL_CLUSTER, small_grid, write_azure_trace
from workloads import transform


@pytest.fixture
def trace(tmp_path):
    return write_azure_trace(tmp_path / "tiny_azure.csv")


# -- grid -----------------------------------------------------------------------------------
def test_grid_expands_every_combination_with_stable_distinct_keys(trace):
    grid = small_grid(trace, loads=(0.5, 1.0, 1.5))
    grid = dataclasses.replace(grid, clusters=(*grid.clusters, builtin_cluster("h100x4")))
    wl = prepare_workload(grid.workload)
    runs = expand(grid, wl)
    assert grid.size == len(runs) == 2 * 3 * 2 * 2
    assert len({r.key for r in runs}) == len(runs) == len({r.name for r in runs})
    first = runs[0].params
    assert (first["cluster"], first["load"], first["policy"], first["router"]) == (
        "small", 0.5, "fifo", "round_robin")
    assert [r.params["router"] for r in runs[:4]] == ["round_robin", "least_loaded"] * 2
    # the load is a fraction of the cluster's estimated capacity
    for r in runs:
        assert r.params["offered_rps"] == pytest.approx(r.params["load"]
                                                        * r.params["capacity_rps"])
        assert r.rate_scale == pytest.approx(r.params["offered_rps"] / wl.rate_rps)
    assert runs[0].name.startswith("small__fifo__round_robin__load0.5__")
    # keys are stable, and the seed changes them
    assert [r.key for r in expand(grid, prepare_workload(grid.workload))] == [
        r.key for r in runs]
    other = dataclasses.replace(grid, workload=dataclasses.replace(grid.workload, seed=1))
    assert not {r.key for r in expand(other, prepare_workload(other.workload))} & {
        r.key for r in runs}


def test_control_plane_settings_enter_the_run_key(trace):
    """A built-in cluster's definition names only the cluster: its control-plane settings
    (e.g. the TPOT gate) must still tell its runs apart, so a stale run file is not
    reused; the seed does not count twice (the workload's seed sets it)."""
    grid = small_grid(trace, loads=(1.0,), policies=("fifo",), routers=("round_robin",))
    base = builtin_cluster("default")
    gated = dataclasses.replace(base, control=dataclasses.replace(base.control, tpot_gate=0.8))
    reseeded = dataclasses.replace(base, control=dataclasses.replace(base.control, seed=7))
    keys = [expand(dataclasses.replace(grid, clusters=(c,)), prepare_workload(grid.workload)
                   )[0].key for c in (base, gated, reseeded)]
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_the_performance_model_enters_the_run_key(trace):
    """A built-in cluster's definition names only the cluster: when the instances'
    performance model changes (refitted coefficients, another profile), its runs must get
    new keys, or a rerun would reuse results simulated with the old model."""
    from control_plane.perf import LinearPredictor
    grid = small_grid(trace, loads=(1.0,), policies=("fifo",), routers=("round_robin",))
    base = builtin_cluster("default")
    slower = dataclasses.replace(base, instances=tuple(
        dataclasses.replace(inst, predictor=LinearPredictor(overhead_s=0.02,
                                                            per_token_s=1e-4))
        for inst in base.instances))
    same = dataclasses.replace(base, instances=tuple(base.instances))
    keys = [expand(dataclasses.replace(grid, clusters=(c,)), prepare_workload(grid.workload)
                   )[0].key for c in (base, slower, same)]
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_rate_scales_are_multiples_of_the_trace_rate(trace):
    grid = dataclasses.replace(small_grid(trace), loads=(1.0, 2.0), load_unit="trace")
    wl = prepare_workload(grid.workload)
    runs = expand(grid, wl)
    assert {r.rate_scale for r in runs} == {1.0, 2.0}
    scaled = transform.scale_rate(wl.trace, 2.0)
    assert len(scaled) / scaled.duration_s == pytest.approx(2 * wl.rate_rps)


def test_trace_without_classes_gets_the_default_mix(trace):
    wl = prepare_workload(WorkloadChoice(trace=str(trace), requests=100))
    assert len(wl.trace) == 100 and set(wl.trace.priority.tolist()) == {0, 2, 4}
    plain = prepare_workload(WorkloadChoice(trace=str(trace), requests=100, classes="trace"))
    assert plain.trace.priority is None and plain.fingerprint != wl.fingerprint


def test_capacity_adds_up_over_instances():
    one = builtin_cluster("h100x4").instances[:1]
    p, o = np.full(10, 1000), np.full(10, 200)
    c1 = cluster_capacity_rps(one, p, o)
    assert c1 > 0
    assert cluster_capacity_rps(one * 3, p, o) == pytest.approx(3 * c1)
    assert cluster_capacity_rps(one, p, o * 2) < c1  # longer outputs: fewer requests/s


def test_sweep_file_gives_the_same_grid(tmp_path, trace):
    (tmp_path / "small.yaml").write_text(json.dumps(SMALL_CLUSTER))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""
workload: {{trace: {trace.name}, requests: 120, seed: 0}}
policies: [fifo, priority]
routers: [round_robin, least_loaded]
loads: [0.5, 1.5]
clusters: [{{name: small, file: small.yaml}}]
""")
    from_file = load_sweep(sweep)
    in_code = small_grid(trace)
    keys = [r.key for r in expand(from_file, prepare_workload(from_file.workload))]
    assert keys == [r.key for r in expand(in_code, prepare_workload(in_code.workload))]


BAD_SWEEPS = [
    ("polices: [fifo]", "unknown key(s) ['polices']"),
    ("policies: [fifo, nope]", "policies[1]"),
    ("policies: [fifo, fifo]", "duplicate entries ['fifo']"),
    ("routers: [{type: nope}]", "routers[0]"),
    ("loads: [0.5, -1]", "loads[1]: must be a number > 0"),
    ("loads: [0.5]\nrate_scales: [2]", "'loads' or 'rate_scales', not both"),
    ("clusters: [nope]", "clusters[0]: unknown cluster 'nope'"),
    ("clusters: [{name: x, file: missing.yaml}]", "missing.yaml: cannot read"),
    ("clusters: [{name: x, cluster: {instances: [{id: a, max_inflight: 0}]}}]",
     "clusters[0]: cluster.instances[0].max_inflight"),
    ("clusters: [{name: x, cluster: {instances: [{id: a}]}, policy: fifo}]",
     "clusters[0]: key(s) ['policy'] not allowed"),
    ("clusters: [default, default]", "duplicate names ['default']"),
    ("workload: {trace: t.csv, rate: 3}", "workload: unknown key(s) ['rate']"),
    ("workload: {classes: some}", "workload.classes: unknown mode 'some'"),
    ("workload: {classes: [{name: a, share: 1, priority: 9}]}", "priority=9"),
    ("workload: {classes: [{name: a, share: 1, priority: 1, slo: {ttft: 1}}]}",
     "workload.classes[0].slo"),
    ("workload: {requests: 0}", "workload.requests=0"),
    ("policies: fifo", "policies: must be a list"),
]


@pytest.mark.parametrize(("text", "error"), BAD_SWEEPS)
def test_sweep_errors_name_the_file_and_the_key(tmp_path, text, error):
    base = "policies: [fifo]\nrouters: [round_robin]\nloads: [1]\nclusters: [default]\n"
    data = {}
    import yaml

    data.update(yaml.safe_load(base))
    data.update(yaml.safe_load(text))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and error in str(info.value)


def test_cluster_file_errors_name_that_file(tmp_path):
    (tmp_path / "c.yaml").write_text("cluster: {instances: [{id: a, weight: -1}]}\n")
    (tmp_path / "sweep.yaml").write_text(
        "policies: [fifo]\nrouters: [round_robin]\nloads: [1]\n"
        "clusters: [{name: c, file: c.yaml}]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: cluster\.instances\[0\]\.weight"):
        load_sweep(tmp_path / "sweep.yaml")


# -- run files and summaries ------------------------------------------------------------------
def test_run_file_summary_equals_the_simulators(tmp_path, trace):
    grid = small_grid(trace, loads=(1.5,), policies=("priority",), routers=("least_loaded",))
    df = run_grid(grid, tmp_path, workers=1, progress=False)
    (spec,) = expand(grid, prepare_workload(grid.workload))
    result = simulate(transform.scale_rate(spec.trace, spec.rate_scale).requests(),
                      spec.instances, policy=spec.policy, router=spec.router,
                      control=spec.control)
    records, meta = read_run(tmp_path / "runs" / f"{spec.name}.parquet")
    assert len(records) == 120 and meta["key"] == spec.key
    assert summarize_run(records, meta).to_dict() == result.summary().to_dict()
    s = result.summary()
    row = df.iloc[0]
    assert row["slo_attainment"] == s.slo_attainment and row["rejected"] == s.rejected
    assert row["ttft_p99_s"] == s.ttft_s.p99
    assert row["cost_per_mtok_usd"] == s.cost_per_million_tokens_usd
    assert row["attainment_p0"] == s.attainment_by_priority[0]
    assert {"queue_delay_p99_s_p0", "queue_delay_p99_s_p4"} <= set(df.columns)


def _counting(monkeypatch):
    calls = []
    real = compare_exec.simulate_run

    def counted(spec):
        calls.append(spec.name)
        return real(spec)

    monkeypatch.setattr(compare_exec, "simulate_run", counted)
    return calls


def test_rerun_resumes_skipping_complete_runs(tmp_path, trace, monkeypatch):
    grid = small_grid(trace, loads=(1.0,))
    calls = _counting(monkeypatch)
    first = run_grid(grid, tmp_path, workers=1, progress=False)
    assert len(calls) == 4 and len(first) == 4
    calls.clear()
    again = run_grid(grid, tmp_path, workers=1, progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(first, again)
    files = sorted((tmp_path / "runs").glob("*.parquet"))
    files[0].unlink()  # deleted: redone
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])  # partial: redone
    files[2].write_bytes(b"not parquet")  # corrupt: redone
    _, todo = plan_runs(grid, tmp_path)
    assert sorted(s.name for s in todo) == sorted(f.stem for f in files[:3])
    again = run_grid(grid, tmp_path, workers=1, progress=False)
    assert sorted(calls) == sorted(f.stem for f in files[:3])
    pd.testing.assert_frame_equal(first, again)
    calls.clear()
    run_grid(grid, tmp_path, workers=1, progress=False, force=True)
    assert len(calls) == 4
    assert not list((tmp_path / "runs").glob(".*tmp"))  # no temporary files left


def test_failed_runs_are_named_and_the_others_kept(tmp_path, trace, monkeypatch):
    grid = small_grid(trace, loads=(1.0,), routers=("round_robin",))
    real = compare_exec.simulate_run

    def flaky(spec):
        if spec.params["policy"] == "priority":
            raise RuntimeError("boom")
        return real(spec)

    monkeypatch.setattr(compare_exec, "simulate_run", flaky)
    with pytest.raises(RunFailed, match=r"small__priority__round_robin.*RuntimeError: boom"):
        run_grid(grid, tmp_path, workers=1, progress=False)
    assert [p.name.split("__")[1] for p in (tmp_path / "runs").glob("*.parquet")] == ["fifo"]


def test_worker_processes_give_the_serial_results(tmp_path, trace):
    grid = small_grid(trace, seed=3)
    serial = run_grid(grid, tmp_path / "serial", workers=1, progress=False)
    parallel = run_grid(grid, tmp_path / "parallel", workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    for f in (tmp_path / "serial" / "runs").glob("*.parquet"):
        a, _ = read_run(f)
        b, _ = read_run(tmp_path / "parallel" / "runs" / f.name)
        pd.testing.assert_frame_equal(a, b)


def test_load_summaries_and_records_read_any_grid(tmp_path, trace):
    run_grid(small_grid(trace, loads=(1.0,), routers=("round_robin",)), tmp_path, workers=1,
             progress=False)
    run_grid(small_grid(trace, loads=(0.5,), policies=("fifo",), routers=("round_robin",)),
             tmp_path, workers=1, progress=False)
    df = load_summaries(tmp_path)
    assert list(zip(df["load"], df["policy"], strict=True)) == [
        (0.5, "fifo"), (1.0, "fifo"), (1.0, "priority")]
    records = load_records(tmp_path)
    assert len(records) == 3 * 120
    assert list(records.columns[:4]) == ["key", "cluster", "policy", "router"]
    with pytest.raises(ConfigError, match="no complete run files"):
        load_summaries(tmp_path / "empty")


def test_grid_validation_in_code(trace):
    good = small_grid(trace)
    with pytest.raises(ConfigError, match=r"loads\[0\]"):
        dataclasses.replace(good, loads=(0.0,)).validate()
    with pytest.raises(ConfigError, match="policies: at least one"):
        dataclasses.replace(good, policies=()).validate()
    with pytest.raises(ConfigError, match="clusters: at least one"):
        Grid(good.workload, good.policies, good.routers, good.loads, ()).validate()


def test_engines_sharing_a_host_are_estimated_with_their_neighbours_decoding():
    from dataclasses import replace

    from control_plane.engine import EngineConfig
    from control_plane.perf.profile import FittedPredictor
    from control_plane.types import InstanceSpec
    from sim.config import InstanceSim
    pred = FittedPredictor(0.010, 4e-4, 1e-7, 6e-4, 3e-6)
    slow = replace(pred, neighbour_decode_slowdown_decode=0.2,
                   neighbour_prefill_slowdown_decode=0.1)
    cfg = EngineConfig(num_gpu_blocks=4096, block_size=16, max_num_seqs=16)

    def insts(p, host, n=2):
        return [InstanceSim(InstanceSpec(f"i{k}", max_inflight=64), cfg, p, host=host)
                for k in range(n)]
    p, o = np.full(10, 300), np.full(10, 60)
    alone = cluster_capacity_rps(insts(slow, None), p, o)
    shared = cluster_capacity_rps(insts(slow, "m"), p, o)
    # every iteration 10-20 % slower with the other engine decoding: 10-20 % fewer req/s
    assert alone / 1.2 <= shared <= alone / 1.1
    assert cluster_capacity_rps(insts(slow, "m", 3), p, o) < 1.5 * shared   # two neighbours
    # a host of one, or a predictor without neighbour slowdowns, changes nothing
    assert cluster_capacity_rps(insts(slow, "m", 1), p, o) == pytest.approx(alone / 2)
    assert cluster_capacity_rps(insts(pred, "m"), p, o) == pytest.approx(
        cluster_capacity_rps(insts(pred, None), p, o))
