"""sagellm compare: the report (Markdown, CSV, plots), the command line and its errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from sagellm.cli import main
from sagellm.compare import best_runs, load_summaries, run_grid, write_report
from tests.sagellm.compare_helpers import SMALL_CLUSTER, small_grid, write_azure_trace

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ("slo_attainment", "goodput", "latency_p99", "cost_per_mtok", "queue_delay_by_priority")


@pytest.fixture
def trace(tmp_path):
    return write_azure_trace(tmp_path / "tiny_azure.csv")


def test_report_has_the_grid_a_table_per_load_the_best_and_plots(tmp_path, trace):
    out = tmp_path / "out"
    df = run_grid(small_grid(trace), out, workers=1, progress=False)
    path = write_report(df, out)
    text = path.read_text()
    for heading in ("# sagellm compare", "## Grid", "## Load 0.5 x estimated capacity",
                    "## Load 1.5 x estimated capacity", "## Best policy / router per load",
                    "## Plots"):
        assert f"\n{heading}\n" in f"\n{text}\n", heading
    assert ("| cluster | policy | router | offered req/s | SLO attainment % | goodput req/s "
            "| p99 TTFT s | p99 e2e s | USD / Mtok | rejected |") in text
    assert text.count("| small | fifo | round_robin |") == 2  # one row per load
    assert "estimated capacity" in text and "`tiny_azure.csv`, 120 requests, seed 0" in text
    assert text.count("Best on `small`: **") == 2
    for stem in PLOTS:
        png = out / "plots" / f"{stem}.png"
        assert png.read_bytes()[:8] == PNG and f"(plots/{stem}.png)" in text
    csv = pd.read_csv(out / "summaries.csv")
    assert len(csv) == 8 and {"slo_attainment", "goodput_rps", "e2e_p99_s"} <= set(csv)


def test_best_is_highest_attainment_then_goodput_then_cost():
    base = {"workload": "w", "cluster": "c", "load_unit": "capacity", "load": 1.0,
            "router": "r", "cost_per_mtok_usd": 1.0}
    df = pd.DataFrame([
        {**base, "policy": "a", "slo_attainment": 0.9, "goodput_rps": 9.0},
        {**base, "policy": "b", "slo_attainment": 0.95, "goodput_rps": 5.0},
        {**base, "policy": "c", "slo_attainment": 0.95, "goodput_rps": 6.0,
         "cost_per_mtok_usd": 3.0},
        {**base, "policy": "d", "slo_attainment": 0.95, "goodput_rps": 6.0,
         "cost_per_mtok_usd": 2.0},
        {**base, "policy": "e", "slo_attainment": 0.5, "goodput_rps": 1.0, "load": 2.0}])
    best = best_runs(df)
    assert list(zip(best["load"], best["policy"], strict=True)) == [(1.0, "d"), (2.0, "e")]


def test_cli_runs_resumes_and_rebuilds_the_report(tmp_path, trace):
    out = tmp_path / "out"
    args = ["compare", "--trace", str(trace), "--requests", "100", "--policy", "fifo",
            "--policy", "slo", "--router", "least_loaded", "--load", "0.5,1.2",
            "--out", str(out), "--workers", "1", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "## Load 1.2 x estimated capacity" in result.output
    assert "| default | slo | least_loaded |" in result.output
    assert len(list((out / "runs").glob("*.parquet"))) == 4
    report = (out / "report.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.parquet")}
    result = CliRunner().invoke(main, args)  # resumes: nothing to run, same report
    assert result.exit_code == 0, result.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.parquet")} == stamps
    assert (out / "report.md").read_text() == report
    (out / "report.md").unlink()
    result = CliRunner().invoke(main, ["compare", "--report-only", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rebuilt = (out / "report.md").read_text()
    # same tables; report-only orders rows by policy / router name, so compare as sets
    assert set(rebuilt.splitlines()) == set(report.splitlines())
    assert len(load_summaries(out)) == 4


def test_cli_sweep_file_and_rate_scale(tmp_path, trace):
    (tmp_path / "small.yaml").write_text(json.dumps(SMALL_CLUSTER))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"workload: {{trace: {trace.name}, requests: 80}}\n"
                     "policies: [fifo]\nrouters: [round_robin]\nloads: [1.0]\n"
                     "clusters: [{name: small, file: small.yaml}]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compare", "--config", str(sweep), "--rate-scale",
                                       "1,3", "--out", str(out), "--workers", "1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "## Load 3 x the trace's rate" in result.output
    df = pd.read_csv(out / "summaries.csv")
    assert list(df["rate_scale"]) == [1.0, 3.0] and set(df["cluster"]) == {"small"}
    assert list(df["total"]) == [80, 80]


@pytest.mark.parametrize(("args", "error"), [
    (["--policy", "nope"], "--policy"),
    (["--router", "nope"], "--router"),
    (["--load", "0.5,abc"], "--load"),
    (["--load", "0"], "--load"),
    (["--load", "0.5", "--rate-scale", "2"], "are exclusive"),
    (["--cluster", "nope"], "--cluster"),
    (["--ray-address", "auto"], "--ray-address goes with --executor ray"),
    (["--workers", "0"], "--workers"),
    (["--report-only", "--policy", "fifo"], "it takes no --policy"),
    (["--report-only"], "no complete run files"),
    (["--trace", "/nonexistent/trace.csv"], "/nonexistent/trace.csv"),
])
def test_cli_errors_name_the_bad_option(tmp_path, args, error):
    result = CliRunner().invoke(main, ["compare", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code != 0
    assert error in result.output, result.output


def test_cli_config_errors_name_the_file_and_key(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("policies: [fifo]\nrouters: [round_robin]\nloads: [1, -2]\n")
    result = CliRunner().invoke(main, ["compare", "--config", str(sweep), "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code != 0
    assert f"{sweep}: loads[1]: must be a number > 0" in result.output


def test_compare_help():
    result = CliRunner().invoke(main, ["compare", "--help"])
    assert result.exit_code == 0 and "--report-only" in result.output
