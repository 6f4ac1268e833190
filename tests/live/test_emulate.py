"""The emulated vLLM engine: its timeline is the engine model's, and its HTTP API speaks
vLLM's dialect (SSE chunks, usage, errors naming the field, /metrics names, small routes)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from control_plane.engine import Engine, EngineConfig
from control_plane.perf.base import Batch, LinearPredictor
from control_plane.prefix import block_hashes
from control_plane.types import Request
from live.calibrate_metrics import parse_snapshot
from live.emulate import EmulatedEngine, EngineRefused
from live.emulate_api import EmulatorServer
from live.metrics_scrape import parse_metrics
from tests.live.harness import run
from tests.sim.engine_replay import replay

PRED = LinearPredictor(overhead_s=0.002, per_token_s=1e-5)
CFG = EngineConfig(max_num_seqs=4, max_num_batched_tokens=256, num_gpu_blocks=64)
MODEL = "emu-model"
NEVER_RESYNC = 1e9  # the engine clock follows the model whatever the machine's load


@asynccontextmanager
async def server(cfg: EngineConfig = CFG, **kw: Any) -> AsyncIterator[tuple[EmulatorServer,
                                                                            aiohttp.ClientSession]]:
    srv = EmulatorServer(EmulatedEngine(cfg, PRED, max_lag_s=NEVER_RESYNC), MODEL, **kw)
    await srv.listen()
    http = aiohttp.ClientSession()
    try:
        yield srv, http
    finally:
        await http.close()
        await srv.close()


async def post(http: aiohttp.ClientSession, url: str, body: Any,
               headers: dict | None = None) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def sse(http: aiohttp.ClientSession, url: str, body: dict) -> list[Any]:
    """The events of a streamed answer (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    async with http.post(url, json=body) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.content:
            line = line.strip()
            if line.startswith(b"data: "):
                data = line[6:]
                out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


# -- the timeline ------------------------------------------------------------------------

def test_timeline_is_the_engine_models():
    """Requests sent at real times get exactly the first-token and finish times the engine
    model gives for those arrival times (queueing, chunked prefill, prefix hits)."""
    shared = block_hashes(list(range(64)))

    async def main():
        emu = EmulatedEngine(CFG, PRED, max_lag_s=NEVER_RESYNC)
        emu.start()
        streams = []
        try:
            for k in range(10):
                prompt = 40 + 37 * k
                streams.append(emu.submit(f"r{k}", prompt, 3 + k % 5,
                                          prefix_hashes=shared[: prompt // 16] if k % 2
                                          else ()))
                await asyncio.sleep(0.002 * (k % 3))
            for s in streams:
                while not s.done:
                    await s.wait(s.tokens)
        finally:
            await emu.stop()
        return emu, streams

    emu, streams = run(main())
    reqs = [Request(s.request_id, s.arrival_s, s.prompt_tokens, output_tokens=s.output_tokens,
                    prefix_hashes=shared[: s.prompt_tokens // 16] if k % 2 else ())
            for k, s in enumerate(streams)]
    model = replay(Engine(emu.config, PRED), reqs)
    assert {s.request_id: (s.first_token_s, s.finish_s, s.tokens, s.cached_tokens)
            for s in streams} == {
        rid: (m["first"], m["finish"], m["output"], m["cached"]) for rid, m in model.items()}
    assert sum(s.cached_tokens for s in streams) > 0
    c = emu.counters
    assert c.success == 10 and c.ttft.count == 10 and c.e2e.count == 10
    assert c.queue_time.count == 10
    assert c.generation_tokens == sum(s.output_tokens for s in streams)
    assert c.itl.count == sum(s.output_tokens - 1 for s in streams)


def test_refusals_and_aborts():
    async def main():
        emu = EmulatedEngine(EngineConfig(num_gpu_blocks=4, block_size=16), PRED,
                             max_lag_s=NEVER_RESYNC)
        with pytest.raises(RuntimeError, match="not running"):
            emu.submit("x", 10, 1)
        emu.start()
        try:
            with pytest.raises(EngineRefused, match="4 KV blocks"):
                emu.submit("big", 60, 10)
            s = emu.submit("a", 20, 40)
            with pytest.raises(ValueError, match="already"):
                emu.submit("a", 20, 10)
            await s.wait(2)
            assert emu.load().running == 1 and emu.load().kv_usage > 0
            assert emu.abort("a") and not emu.abort("a")
            assert s.done and s.error == "aborted"
            assert emu.load() == (0, 0, 0.0, 0, 20, 0)
        finally:
            await emu.stop()
    run(main())


# -- the HTTP API ------------------------------------------------------------------------

def test_streamed_completion_chunks_and_usage():
    async def main():
        async with server() as (srv, http):
            ev = await sse(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": list(range(50)), "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}})
            assert ev[-1] == "[DONE]"
            usage = ev[-2]
            assert usage["choices"] == [] and usage["usage"] == {
                "prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55,
                "prompt_tokens_details": {"cached_tokens": 0}}
            chunks = ev[:-2]
            assert all(c["object"] == "text_completion" and c["model"] == MODEL
                       and "usage" not in c for c in chunks)
            assert "".join(c["choices"][0]["text"] for c in chunks) == " tok" * 5
            assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
            assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
            # without include_usage: no usage chunk; with continuous stats: usage everywhere
            ev = await sse(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": "abcdefgh", "max_tokens": 3, "stream": True})
            assert ev[-1] == "[DONE]" and all(e["choices"] for e in ev[:-1])
            ev = await sse(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": "abcdefgh", "max_tokens": 3, "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True}})
            counts = [e["usage"]["completion_tokens"] for e in ev[:-1]]
            assert counts == sorted(counts) and counts[-1] == 3
            assert all(e["usage"]["prompt_tokens"] == 2 for e in ev[:-1])
    run(main())


def test_streamed_chat_opens_with_the_assistant_role():
    async def main():
        async with server() as (srv, http):
            ev = await sse(http, srv.url + "/v1/chat/completions", {
                "model": MODEL, "messages": [{"role": "user", "content": "x" * 40}],
                "max_completion_tokens": 4, "stream": True,
                "stream_options": {"include_usage": True}})
            assert ev[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert all(e["object"] == "chat.completion.chunk" for e in ev[:-1])
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in ev[1:-2])
            assert text == " tok" * 4
            assert ev[-3]["choices"][0]["finish_reason"] == "length"
            # the gateway's estimate: ceil(chars / 4) + 4 per message
            assert ev[-2]["usage"]["prompt_tokens"] == math.ceil(len("user" + "x" * 40) / 4) + 4
    run(main())


def test_unary_answers_and_the_prompt_length_header():
    async def main():
        async with server() as (srv, http):
            status, body = await post(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": "hello world", "max_tokens": 2})
            assert status == 200 and body["choices"][0]["text"] == " tok tok"
            assert body["choices"][0]["finish_reason"] == "length"
            assert body["usage"]["prompt_tokens"] == 3  # ceil(11 / 4)
            status, body = await post(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": "hello world"}, headers={"x-prompt-tokens": "77"})
            assert body["usage"] == {"prompt_tokens": 77, "completion_tokens": 16,
                                     "total_tokens": 93,
                                     "prompt_tokens_details": {"cached_tokens": 0}}
            status, body = await post(http, srv.url + "/v1/chat/completions", {
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3})
            assert status == 200 and body["object"] == "chat.completion"
            assert body["choices"][0]["message"] == {"role": "assistant",
                                                     "content": " tok tok tok"}
            # a repeated token-id prompt hits the prefix cache: 3 full blocks of 16
            ids = list(range(1000, 1064))
            for expect in (0, 48):
                status, body = await post(http, srv.url + "/v1/completions", {
                    "model": MODEL, "prompt": ids, "max_tokens": 1})
                assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == expect
    run(main())


def test_batched_prompts_are_one_engine_request_each():
    """vLLM's batched completions prompt: each prompt is a request of its own in the engine
    (they are prefilled together), one choice per prompt in order, the usage summed."""
    async def main():
        async with server() as (srv, http):
            status, body = await post(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": [list(range(100, 140)), list(range(200, 220))],
                "max_tokens": 3})
            async with http.get(srv.url + "/metrics") as r:
                snap = parse_snapshot(await r.text())
            status2, body2 = await post(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": ["a" * 80, "b" * 40, "c" * 4], "max_tokens": 2})
        return status, body, snap, status2, body2

    status, body, snap, status2, body2 = run(main())
    assert status == 200
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["text"] == " tok" * 3 for c in body["choices"])
    assert body["usage"]["prompt_tokens"] == 60 and body["usage"]["completion_tokens"] == 6
    assert snap.values["finished"] == 2 and snap.counts["ttft"] == 2
    assert snap.counts["steps"] == 3   # prefilled in one step, then decoded together
    assert status2 == 200 and len(body2["choices"]) == 3
    assert body2["usage"]["prompt_tokens"] == 20 + 10 + 1   # text: 4 characters a token
    assert body2["usage"]["completion_tokens"] == 6


BAD = [
    (b"{nope", None, 400),
    ({"prompt": "x"}, "model", 400),
    ({"model": "other", "prompt": "x"}, "model", 404),
    ({"model": MODEL}, "prompt", 400),
    ({"model": MODEL, "prompt": "x", "max_tokens": 0}, "max_tokens", 400),
    ({"model": MODEL, "prompt": "x", "stream": "yes"}, "stream", 400),
    ({"model": MODEL, "prompt": "x", "n": 2}, "n", 400),
    ({"model": MODEL, "prompt": ["a", "b"], "stream": True}, "stream", 400),
    ({"model": MODEL, "prompt": [[1, 2], []]}, "prompt", 400),
    ({"model": MODEL, "prompt": ["a", ""]}, "prompt[1]", 400),
    ({"model": MODEL, "prompt": "x", "priority": 1}, "priority", 400),
    ({"model": MODEL, "prompt": "x", "max_tokens": 100}, "max_tokens", 400),  # > max_model_len
    ({"model": MODEL, "prompt": list(range(60)), "max_tokens": 30}, "max_tokens", 400),
]


@pytest.mark.parametrize(("body", "param", "status"), BAD,
                         ids=[str(p) + str(i) for i, (_, p, _s) in enumerate(BAD)])
def test_bad_requests_name_the_field(body, param, status):
    async def main():
        async with server(max_model_len=80) as (srv, http):
            kw = {"data": body} if isinstance(body, bytes) else {"json": body}
            async with http.post(srv.url + "/v1/completions", **kw) as r:
                assert r.status == status
                err = (await r.json())["error"]
            assert err["param"] == param and err["code"] == status and err["message"]
            assert srv.engine.in_flight == 0
    run(main())


def test_a_request_beyond_the_kv_cache_and_a_bad_header_are_refused():
    async def main():
        async with server(EngineConfig(num_gpu_blocks=4)) as (srv, http):
            status, body = await post(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": list(range(60)), "max_tokens": 10})
            assert status == 400 and "KV blocks" in body["error"]["message"]
            status, body = await post(http, srv.url + "/v1/completions", {
                "model": MODEL, "prompt": "x"}, headers={"x-prompt-tokens": "many"})
            assert status == 400 and body["error"]["param"] == "x-prompt-tokens"
    run(main())


def test_small_routes():
    async def main():
        async with server() as (srv, http):
            async with http.get(srv.url + "/health") as r:
                assert r.status == 200
            async with http.get(srv.url + "/v1/models") as r:
                models = await r.json()
            assert [m["id"] for m in models["data"]] == [MODEL]
            async with http.get(srv.url + "/load") as r:
                assert await r.json() == {"server_load": 0}
            async with http.get(srv.url + "/version") as r:
                assert "emulated" in (await r.json())["version"]
    run(main())


VLLM_NAMES = ("vllm:num_requests_running", "vllm:num_requests_waiting",
              "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total",
              "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
              "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
              "vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket",
              "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_count",
              "vllm:request_queue_time_seconds_sum", "vllm:request_prefill_time_seconds_sum",
              "vllm:request_decode_time_seconds_count",
              "vllm:request_inference_time_seconds_bucket", "vllm:cache_config_info")


def test_metrics_have_vllm_names_and_count_the_requests():
    async def main():
        async with server() as (srv, http):
            for _ in range(2):
                status, _ = await post(http, srv.url + "/v1/completions", {
                    "model": MODEL, "prompt": list(range(40)), "max_tokens": 3})
                assert status == 200
            async with http.get(srv.url + "/metrics") as r:
                assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
                text = await r.text()
        return text, srv.engine.config, srv.engine.max_late_s

    text, cfg, late = run(main())
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
            assert 'engine="0"' in key
            # every series names the model but the cache's info (vLLM's labels: its fields)
            assert (f'model_name="{MODEL}"' in key) != key.startswith("vllm:cache_config_info")
    names = {k.split("{")[0] for k in values}
    assert set(VLLM_NAMES) <= names
    lab = f'engine="0",model_name="{MODEL}"'
    assert values[f"vllm:prompt_tokens_total{{{lab}}}"] == 80
    assert values[f"vllm:generation_tokens_total{{{lab}}}"] == 6
    assert values[f'vllm:request_success_total{{{lab},finished_reason="length"}}'] == 2
    assert values[f"vllm:prefix_cache_hits_total{{{lab}}}"] == 32  # 2 of 40 tokens' blocks
    assert values[f"vllm:time_to_first_token_seconds_count{{{lab}}}"] == 2
    assert values[f"vllm:inter_token_latency_seconds_count{{{lab}}}"] == 4
    # the phases from the first scheduling, as vLLM v1 times them: queue + prefill = TTFT,
    # prefill + decode = inference
    total = {h: values[f"vllm:{h}_sum{{{lab}}}"] for h in (
        "time_to_first_token_seconds", "request_queue_time_seconds",
        "request_prefill_time_seconds", "request_decode_time_seconds",
        "request_inference_time_seconds")}
    assert all(values[f"vllm:{h}_count{{{lab}}}"] == 2 for h in total)
    assert total["request_prefill_time_seconds"] > 0 and total["request_decode_time_seconds"] > 0
    assert total["request_queue_time_seconds"] + total["request_prefill_time_seconds"] \
        == pytest.approx(total["time_to_first_token_seconds"])
    assert total["request_prefill_time_seconds"] + total["request_decode_time_seconds"] \
        == pytest.approx(total["request_inference_time_seconds"])
    # per step, prompt tokens computed + tokens generated: 40 + 1, 1, 1, then the cached
    # 32 of the second prompt not computed: 8 + 1, 1, 1
    assert values[f"vllm:iteration_tokens_total_count{{{lab}}}"] == 6
    assert values[f"vllm:iteration_tokens_total_sum{{{lab}}}"] == 54
    snap = parse_snapshot(text)   # what the calibration and the fidelity report read
    assert snap.counts["prefill"] == 2 and snap.counts["steps"] == 6
    info = next(k for k in values if k.startswith("vllm:cache_config_info"))
    assert values[info] == 1.0
    assert f'num_gpu_blocks="{cfg.num_gpu_blocks}"' in info
    assert f'block_size="{cfg.block_size}"' in info
    # the emulator's own: how late it got (its latencies mean nothing if it fell behind)
    assert values[f"sagellm_emulator_max_late_seconds{{{lab}}}"] == late >= 0
    assert values[f"sagellm_emulator_resyncs_total{{{lab}}}"] == 0   # NEVER_RESYNC
    # the gateway's scraper reads it
    m = parse_metrics(text)
    assert (m.running, m.waiting, m.kv_usage) == (0, 0, 0.0)
    assert (m.prefix_hits, m.prefix_queries) == (32, 80)
    # one iteration's time is the predictor's
    ttft_sum = values[f"vllm:time_to_first_token_seconds_sum{{{lab}}}"]
    one = PRED.iteration_s(Batch(prefill_tokens=40, prefill_attention=1600))
    assert ttft_sum == pytest.approx(one + PRED.iteration_s(Batch(prefill_tokens=8,
                                                                  prefill_attention=320)))


def test_an_engine_that_falls_behind_says_so_in_its_log_and_metrics(caplog):
    """Two stalls of the whole loop (an overloaded process) while a request decodes: the
    engine's clock jumps to real time each time (resyncs), one warning names the engine
    (at most one every WARN_EVERY_S), and /metrics counts both."""
    import time as wall

    async def main():
        srv = EmulatorServer(EmulatedEngine(CFG, PRED, max_lag_s=0.01), MODEL)
        await srv.listen()
        try:
            async with aiohttp.ClientSession() as http:
                req = asyncio.create_task(post(http, srv.url + "/v1/completions", {
                    "model": MODEL, "prompt": "x" * 32, "max_tokens": 200}))
                for _ in range(2):
                    await asyncio.sleep(0.05)
                    wall.sleep(0.1)          # the loop stalls: no iteration ends on time
                status, out = await req
                async with http.get(srv.url + "/metrics") as r:
                    text = await r.text()
            return srv.url, srv.engine.resyncs, status, out, text
        finally:
            await srv.close()

    with caplog.at_level(logging.WARNING, logger="live.emulate"):
        url, resyncs, status, out, text = run(main())
    assert status == 200 and out["usage"]["completion_tokens"] == 200
    assert resyncs >= 2
    warned = [r.getMessage() for r in caplog.records if r.name == "live.emulate"]
    assert len(warned) == 1 and warned[0].startswith(f"emulated engine {url} fell ")
    assert "behind real time (resyncs so far: 1)" in warned[0]
    lab = f'engine="0",model_name="{MODEL}"'
    assert f"sagellm_emulator_resyncs_total{{{lab}}} {float(resyncs)!r}" in text


def test_a_client_that_leaves_frees_its_request():
    async def main():
        async with server() as (srv, http):
            async with http.post(srv.url + "/v1/completions", json={
                    "model": MODEL, "prompt": "x" * 64, "max_tokens": 900,
                    "stream": True}) as r:
                await r.content.readline()
                assert srv.engine.in_flight == 1
            for _ in range(500):  # the server notices the closed connection (bounded)
                if srv.engine.in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            assert srv.engine.in_flight == 0 and srv.engine.load().kv_usage == 0
    run(main())


def test_a_client_gone_by_the_next_write_is_aborted_quietly(monkeypatch, caplog):
    """A client can leave between two of a stream's writes before the server notices (and
    cancels the handler): the write fails with a connection reset. The request is aborted
    and nothing is logged as an error: a long-running emulator whose clients cancel
    streams (the calibration's background loads) must not fill its log with tracebacks."""
    from aiohttp import web
    from aiohttp.client_exceptions import ClientConnectionResetError
    real_write, writes = web.StreamResponse.write, []

    async def write_then_reset(self, data):
        writes.append(data)
        if len(writes) == 2:
            raise ClientConnectionResetError("Cannot write to closing transport")
        await real_write(self, data)

    async def main():
        async with server() as (srv, http):
            monkeypatch.setattr(web.StreamResponse, "write", write_then_reset)
            async with http.post(srv.url + "/v1/completions", json={
                    "model": MODEL, "prompt": "x" * 64, "max_tokens": 900,
                    "stream": True}) as r:
                assert r.status == 200
                await r.read()           # the stream ends after the failed write
            monkeypatch.undo()
            assert len(writes) == 2 and srv.engine.in_flight == 0
            assert srv.engine.load().kv_usage == 0
            status, out = await post(http, srv.url + "/v1/completions",
                                     {"model": MODEL, "prompt": "x" * 8, "max_tokens": 3})
            assert status == 200 and out["usage"]["completion_tokens"] == 3
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_failing_engine_model_fails_its_requests_and_its_health():
    async def main():
        async with server() as (srv, http):
            def broken(now):
                raise AssertionError("broken model")
            srv.engine.engine.complete = broken
            body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
            status, answer = await post(http, srv.url + "/v1/completions", body)
            assert status == 500 and "broken model" in answer["error"]["message"]
            async with http.get(srv.url + "/health") as r:
                assert r.status == 503
            status, answer = await post(http, srv.url + "/v1/completions", body)
            assert status == 500 and "not running" in answer["error"]["message"]
    run(main())
