"""Engine failures behind the gateway over real HTTP: transparent retry before the first
byte, a clear error after the stream started, health-driven failover."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from control_plane.types import Health
from tests.live.fake_vllm import MODEL, expected_text
from tests.live.harness import cluster, completion, run


@pytest.mark.parametrize(("mode", "stream"), [
    ("status500", False), ("status500", True), ("drop", False), ("drop", True),
    ("drop_headers", True)])
def test_failure_before_first_byte_is_retried_on_the_other_engine(mode, stream):
    async def main():
        async with cluster(("a", "b"), health_interval_s=60.0) as env:
            env.engines["a"].mode = mode
            client = env.openai()
            for k in range(4):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"p{k}", max_tokens=4, stream=stream)
                if stream:
                    text = "".join([c.choices[0].text async for c in raw.parse()])
                else:
                    text = raw.parse().choices[0].text
                assert text == expected_text("b", 4)
                assert raw.headers["x-sagellm-instance"] == "b"
            await client.close()
            assert env.engines["b"].finished == ["p0", "p1", "p2", "p3"]
            tried_a = env.engines["a"].prompts()
            assert tried_a  # round robin sent some requests to a first
            recs = {r.request_id: r for r in env.gw.records.records()}
            assert all(r.status == "ok" and r.instance_id == "b" for r in recs.values())
            assert sorted(r.attempts for r in recs.values()) == sorted(
                [2] * len(tried_a) + [1] * (4 - len(tried_a)))
            assert env.gw.cp.counters.retried == len(tried_a)
            _, text = await env.get("/metrics")
            assert 'sagellm_upstream_errors_total{instance="a"' in text
    run(main())


def test_every_engine_failing_ends_in_502_with_the_last_error():
    async def main():
        async with cluster(("a", "b"), health_interval_s=60.0,
                           control={"max_attempts": 2}) as env:
            for e in env.engines.values():
                e.mode = "status500"
            status, _, body = await env.post("/v1/completions", completion())
            assert status == 502
            assert body["error"]["code"] == "retries_exhausted"
            assert "engine broke" in body["error"]["message"]
            assert "a, b" in body["error"]["message"]
    run(main())


def test_engine_4xx_is_passed_through_not_retried():
    async def main():
        async with cluster(("a", "b"), health_interval_s=60.0) as env:
            env.engines["a"].mode = "status400"
            status, headers, body = await env.post("/v1/completions", completion())
            assert status == 400 and body["message"] == "prompt too long"
            assert headers["x-sagellm-instance"] == "a"
            assert env.engines["b"].bodies == []
            rec = next(iter(env.gw.records.records()))
            assert rec.status == "failed" and rec.reject_cause == "engine_rejected"
            assert env.gw.cp.counters.failed == 1 and env.gw.cp.counters.retried == 0
    run(main())


def test_engine_killed_mid_stream_gives_the_client_a_clear_error():
    async def main():
        async with cluster(("a",), tokens=6, health_interval_s=60.0) as env:
            env.engines["a"].mode = "die_after"
            env.engines["a"].die_after = 2
            client = env.openai()
            got = []
            stream = await client.completions.create(model=MODEL, prompt="x", max_tokens=6,
                                                     stream=True)
            with pytest.raises(openai.APIError, match="failed after it started"):
                async for chunk in stream:
                    got.append(chunk.choices[0].text)
            assert got == [" a0", " a1"]
            # raw SSE: the tokens, then an error event, and no [DONE]
            async with env.http.post(env.url + "/v1/completions",
                                     json=completion(stream=True, max_tokens=6)) as r:
                assert r.status == 200
                body = (await r.read()).decode()
            events = [e for e in body.split("\n\n") if e]
            assert len(events) == 3 and "[DONE]" not in body
            err = json.loads(events[-1][len("data: "):])["error"]
            assert err["type"] == "upstream_error" and "stream from a" in err["message"]
            recs = list(env.gw.records.records())
            assert [r.status for r in recs] == ["failed", "failed"]
            assert recs[0].reject_cause == "upstream_error"
            assert env.gw.cp.counters.failed == 2 and env.gw.cp.counters.retried == 0
            assert env.gw.cp.cluster["a"].inflight == 0
            await client.close()
    run(main())


def test_health_checks_take_a_dead_engine_out_and_back():
    async def main():
        async with cluster(("a", "b")) as env:
            cp = env.gw.cp
            env.engines["a"].healthy = False
            await env.gw.wait_until(lambda: cp.cluster["a"].health is Health.DOWN, 5)
            for _ in range(4):
                status, headers, _ = await env.post("/v1/completions", completion())
                assert status == 200 and headers["x-sagellm-instance"] == "b"
            assert env.engines["a"].bodies == []
            _, text = await env.get("/health")
            assert json.loads(text)["instances"] == {"a": "down", "b": "up"}
            env.engines["a"].healthy = True
            await env.gw.wait_until(lambda: cp.cluster["a"].health is Health.UP, 5)
            _, text = await env.get("/metrics")
            assert 'sagellm_health_check_failures_total{instance="a"}' in text
    run(main())


@pytest.mark.parametrize("stream", [False, True])
def test_request_stuck_on_an_engine_marked_down_moves_to_the_other(stream):
    async def main():
        async with cluster(("a", "b")) as env:
            a = env.engines["a"]
            a.hold()  # a takes requests but never answers
            task = asyncio.ensure_future(env.post(
                "/v1/completions", completion("stuck", stream=stream)))
            await a.wait_arrivals(1)
            a.healthy = False  # the health checker marks it down: its work is retried
            status, headers, _ = await task
            assert status == 200
            assert headers["x-sagellm-instance"] == "b"
            assert headers["x-sagellm-attempts"] == "2"
            assert env.engines["b"].finished == ["stuck"]
            rec = next(iter(env.gw.records.records()))
            assert rec.status == "ok" and rec.attempts == 2 and rec.instance_id == "b"
            a.release()
    run(main())


def test_stream_cut_by_failover_ends_with_an_error_event():
    async def main():
        async with cluster(("a", "b"), tokens=50, token_delay_s=0.02) as env:
            cp = env.gw.cp
            async with env.http.post(env.url + "/v1/completions",
                                     json=completion("long", stream=True, max_tokens=50)) as r:
                assert r.headers["x-sagellm-instance"] == "a"
                first = await r.content.readuntil(b"\n\n")
                assert b" a0" in first
                env.engines["a"].healthy = False
                rest = (await r.read()).decode()
            assert '"type": "upstream_error"' in rest and "[DONE]" not in rest
            assert "instance a down: GET /health failed 1 time(s) in a row (last: HTTP 503)" \
                in rest
            await env.gw.wait_until(lambda: not env.gw.pending, 5)
            assert cp.cluster["a"].inflight == 0 and cp.cluster["b"].inflight == 0
            recs = list(env.gw.records.records())
            assert len(recs) == 1 and recs[0].status == "failed"
    run(main())
