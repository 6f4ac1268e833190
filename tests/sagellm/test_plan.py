"""``sagellm plan``: help, ranking output, CSV, plot, trace input, errors."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from control_plane.parallelism import COLUMNS
from sagellm.plan import parse_duration, parse_gpus, plan_cmd


def invoke(*args):
    return CliRunner().invoke(plan_cmd, list(args))


def test_help():
    r = invoke("--help")
    assert r.exit_code == 0
    for opt in ("--model", "--gpus", "--trace", "--slo-ttft", "--slo-tpot", "--objective",
                "--gpus-per-node", "--out", "--plot"):
        assert opt in r.output


@pytest.mark.parametrize("text,seconds", [("2s", 2.0), ("100ms", 0.1), ("1.5", 1.5),
                                          ("250us", 250e-6), (" 3 s ", 3.0), ("1min", 60.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "-1s", "0", "2h"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_gpus():
    assert parse_gpus("8xh100") == (8, "h100")
    assert parse_gpus("4 x A100-80GB") == (4, "a100")
    with pytest.raises(ValueError, match="COUNTxGPU"):
        parse_gpus("h100")


def test_plan_prints_ranking_writes_csv_and_plot(tmp_path):
    out, png = tmp_path / "plan.csv", tmp_path / "goodput.png"
    r = invoke("--model", "llama-3-70b", "--gpus", "8xh100", "--slo-ttft", "2s",
               "--slo-tpot", "100ms", "--out", str(out), "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert "winner" in r.output and "--tensor-parallel-size" in r.output
    assert "fixed lengths, 1024 prompt / 256 output tokens" in r.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert rows[0]["reason"].startswith("winner (simulated: ") and len(rows) == 11
    assert "simulator-confirmed" in r.output
    assert any(r["reason"].startswith("infeasible: ") for r in rows)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_no_confirm_is_analytic_only(tmp_path):
    out = tmp_path / "plan.csv"
    r = invoke("--model", "llama-3-70b", "--gpus", "8xh100", "--slo-tpot", "100ms",
               "--no-confirm", "--out", str(out))
    assert r.exit_code == 0, r.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["reason"] == "winner"


def test_simulator_confirmation_is_deterministic_and_monotone():
    import numpy as np

    from control_plane.parallelism import SLOTarget, estimate_config
    from control_plane.perf import ParallelConfig
    from sagellm.plan_confirm import simulator_confirm

    slo = SLOTarget(ttft_s=1.0, tpot_s=0.05)
    confirm = simulator_confirm("llama-3-8b", "h100", slo, np.array([800, 1500]),
                                np.array([100, 300]), requests=300)
    est = estimate_config("llama-3-8b", "h100", ParallelConfig(tp=1, dp=2))
    low, high = confirm(est, 2.0), confirm(est, 400.0)
    assert low == confirm(est, 2.0)
    assert low == 1.0 and high < low


def test_default_out_is_plan_csv_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("--model", "llama-3-8b", "--gpus", "2xl40s", "--objective", "cost")
    assert r.exit_code == 0, r.output
    assert "ranking written to plan.csv" in r.output and (tmp_path / "plan.csv").exists()
    assert "objective cost" in r.output


def test_trace_lengths_drive_the_plan(tmp_path):
    trace = tmp_path / "lengths.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n"
                     + "".join(f"{p},{o}\n" for p, o in [(300, 40), (2000, 300), (900, 120),
                                                         (5000, 80)]))
    r = invoke("--model", "llama-3-8b", "--gpus", "4xh100", "--trace", str(trace),
               "--slo-ttft", "1.5", "--out", str(tmp_path / "p.csv"))
    assert r.exit_code == 0, r.output
    assert "trace lengths.csv (4 requests)" in r.output and "longest 5080" in r.output


@pytest.mark.parametrize("args,message", [
    (["--model", "llama-9", "--gpus", "8xh100"], "unknown model 'llama-9'"),
    (["--model", "llama-3-8b", "--gpus", "8xb300"], "unknown GPU 'b300'"),
    (["--model", "llama-3-8b", "--gpus", "eight"], "COUNTxGPU"),
    (["--model", "llama-3-70b", "--gpus", "1xh100"], "needs at least 4 x h100 (80 GB)"),
    (["--model", "llama-3-70b", "--gpus", "8xh100", "--slo-tpot", "1ms"],
     "best achievable TPOT is 15 ms"),
    (["--model", "llama-3-8b", "--gpus", "8xh100", "--slo-tpot", "soon"], "duration"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    r = invoke(*args, "--out", str(tmp_path / "p.csv"))
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output
