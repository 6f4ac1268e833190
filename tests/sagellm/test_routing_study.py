"""sagellm.routing_study: prefix workloads, hash-block-matched clusters, in-memory grids."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sagellm.routing_study as rs
from control_plane import ConfigError
from sagellm.compare import load_records, load_summaries
from sagellm.routing_study import (
    cache_references,
    locality_router,
    lru_prefix_reuse,
    prefix_cluster,
    prefix_workload,
    run_trace_grid,
    trace_fingerprint,
)
from sim import simulate
from tests.sagellm.compare_helpers import write_azure_trace
from workloads.trace import Trace


def _mooncake(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


MOONCAKE = [
    {"timestamp": 0, "input_length": 1100, "output_length": 4, "hash_ids": [7, 8, 9]},
    {"timestamp": 5000, "input_length": 1200, "output_length": 4, "hash_ids": [7, 8, 10]},
    {"timestamp": 10000, "input_length": 300, "output_length": 4, "hash_ids": [11]},
]


def test_prefix_workload_reads_the_first_requests_of_a_trace(tmp_path):
    trace, note = prefix_workload(_mooncake(tmp_path / "m.jsonl", MOONCAKE), 2)
    assert len(trace) == 2 and trace.block_size == 512
    assert "m.jsonl: first 2 requests" in note and "512-token" in note


def test_prefix_workload_falls_back_to_synthetic_sessions(tmp_path):
    trace, note = prefix_workload(tmp_path / "absent.jsonl", 40, seed=3)
    assert len(trace) == 40 and trace.block_size == 16
    assert "not found" in note and "synthetic" in note
    assert np.all(np.diff(trace.arrival_s) >= 0)
    again, _ = prefix_workload(None, 40, seed=3)
    assert trace_fingerprint(again) == trace_fingerprint(trace)
    other, note = prefix_workload(None, 40, seed=4)
    assert trace_fingerprint(other) != trace_fingerprint(trace)
    assert note.startswith("no trace given")


def test_prefix_workload_rejects_traces_without_hashes_and_tiny_counts(tmp_path):
    with pytest.raises(ConfigError, match="no prefix hashes"):
        prefix_workload(write_azure_trace(tmp_path / "a.csv", n=5), 3)
    with pytest.raises(ConfigError, match="requests"):
        prefix_workload(None, 1)


@pytest.mark.parametrize(("hash_block_size", "cached"), [(512, [0, 1024, 0]),
                                                        (None, [0, 32, 0])])
def test_prefix_cluster_reads_hashes_at_the_trace_block_size(tmp_path, hash_block_size, cached):
    # two leading 512-token blocks shared: 1,024 cached tokens when the engine knows the
    # hashes' size, 2 x 16 when it takes each hash for one of its 16-token blocks
    trace, _ = prefix_workload(_mooncake(tmp_path / "m.jsonl", MOONCAKE), 3)
    cluster = prefix_cluster("c", "llama-3-8b", "h100", 1, hash_block_size=hash_block_size)
    assert all(x.engine.hash_block_size == hash_block_size for x in cluster.instances)
    result = simulate(trace.requests(), cluster.instances)
    assert [r.cached_prompt_tokens for r in result.records] == cached


def test_prefix_cluster_definitions_differ_by_hash_block_size():
    a = prefix_cluster("c", "llama-3-8b", "h100", 2, hash_block_size=512)
    b = prefix_cluster("c", "llama-3-8b", "h100", 2, hash_block_size=None)
    assert len(a.instances) == 2 and a.definition != b.definition
    assert a.control.max_queue == 5000


def test_locality_router_spec():
    assert locality_router(512) == {"type": "locality",
                                    "params": {"block_size": 512, "stride": 1}}
    assert locality_router(16, stride=4, load_weight=1.0)["params"] == {
        "block_size": 16, "stride": 4, "load_weight": 1.0}


def _tiny(hashes, prompts, block_size=2) -> Trace:
    n = len(hashes)
    col = np.empty(n, dtype=object)
    col[:] = [tuple(h) for h in hashes]
    return Trace(np.arange(n, dtype=float), np.array(prompts), np.ones(n, dtype=np.int64),
                 prefix_hashes=col, block_size=block_size)


def test_lru_prefix_reuse_exact():
    trace = _tiny([(1, 2), (1, 2, 3), (4,), (1, 2)], [4, 5, 2, 4])
    assert lru_prefix_reuse(trace, None) == pytest.approx(8 / 15)  # B hits 4, D hits 4
    # 2 blocks: after B the cache holds (2, 3), after C (3, 4): D misses
    assert lru_prefix_reuse(trace, 4) == pytest.approx(4 / 15)
    assert lru_prefix_reuse(trace, 0) == 0.0
    with pytest.raises(ConfigError):
        lru_prefix_reuse(Trace(np.zeros(2), np.ones(2), np.ones(2)), None)


def test_cache_references_pool_each_clusters_kv():
    trace = _tiny([(1, 2), (1, 2, 3)], [4, 5])
    cluster = prefix_cluster("c", "llama-3-8b", "h100", 2, hash_block_size=2)
    df = cache_references(trace, (cluster,))
    assert list(df["cluster"]) == ["(unbounded cache)", "c"]
    kv = cluster.instances[0].engine.kv_capacity_tokens
    assert df.loc[1, "kv_tokens_total"] == 2 * kv == 2 * df.loc[1, "kv_tokens_per_instance"]
    assert df["pooled_lru_hit_ratio"].tolist() == pytest.approx([4 / 9, 4 / 9])


def test_run_trace_grid_runs_resumes_and_matches_a_direct_simulation(tmp_path, monkeypatch):
    trace, _ = prefix_workload(None, 60, seed=1)
    cluster = prefix_cluster("c", "llama-3-8b", "h100", 2, hash_block_size=trace.block_size)
    routers = ("least_loaded", locality_router(trace.block_size))
    kw = {"policies": ("fifo",), "routers": routers, "loads": (0.5,), "clusters": (cluster,),
          "out_dir": tmp_path, "workers": 1}
    df = run_trace_grid(trace, **kw)
    assert list(df["router"]) == ["least_loaded", "locality(block_size=16,stride=1)"]
    assert (df["total"] == 60).all() and (df["workload"] == "synthetic-sessions").all()
    assert df.loc[1, "prefix_cache_hit_ratio"] > 0
    # the same figures from the run files, through the compare readers
    assert sorted(load_summaries(tmp_path)["key"]) == sorted(df["key"])
    assert set(load_records(tmp_path)["router"]) == set(df["router"])
    # a second call simulates nothing
    calls = []
    real = rs.execute
    monkeypatch.setattr(rs, "execute", lambda todo, **k: (calls.append(list(todo)),
                                                         real(todo, **k)))
    again = run_trace_grid(trace, **kw)
    assert calls == [[]]
    assert again.equals(df)
    # the first run, simulated directly at the grid's rate
    from workloads import transform

    scaled = transform.scale_rate(trace, df.loc[0, "rate_scale"])
    direct = simulate(scaled.requests(), cluster.instances, router="least_loaded",
                      control=cluster.control).summary()
    assert direct.ok == df.loc[0, "ok"]
    assert direct.ttft_s.p99 == pytest.approx(df.loc[0, "ttft_p99_s"])


def test_run_trace_grid_needs_a_spread_of_arrivals(tmp_path):
    trace = _tiny([(1,), (2,)], [2, 2]).with_columns(arrival_s=np.zeros(2))
    cluster = prefix_cluster("c", "llama-3-8b", "h100", 1, hash_block_size=2)
    with pytest.raises(ConfigError, match="spread"):
        run_trace_grid(trace, policies=("fifo",), routers=("least_loaded",), loads=(1.0,),
                       clusters=(cluster,), out_dir=tmp_path)
