"""``sagellm calibrate --engine URL`` against an engine whose iteration times are known: a
``sagellm emulate`` engine running the built-in tiny vllm-cpu profile. The calibration's
probes, its reading of vLLM's metrics and its fit go through vLLM's HTTP API as against a
real server, and must give back the profile the engine runs."""

from __future__ import annotations

from click.testing import CliRunner

from control_plane.perf.profile import FittedPredictor, read_profile
from sagellm.cli import main
from tests.emulated_engines import builtin_predictor, emulated_engines, max_error

PROFILE = "vllm-cpu-llama-tiny"


def test_calibration_gives_back_the_profile_the_engine_runs(tmp_path):
    out = tmp_path / "cal.csv"
    with emulated_engines(PROFILE, "llama-tiny") as (url,):
        res = CliRunner().invoke(main, ["calibrate", "--engine", url, "--out", str(out),
                                        "--max-batched-tokens", "4096", "--budget", "30"])
    assert res.exit_code == 0, res.output
    table = read_profile(out)
    assert table.model == "llama-tiny" and table.meta["max_num_batched_tokens"] == "4096"
    fitted = FittedPredictor.from_table(table)
    assert max_error(fitted, builtin_predictor(PROFILE)) < 0.01   # measured here: 0.02 %
