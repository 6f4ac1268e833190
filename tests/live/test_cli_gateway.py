"""``sagellm gateway``: engine options, experiment files, and the command run as a process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

import aiohttp
import click
import pytest

from control_plane import ConfigError
from sagellm.cli_gateway import build_gateway, parse_engines, parse_spec
from tests.live.fake_vllm import MODEL, FakeVllm
from tests.live.harness import run


def test_parse_engines_and_specs():
    assert parse_engines(["http://127.0.0.1:8001", "b=127.0.0.1:8002/v1"]) == [
        (None, "http://127.0.0.1:8001"), ("b", "http://127.0.0.1:8002")]
    with pytest.raises(click.BadParameter, match="ID=URL"):
        parse_engines(["=http://x:1"])
    assert parse_spec("{type: priority, params: {aging_s: 5}}", "policy") == {
        "type": "priority", "params": {"aging_s": 5}}
    assert parse_spec("fifo", "policy") == "fifo"


def test_build_gateway_from_urls_and_from_a_config(tmp_path):
    gw = build_gateway(parse_engines(["http://127.0.0.1:8001", "x=http://127.0.0.1:8002"]),
                       policy="priority", max_inflight=3, max_queue=10)
    assert [v.instance_id for v in gw.cp.cluster.instances] == ["127.0.0.1:8001", "x"]
    assert gw.cp.cluster["x"].spec.max_inflight == 3 and gw.cp.config.max_queue == 10
    assert gw.cp.policy.name == "priority" and gw.cp.router.name == "round_robin"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("cluster:\n  instances:\n"
                   "    - {id: a, url: 'http://127.0.0.1:9001', max_inflight: 4}\n"
                   "    - {id: b, max_inflight: 5}\n"
                   "    - {id: c}\n"
                   "policy: {type: priority, params: {aging_s: 10}}\n"
                   "router: session_affinity\ncontrol: {max_queue: 7}\n")
    gw = build_gateway(parse_engines(["b=http://127.0.0.1:9002", "http://127.0.0.1:9003"]),
                       config_path=str(cfg))
    assert {i: c.base_url for i, c in gw.clients.items()} == {
        "a": "http://127.0.0.1:9001", "b": "http://127.0.0.1:9002",
        "c": "http://127.0.0.1:9003"}
    assert gw.cp.policy.name == "priority" and gw.cp.router.name == "session_affinity"
    assert gw.cp.config.max_queue == 7 and gw.cp.cluster["b"].spec.max_inflight == 5
    with pytest.raises(click.BadParameter, match="'c' has no URL"):
        build_gateway(parse_engines(["b=http://127.0.0.1:9002"]), config_path=str(cfg))
    with pytest.raises(click.BadParameter, match="unknown instance"):
        build_gateway(parse_engines(["z=http://127.0.0.1:9002"]), config_path=str(cfg))
    with pytest.raises(click.BadParameter, match="nonsense"):
        build_gateway(parse_engines(["http://h:1"]), policy="nonsense")
    with pytest.raises(ConfigError):
        build_gateway([], config_path=str(tmp_path / "missing.yaml"))
    with pytest.raises(click.UsageError):
        build_gateway([])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gateway_command_serves_and_writes_records(tmp_path):
    records = tmp_path / "records.jsonl"

    async def main():
        eng = FakeVllm("e", tokens=3)
        url = await eng.start()
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from sagellm.cli_gateway import gateway_cmd; gateway_cmd()",
            "--engine", f"e={url}", "--port", str(port), "--policy", "priority",
            "--records", str(records), "--log-level", "warning",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(200):  # wait for the server to come up (bounded)
                    try:
                        async with http.get(base + "/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the gateway did not come up")
                async with http.post(base + "/v1/completions", json={
                        "model": MODEL, "prompt": "hi", "max_tokens": 3}) as r:
                    assert r.status == 200
                    assert r.headers["x-sagellm-instance"] == "e"
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
            await eng.stop()
        text = out.decode()
        assert proc.returncode == 0, text
        assert "policy priority, router round_robin" in text
        rows = [json.loads(line) for line in records.read_text().splitlines()]
        assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["instance_id"] == "e"
    run(main())
