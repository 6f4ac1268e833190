"""The sagellm CLI: help everywhere, the default job, plugins, experiment files."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from control_plane import ConfigError
from sagellm.cli import main
from sagellm.experiment import load_experiment

GOOD = """
cluster:
  instances:
    - {id: h100, count: 2, price_per_hour_usd: 4.0, max_inflight: 8}
    - {id: a100, price_per_hour_usd: 2.0, max_inflight: 4, decode_s_per_token: 0.03}
policy: {type: priority, params: {aging_s: 10}}
router:
  type: pipeline
  params:
    filters: [{type: min_free_kv, params: {threshold: 0.9}}]
    scorers: [{type: prefix_cache, weight: 2}, {type: queue_depth, weight: 1}]
    picker: max_score
control: {max_queue: 500, sheddable_priorities: [3, 4]}
workload: {requests: 120, rate_per_s: 5, seed: 3}
"""


@pytest.mark.parametrize("args", [[], ["sim"], ["plugins"], ["config"], ["config", "check"]])
def test_every_command_has_help(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_sim_compares_policies_and_routers(tmp_path):
    result = CliRunner().invoke(main, ["sim", "--requests", "200", "--policy", "fifo",
                                       "--policy", "slo", "--router", "round_robin",
                                       "--router", "least_loaded", "--out", str(tmp_path),
                                       "--out-format", "csv"])
    assert result.exit_code == 0, result.output
    for label in ("fifo / round_robin", "fifo / least_loaded", "slo / round_robin",
                  "slo / least_loaded"):
        assert label in result.output
    with (tmp_path / "fifo__round_robin.records.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    assert {r["status"] for r in rows} <= {"ok", "rejected"}
    with (tmp_path / "fifo__round_robin.series.csv").open() as f:
        series = list(csv.DictReader(f))
    assert {r["instance_id"] for r in series} == {"h100-0", "h100-1", "a100-0", "a100-1"}
    assert set(series[0]) >= {"time_s", "running", "waiting", "kv_usage", "cp_queued"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["slo / least_loaded"]["counts"]["total"] == 200


def test_sim_hardware_flags_failure_and_parquet(tmp_path):
    args = ["sim", "--model", "llama-3-8b", "--gpu", "a100", "--instances", "3",
            "--requests", "300", "--rate", "20", "--policy", "fifo", "--router",
            "least_loaded", "--fail", "llama-3-8b-a100-tp1-1:2:6", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    import pandas as pd

    records = pd.read_parquet(tmp_path / "fifo__least_loaded.records.parquet")
    assert len(records) == 300 and set(records["status"]) == {"ok"}
    assert (records["attempts"] > 1).any()  # the failure sent work elsewhere
    series = pd.read_parquet(tmp_path / "fifo__least_loaded.series.parquet")
    down = series[(series.instance_id == "llama-3-8b-a100-tp1-1") & (series.up == 0)]
    assert down.time_s.min() >= 2.0 and down.time_s.max() < 6.0


def test_sim_bad_flags():
    result = CliRunner().invoke(main, ["sim", "--model", "llama-3-8b"])
    assert result.exit_code != 0 and "--model and --gpu go together" in result.output
    result = CliRunner().invoke(main, ["sim", "--fail", "nope:1"])
    assert result.exit_code != 0 and "expected ID:DOWN_S[:UP_S]" in result.output
    result = CliRunner().invoke(main, ["sim", "--model", "llama-3-70b", "--gpu", "h100"])
    assert result.exit_code != 0 and "does not fit" in result.output


def test_sim_json_is_deterministic():
    args = ["sim", "--requests", "150", "--policy", "fair", "--router", "power_of_two",
            "--json"]
    first = CliRunner().invoke(main, args)
    second = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    data = json.loads(first.output)
    assert data["fair / power_of_two"]["counts"]["total"] == 150


def test_sim_with_experiment_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["sim", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["priority / pipeline"]["counts"]["total"] == 120


def test_unknown_policy_flag_names_known_ones():
    result = CliRunner().invoke(main, ["sim", "--policy", "lifo"])
    assert result.exit_code != 0
    assert "unknown policy 'lifo'" in result.output and "fifo" in result.output


def test_plugins_lists_registries():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "policies: adaptive, cost, fair, fifo, priority, slo" in result.output
    assert "locality" in result.output and "max_score" in result.output


def test_config_check_ok(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "instances: 3 (h100-0, h100-1, a100)" in result.output
    exp = load_experiment(path)
    assert exp.control.sheddable_priorities == frozenset({3, 4})
    assert exp.instances[2].decode_s_per_token == 0.03


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster: {instances: []}", "cluster.instances must be a non-empty list"),
        ("cluster: {instances: [{id: a, max_inflight: 0}]}",
         r"cluster.instances\[0\].max_inflight: .*must be >= 1"),
        ("cluster: {instances: [{id: a, gpus: 2}]}", r"unknown key\(s\) \['gpus'\]"),
        ("cluster: {instances: [{id: a, gpu: h100}]}", "needs both 'model' and 'gpu'"),
        ("cluster: {instances: [{id: a, model: llama-3-70b, gpu: h100}]}",
         r"instances\[0\]: .*does not fit"),
        ("cluster: {instances: [{id: a}]}\nfailures: [{instance: b, down_s: 1}]",
         r"failures\[0\].instance: unknown instance 'b'"),
        ("cluster: {instances: [{id: a}]}\nfailures: [{instance: a, down_s: 5, up_s: 2}]",
         r"up_s 2 must be after down_s 5"),
        ("cluster: {instances: [{id: a}]}\nsim: {scrape_interval_s: 0}", "scrape_interval_s=0"),
        ("cluster: {instances: [{id: a}, {id: a}]}", r"duplicate instance ids \['a'\]"),
        ("cluster: {instances: [{id: a}]}\npolicy: lifo", "policy: unknown policies 'lifo'"),
        ("cluster: {instances: [{id: a}]}\nrouter: {type: locality, params: {stride: 0}}",
         "router: .*stride must be an integer >= 1"),
        ("cluster: {instances: [{id: a}]}\ncontrol: {max_queue: -1}", "control: .*max_queue"),
        ("cluster: {instances: [{id: a}]}\nworkload: {rps: 3}", r"workload: unknown key"),
        ("cluster: [oops", r"bad.yaml:1: invalid YAML"),
        ("polcy: fifo", r"unknown key\(s\) \['polcy'\]"),
    ],
)
def test_bad_experiment_files_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code != 0 and str(path) in result.output


def test_missing_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code != 0
    assert "nope.yaml: cannot read" in result.output


def test_sim_replays_a_trace_file(tmp_path):
    path = tmp_path / "az.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:17:{k // 10:02d}.{k % 10}000000,{100 + k},{5 + k % 7}"
             for k in range(40)]
    path.write_text("\n".join(rows) + "\n")
    args = ["sim", "--trace", str(path), "--policy", "fifo", "--router", "round_robin",
            "--json"]
    data = json.loads(CliRunner().invoke(main, args).output)
    assert data["fifo / round_robin"]["counts"]["total"] == 40
    assert data["fifo / round_robin"]["tokens"]["prompt"] == sum(100 + k for k in range(40))
    fast = json.loads(CliRunner().invoke(main, [*args, "--rate-scale", "2",
                                                "--requests", "30"]).output)
    assert fast["fifo / round_robin"]["counts"]["total"] == 30
    assert fast["fifo / round_robin"]["duration_s"] < data["fifo / round_robin"]["duration_s"]


def test_sim_pairs_a_length_table_with_poisson_arrivals(tmp_path):
    path = tmp_path / "lens.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n" +
                    "".join(f"{10 + k},{1 + k % 5}\n" for k in range(20)))
    args = ["sim", "--trace", str(path), "--rate", "4", "--requests", "50", "--policy",
            "fifo", "--router", "random", "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["fifo / random"]["counts"]["total"] == 50
    assert CliRunner().invoke(main, args).output == first.output


def test_sim_bad_trace_names_the_line(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:17:03.0,100,x\n")
    result = CliRunner().invoke(main, ["sim", "--trace", str(path)])
    assert result.exit_code != 0
    assert f"{path}:2: GeneratedTokens" in result.output


def test_hardware_experiment_file_with_trace_and_failure(tmp_path):
    trace = tmp_path / "lens.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" +
                     "".join(f"{200 + k},{10 + k % 9}\n" for k in range(50)))
    exp = tmp_path / "hw.yaml"
    exp.write_text(f"""
cluster:
  instances:
    - {{id: fast, count: 2, model: llama-3-8b, gpu: h100, max_num_seqs: 32}}
    - {{id: solo, model: qwen2.5-7b, gpu: l40s, scheduling_policy: priority}}
policy: priority
router: least_loaded
workload: {{trace: {trace}, rate_per_s: 10, requests: 80}}
sim: {{scrape_interval_s: 0.25}}
failures: [{{instance: solo, down_s: 1.0, up_s: 3.0}}]
""")
    check = CliRunner().invoke(main, ["config", "check", str(exp)])
    assert check.exit_code == 0, check.output
    assert "instances: 3 (fast-0, fast-1, solo)" in check.output
    assert "failures: solo down 1s" in check.output
    result = CliRunner().invoke(main, ["sim", "--config", str(exp), "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)["priority / least_loaded"]["counts"]
    assert counts["total"] == 80 and counts["ok"] == 80
