"""``sagellm emulate``: help, errors naming the option, engine sizing, and the command run
as a process serving two engines."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
import numpy as np
import pytest
from click.testing import CliRunner

from control_plane.engine import EngineConfig
from control_plane.perf import (
    FittedPredictor,
    LinearPredictor,
    ParallelConfig,
    PipelinedPredictor,
    ProfileTable,
    RooflinePredictor,
    write_profile,
)
from sagellm.cli import main
from sagellm.cli_emulate import build_engine
from sim.hardware import instances_for
from tests.live.harness import run


def test_help_names_the_api_and_the_options():
    result = CliRunner().invoke(main, ["emulate", "--help"])
    assert result.exit_code == 0, result.output
    for text in ("/v1/completions", "/metrics", "--model", "--gpu", "--profile", "--predictor",
                 "--instances", "--base-port", "--max-num-seqs", "--num-gpu-blocks"):
        assert text in result.output


@pytest.mark.parametrize(("args", "named"), [
    (["--model", "no-such-model"], "--model"),
    (["--model", "llama-3-8b", "--gpu", "tpu9"], "--gpu"),
    (["--model", "llama-3-8b", "--predictor", "quadratic"], "--predictor"),
    (["--model", "llama-3-8b", "--predictor", "linear:overhead=1"], "--predictor"),
    (["--model", "llama-3-8b", "--predictor", "linear:overhead_s=-1"], "--predictor"),
    (["--model", "llama-3-8b", "--profile", "/no/such.csv"], "--profile"),
    (["--model", "llama-3-8b", "--port", "1", "--base-port", "2"], "--base-port"),
    (["--model", "llama-3-8b", "--base-port", "65535", "--instances", "2"], "--instances"),
    (["--model", "llama-3-70b", "--gpu", "h100"], "--gpu-memory-utilization"),
    (["--model", "llama-3-8b", "--max-num-seqs", "0"], "--max-num-seqs"),
    (["--model", "llama-3-8b", "--instances", "2", "--shared-host"], "--shared-host"),
    (["--model", "llama-3-8b", "--shared-host"], "--instances"),
])
def test_bad_options_are_named(args, named):
    result = CliRunner().invoke(main, ["emulate", *args])
    assert result.exit_code != 0
    assert named in result.output, result.output


def test_engines_are_sized_like_the_simulators_instances(tmp_path):
    base = EngineConfig(max_num_seqs=32)
    cfg, pred, what = build_engine("llama-3-8b", "h100", ParallelConfig(), base)
    inst = instances_for("llama-3-8b", "h100", 1, engine=base)[0]
    assert cfg == inst.engine and cfg.max_num_seqs == 32
    assert isinstance(pred, RooflinePredictor) and "roofline" in what
    cfg, pred, _ = build_engine("llama-3-8b", "h100", ParallelConfig(pp=2), base)
    assert isinstance(pred, PipelinedPredictor)
    # a linear predictor with an explicit KV size needs no known model
    cfg, pred, _ = build_engine("my-model", "h100", ParallelConfig(), base,
                                predictor="linear:overhead_s=0.01,per_token_s=1e-4",
                                num_gpu_blocks=123)
    assert cfg.num_gpu_blocks == 123 and pred == LinearPredictor(0.01, 1e-4)
    # a measured profile
    path = tmp_path / "p.csv"
    feats = np.array([[512, 512 * 512, 0, 0], [0, 0, 8, 8000], [1024, 1024 ** 2, 4, 4000]],
                     float)
    write_profile(path, ProfileTable("llama-3-8b", "h100", 1, 1, feats,
                                     np.array([0.03, 0.012, 0.06])))
    cfg, pred, what = build_engine("llama-3-8b", "h100", ParallelConfig(), base,
                                   profile=str(path))
    assert isinstance(pred, FittedPredictor) and "profile" in what
    result = CliRunner().invoke(main, ["emulate", "--model", "llama-3-8b", "--tp", "2",
                                       "--profile", str(path)])
    assert result.exit_code != 0 and "--profile" in result.output and "tp=1" in result.output


def test_the_command_serves_engines_until_interrupted():
    async def main_():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from sagellm.cli import main; main()", "emulate",
            "--model", "tiny", "--predictor", "linear:overhead_s=0.001,per_token_s=1e-5",
            "--num-gpu-blocks", "200", "--port", "0", "--instances", "2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        urls: list[str] = []
        lines: list[str] = []
        try:
            while len(urls) < 2:
                line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
                assert line, "the command ended early:\n" + "".join(lines)
                lines.append(line)
                m = re.match(r"engine (http://\S+) ", line)
                if m:
                    urls.append(m.group(1))
            async with aiohttp.ClientSession() as http:
                for url in urls:
                    async with http.get(url + "/health") as r:
                        assert r.status == 200
                    async with http.post(url + "/v1/completions", json={
                            "model": "tiny", "prompt": "hello", "max_tokens": 3}) as r:
                        body = await r.json()
                    assert body["usage"]["completion_tokens"] == 3
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, "".join(lines) + out.decode()
        assert "200 blocks" in lines[0]
    run(main_())
