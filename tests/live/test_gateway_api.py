"""The gateway's OpenAI API over real HTTP: the openai SDK and raw aiohttp against fake
vLLM engines (tests/live/fake_vllm.py)."""

from __future__ import annotations

import json

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live.fake_vllm import MODEL, expected_text
from tests.live.harness import cluster, completion, run


def test_openai_sdk_completions_stream_and_unary():
    async def main():
        async with cluster(("a",), tokens=5, pass_priority=True) as env:
            client = env.openai()
            r = await client.completions.create(model=MODEL, prompt="hi", max_tokens=5)
            assert r.choices[0].text == expected_text("a", 5)
            assert r.usage.completion_tokens == 5
            pieces = []
            chunks = await client.completions.create(model=MODEL, prompt="hi", max_tokens=5,
                                                     stream=True,
                                                     extra_headers={"x-priority": "high"})
            async for chunk in chunks:
                assert chunk.choices, "the usage chunk the client did not ask for is hidden"
                pieces.append(chunk.choices[0].text)
            assert "".join(pieces) == expected_text("a", 5)
            # what the engine got: priority passed down, usage asked for on the stream
            unary, stream = env.engines["a"].bodies
            assert unary["priority"] == 2 and "stream_options" not in unary
            assert stream["priority"] == 1
            assert stream["stream_options"] == {"include_usage": True}
            recs = list(env.gw.records.records())
            assert [r.status for r in recs] == ["ok", "ok"]
            assert [r.output_tokens for r in recs] == [5, 5]
            assert recs[1].first_token_s is not None and recs[1].priority == 1
            await client.close()
    run(main())


def test_openai_sdk_chat_stream_with_usage_and_unary():
    async def main():
        async with cluster(("a",), tokens=3) as env:
            client = env.openai()
            msgs = [{"role": "user", "content": "hello there"}]
            r = await client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3)
            assert r.choices[0].message.content == expected_text("a", 3)
            stream = await client.chat.completions.create(
                model=MODEL, messages=msgs, max_tokens=3, stream=True,
                stream_options={"include_usage": True})
            text, usage = [], None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for c in chunk.choices:
                    text.append(c.delta.content or "")
            assert "".join(text) == expected_text("a", 3)
            assert usage is not None and usage.completion_tokens == 3
            assert "priority" not in env.engines["a"].bodies[1]  # not passed by default
            await client.close()
    run(main())


def test_raw_stream_is_vllm_sse_and_headers_name_the_instance():
    async def main():
        async with cluster(("a",), tokens=2) as env:
            async with env.http.post(env.url + "/v1/completions",
                                     json=completion(stream=True, max_tokens=2),
                                     headers={"x-request-id": "mine-1"}) as r:
                assert r.status == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["x-request-id"] == "mine-1"
                assert r.headers["x-sagellm-instance"] == "a"
                assert r.headers["x-sagellm-attempts"] == "1"
                body = (await r.read()).decode()
            events = [e for e in body.split("\n\n") if e]
            assert events[-1] == "data: [DONE]"
            assert len(events) == 3  # two tokens (usage hidden), [DONE]
            assert json.loads(events[0][len("data: "):])["choices"][0]["text"] == " a0"
    run(main())


def test_models_health_and_metrics():
    async def main():
        async with cluster(("a", "b")) as env:
            status, text = await env.get("/v1/models")
            assert status == 200 and [m["id"] for m in json.loads(text)["data"]] == [MODEL]
            status, text = await env.get("/health")
            assert status == 200
            assert json.loads(text)["instances"] == {"a": "up", "b": "up"}
            client = env.openai()
            for _ in range(3):
                await client.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                                extra_headers={"x-slo-e2e-ms": "10000"})
            await client.close()
            status, text = await env.get("/metrics")
            assert status == 200
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            assert samples[("sagellm_queue_length", (("priority", "0"),))] == 0
            assert samples[("sagellm_dispatches_total", (("instance", "a"),))] == 2
            assert samples[("sagellm_dispatches_total", (("instance", "b"),))] == 1
            assert samples[("sagellm_rejections_total", (("cause", "queue_full"),))] == 0
            assert samples[("sagellm_requests_completed_total", ())] == 3
            assert samples[("sagellm_e2e_seconds_count", (("priority", "2"),))] == 3
            assert samples[("sagellm_slo_attainment", ())] == 1.0
            assert samples[("sagellm_policy_info", (("active", "fifo"), ("policy", "fifo"),
                                                    ("router", "round_robin")))] == 1
            assert samples[("sagellm_instance_up", (("instance", "a"),))] == 1
    run(main())


BAD_HEADERS = [
    ({"x-priority": "urgent"}, "x-priority", "urgent"),
    ({"x-priority": "7"}, "x-priority", "7"),
    ({"x-slo-ttft-ms": "-5"}, "x-slo-ttft-ms", "-5"),
    ({"x-slo-e2e-ms": "soon"}, "x-slo-e2e-ms", "soon"),
    ({"x-cost-budget-usd": "nan"}, "x-cost-budget-usd", "nan"),
    ({"x-prompt-tokens": "0"}, "x-prompt-tokens", "0"),
]


@pytest.mark.parametrize(("headers", "name", "value"), BAD_HEADERS)
def test_bad_header_is_400_naming_it(headers, name, value):
    async def main():
        async with cluster(("a",)) as env:
            status, _, body = await env.post("/v1/completions", completion(), headers=headers)
            assert status == 400
            assert body["error"]["param"] == name
            assert name in body["error"]["message"] and value in body["error"]["message"]
            assert env.engines["a"].bodies == []
    run(main())


BAD_BODIES = [
    ("/v1/completions", b"{not json", None),
    ("/v1/completions", b"[1, 2]", None),
    ("/v1/completions", json.dumps({"prompt": "x"}).encode(), "model"),
    ("/v1/completions", json.dumps({"model": 3, "prompt": "x"}).encode(), "model"),
    ("/v1/completions", json.dumps({"model": MODEL}).encode(), "prompt"),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": 12}).encode(), "prompt"),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": "x", "max_tokens": "ten"})
     .encode(), "max_tokens"),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": "x", "stream": "yes"}).encode(),
     "stream"),
    ("/v1/chat/completions", json.dumps({"model": MODEL}).encode(), "messages"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": ["hi"]}).encode(),
     "messages[0]"),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": [{"content": "x"}]})
     .encode(), "messages[0].role"),
]


@pytest.mark.parametrize(("path", "data", "param"), BAD_BODIES)
def test_bad_body_is_400_naming_the_field(path, data, param):
    async def main():
        async with cluster(("a",)) as env:
            status, _, body = await env.post(path, data=data,
                                             headers={"content-type": "application/json"})
            assert status == 400, body
            assert body["error"]["param"] == param
            assert body["error"]["type"] == "invalid_request_error"
            if param is not None:
                assert param.split("[")[0] in body["error"]["message"]
    run(main())


def test_openai_sdk_sees_400_as_bad_request():
    async def main():
        async with cluster(("a",)) as env:
            client = env.openai()
            with pytest.raises(openai.BadRequestError, match="x-tenant"):
                await client.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                                extra_headers={"x-tenant": "a" * 200})
            await client.close()
    run(main())


def test_body_over_the_limit_is_413_and_duplicate_id_409():
    async def main():
        async with cluster(("a",), max_body_bytes=1024) as env:
            status, _, body = await env.post("/v1/completions", completion("x" * 4000))
            assert status == 413 and "1024" in body["error"]["message"]
            env.engines["a"].hold()
            first = env.http.post(env.url + "/v1/completions", json=completion(),
                                  headers={"x-request-id": "dup"})
            import asyncio
            task = asyncio.ensure_future(first)
            await env.engines["a"].wait_arrivals(1)
            status, _, body = await env.post("/v1/completions", completion(),
                                             headers={"x-request-id": "dup"})
            assert status == 409 and body["error"]["param"] == "x-request-id"
            env.engines["a"].release()
            resp = await task
            assert resp.status == 200
            resp.release()
    run(main())
