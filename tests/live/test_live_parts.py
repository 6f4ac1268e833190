"""The gateway's parts on their own: headers, bodies, metrics parsing and scraping, the
engine client (against the fake vLLM over HTTP), the gateway's metric helpers."""

from __future__ import annotations

import json
import math

import pytest

from control_plane.prefix import block_hashes
from control_plane.types import SLO, EngineStats
from live.client import EngineClient, EngineError, EngineTimeouts, normalize_url
from live.gateway_body import CHAT, COMPLETIONS, BodyError, parse_body
from live.headers import HeaderError, RequestHints, parse_hints
from live.metrics_scrape import MetricsParseError, MetricsScraper, parse_metrics
from live.prom import Histogram, SloWindow
from tests.live.fake_vllm import MODEL, FakeVllm, expected_text
from tests.live.harness import run

# -- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, RequestHints()),
    ({"x-priority": "CRITICAL"}, RequestHints(priority=0)),
    ({"x-priority": " 4 "}, RequestHints(priority=4)),
    ({"x-priority": "background", "x-tenant": "t", "x-session-id": "s"},
     RequestHints(priority=4, tenant="t", session_id="s")),
    ({"x-slo-ttft-ms": "250", "x-slo-e2e-ms": "2000"},
     RequestHints(slo=SLO(ttft_s=0.25, e2e_s=2.0))),
    ({"x-slo-tpot-ms": "50"}, RequestHints(slo=SLO(tpot_s=0.05))),
    ({"x-cost-budget-usd": "0.5", "x-prompt-tokens": "100", "x-output-tokens": "20",
      "x-request-id": "abc"},
     RequestHints(cost_budget_usd=0.5, prompt_tokens=100, output_tokens=20,
                  request_id="abc")),
])
def test_parse_hints(headers, expected):
    assert parse_hints(headers) == expected


@pytest.mark.parametrize(("headers", "name"), [
    ({"x-priority": "5"}, "x-priority"),
    ({"x-priority": "-1"}, "x-priority"),
    ({"x-tenant": ""}, "x-tenant"),
    ({"x-session-id": "s" * 300}, "x-session-id"),
    ({"x-slo-ttft-ms": "0"}, "x-slo-ttft-ms"),
    ({"x-slo-tpot-ms": "inf"}, "x-slo-tpot-ms"),
    ({"x-cost-budget-usd": "-1"}, "x-cost-budget-usd"),
    ({"x-output-tokens": "1.5"}, "x-output-tokens"),
    ({"x-request-id": "a\nb"}, "x-request-id"),
])
def test_bad_hints_name_the_header(headers, name):
    with pytest.raises(HeaderError) as exc:
        parse_hints(headers)
    assert exc.value.header == name and name in str(exc.value)
    assert repr(next(iter(headers.values()))) in str(exc.value)


# -- bodies -------------------------------------------------------------------------------


def test_body_estimates_and_forwarded_bytes():
    raw = json.dumps({"model": "m", "prompt": "x" * 400, "max_tokens": 9}).encode()
    b = parse_body(raw, COMPLETIONS)
    assert (b.prompt_tokens, b.max_tokens, b.stream) == (100, 9, False)
    assert b.forward is raw  # nothing to add: the client's bytes as they are
    assert len(b.prefix_hashes) == 400 // 64
    b2 = parse_body(raw.replace(b"x" * 400, b"x" * 200 + b"y" * 200), COMPLETIONS)
    assert b2.prefix_hashes[:3] == b.prefix_hashes[:3] != b2.prefix_hashes[3:]

    b = parse_body(json.dumps({"model": "m", "prompt": list(range(40)), "stream": True,
                               "stream_options": {"continuous_usage_stats": True}}).encode(),
                   COMPLETIONS, priority=3)
    assert b.prompt_tokens == 40 and b.prefix_hashes == block_hashes(list(range(40)))
    sent = json.loads(b.forward)
    assert sent["priority"] == 3 and b.hide_usage
    assert sent["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}

    b = parse_body(json.dumps({"model": "m", "prompt": "p", "stream": True, "priority": 9,
                               "stream_options": {"include_usage": True}}).encode(),
                   COMPLETIONS, priority=0)
    assert json.loads(b.forward)["priority"] == 0 and not b.hide_usage

    chat = {"model": "m", "max_completion_tokens": 5, "messages": [
        {"role": "system", "content": "s" * 40},
        {"role": "user", "content": [{"type": "text", "text": "u" * 40}]}]}
    b = parse_body(json.dumps(chat).encode(), CHAT)
    assert b.max_tokens == 5 and b.prompt_tokens == math.ceil((6 + 4 + 80) / 4) + 8


@pytest.mark.parametrize(("body", "kind", "param"), [
    ({"model": "m", "prompt": ""}, COMPLETIONS, "prompt"),
    ({"model": "m", "prompt": [1, "a"]}, COMPLETIONS, "prompt"),
    ({"model": "m", "prompt": "x", "n": 0}, COMPLETIONS, "n"),
    ({"model": "m", "prompt": "x", "stream_options": 3}, COMPLETIONS, "stream_options"),
    ({"model": "m", "messages": []}, CHAT, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, CHAT,
     "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}],
      "max_completion_tokens": 0}, CHAT, "max_completion_tokens"),
])
def test_bad_bodies_name_the_field(body, kind, param):
    with pytest.raises(BodyError) as exc:
        parse_body(json.dumps(body).encode(), kind)
    assert exc.value.param == param


def test_normalize_url():
    assert normalize_url("127.0.0.1:8001/v1/") == "http://127.0.0.1:8001"
    assert normalize_url("https://h:1") == "https://h:1"
    with pytest.raises(ValueError, match="ftp"):
        normalize_url("ftp://h:1")


# -- metrics --------------------------------------------------------------------------------

V1 = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 40.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 1.0
vllm:time_to_first_token_seconds_count{model_name="m"} 1.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.05
"""

OLD = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.75
# TYPE vllm:gpu_prefix_cache_hits counter
vllm:gpu_prefix_cache_hits_total{model_name="m"} 5.0
# TYPE vllm:gpu_prefix_cache_queries counter
vllm:gpu_prefix_cache_queries_total{model_name="m"} 10.0
"""


def test_parse_metrics_v1_and_older_names():
    m = parse_metrics(V1)
    assert (m.running, m.waiting, m.kv_usage) == (4, 2, 0.375)
    assert (m.prefix_hits, m.prefix_queries) == (40.0, 100.0)
    m = parse_metrics(OLD)
    assert (m.running, m.waiting, m.kv_usage, m.prefix_hits) == (1, 0, 0.75, 5.0)
    no_kv = "vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n"
    assert parse_metrics(no_kv).kv_usage == 0.0 and parse_metrics(no_kv).prefix_hits is None


@pytest.mark.parametrize("text", ["", "vllm:num_requests_running 1\n",
                                  "vllm:num_requests_running{ 1\nvllm:num_requests_waiting 0"])
def test_parse_metrics_errors(text):
    with pytest.raises(MetricsParseError):
        parse_metrics(text)


def test_scraper_reports_stats_and_counts_failures():
    async def main():
        eng = FakeVllm("a")
        url = await eng.start()
        seen: list[tuple[str, EngineStats]] = []
        failed: list[str] = []
        async with EngineClient(url) as client:
            s = MetricsScraper({"a": client}, lambda i, st: seen.append((i, st)), 1.0,
                               on_failure=lambda i, why: failed.append(why))
            eng.running, eng.waiting, eng.kv_usage = 3, 1, 0.5
            eng.prefix_queries, eng.prefix_hits = 10, 2
            st = await s.scrape_once("a")
            assert st == EngineStats(3, 1, 0.5, None) and seen == [("a", st)]
            eng.prefix_queries, eng.prefix_hits = 20, 8
            assert (await s.scrape_once("a")).prefix_cache_hit_rate == pytest.approx(0.6)
            eng.metrics_status = 500
            assert await s.scrape_once("a") is None
            assert s.failures["a"] == 1 and s.consecutive_failures["a"] == 1
            assert "500" in failed[0] and len(seen) == 2
            eng.metrics_status = 200
            await s.scrape_once("a")
            assert s.consecutive_failures["a"] == 0 and s.scrapes["a"] == 3
        await eng.stop()
        async with EngineClient(url, timeouts=EngineTimeouts(scrape_s=0.5)) as client:
            s = MetricsScraper({"a": client}, lambda i, st: None, 1.0)
            assert await s.scrape_once("a") is None  # the engine is gone
            assert s.last_error["a"].startswith("ClientConnectorError")
    run(main())


# -- client -------------------------------------------------------------------------------


def test_engine_client_against_a_vllm_like_server():
    async def main():
        eng = FakeVllm("a", tokens=3)
        url = await eng.start()
        async with EngineClient(url + "/v1", pass_priority=True) as c:
            r = await c.create("completions", {"model": MODEL, "prompt": "x"}, priority=1)
            assert r["choices"][0]["text"] == expected_text("a", 3)
            chunks = [x async for x in c.stream("chat", {"model": MODEL, "messages": [
                {"role": "user", "content": "hi"}]}, priority=4)]
            raw = b"".join(chunks).decode()
            assert raw.endswith("data: [DONE]\n\n") and '"usage"' in raw
            assert [b.get("priority") for b in eng.bodies] == [1, 4]
            assert eng.bodies[1]["stream_options"] == {"include_usage": True}
            assert await c.health() and (await c.models())["data"][0]["id"] == MODEL
            eng.healthy = False
            assert await c.health_error() == "HTTP 503"
            eng.mode = "status400"
            with pytest.raises(EngineError) as exc:
                await c.create("completions", {"model": MODEL, "prompt": "x"})
            assert exc.value.status == 400
        async with EngineClient(url) as c:  # priority not configured: never sent
            eng.mode = "ok"
            await c.create("completions", {"model": MODEL, "prompt": "x"}, priority=1)
            assert "priority" not in eng.bodies[-1]
        await eng.stop()
    run(main())


# -- the gateway's metric helpers -----------------------------------------------------------


def test_slo_window_and_histogram():
    w = SloWindow(10.0)
    assert math.isnan(w.attainment(0.0)[0])
    for t, met in ((0.0, True), (1.0, False), (5.0, True)):
        w.add(t, met)
    assert w.attainment(5.0) == (pytest.approx(2 / 3), 3)
    assert w.attainment(10.5) == (0.5, 2)
    w.add(12.0, True)
    assert w.attainment(12.0) == (1.0, 2)
    assert w.attainment(30.0)[1] == 0
    h = Histogram((0.1, 1.0), ("0", "1"))
    for v in (0.05, 0.5, 5.0):
        h.observe(1, v)
    fam = h.family("x_seconds", "doc", "priority")
    got = {(s.name, s.labels.get("le"), s.labels["priority"]): s.value for s in fam.samples}
    assert got[("x_seconds_bucket", "0.1", "1")] == 1
    assert got[("x_seconds_bucket", "1.0", "1")] == 2
    assert got[("x_seconds_bucket", "+Inf", "1")] == 3
    assert got[("x_seconds_sum", None, "1")] == pytest.approx(5.55)
    assert got[("x_seconds_count", None, "0")] == 0


def test_live_package_imports_its_modules_only_on_use():
    """``python -m live.op_profile`` must run on a GPU machine with torch and no HTTP stack:
    importing the package imports none of its modules; its names still resolve."""
    import subprocess
    import sys
    code = ("import sys, live; print(sorted(m for m in sys.modules if m.startswith('live')));"
            "print(live.Gateway.__module__, live.EngineClient.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = r.stdout.splitlines()
    assert first == "['live']"
    assert second == "live.gateway live.client"
    import live
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        live.nope  # noqa: B018
