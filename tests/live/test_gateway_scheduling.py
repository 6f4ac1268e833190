"""The control plane's decisions carried out by the gateway over real HTTP: session
affinity, priority under overload, rejections, run-time policy switch, clients that leave
while queued."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from control_plane.types import Health
from tests.live.fake_vllm import MODEL
from tests.live.harness import Env, cluster, completion, run


async def _send(env: Env, prompt: str, priority: str | None = None, **headers: str):
    h = dict(headers)
    if priority is not None:
        h["x-priority"] = priority
    return await env.post("/v1/completions", completion(prompt), headers=h)


def test_session_affinity_keeps_a_session_on_one_engine():
    async def main():
        async with cluster(("a", "b", "c"), router="session_affinity") as env:
            served = {}
            for session in ("s1", "s2", "s3", "s4", "s5", "s6"):
                for _ in range(4):
                    status, headers, _ = await _send(env, "hi", **{"x-session-id": session})
                    assert status == 200
                    served.setdefault(session, set()).add(headers["X-Sagellm-Instance"])
            assert all(len(v) == 1 for v in served.values()), served
            assert len(set.union(*served.values())) > 1  # sessions spread over engines
    run(main())


def test_critical_requests_finish_before_background_ones_under_overload():
    async def main():
        async with cluster(("a",), policy="priority", max_inflight=1) as env:
            eng = env.engines["a"]
            eng.hold()
            first = asyncio.ensure_future(_send(env, "first", "normal"))
            await eng.wait_arrivals(1)
            tasks = [asyncio.ensure_future(_send(env, f"bg{k}", "background"))
                     for k in range(3)]
            await env.gw.wait_until(lambda: env.gw.cp.cluster.queued == 3, 5)
            tasks += [asyncio.ensure_future(_send(env, f"crit{k}", "critical"))
                      for k in range(3)]
            await env.gw.wait_until(lambda: env.gw.cp.cluster.queued == 6, 5)
            assert eng.max_active == 1  # the slot limit holds work in the gateway's queue
            eng.release()
            results = await asyncio.gather(first, *tasks)
            assert [r[0] for r in results] == [200] * 7
            assert eng.finished == ["first", "crit0", "crit1", "crit2", "bg0", "bg1", "bg2"]
            recs = {r.request_id: r for r in env.gw.records.records()}
            assert len(recs) == 7 and all(r.status == "ok" for r in recs.values())
    run(main())


def test_full_queue_rejects_with_429_and_the_reason():
    async def main():
        async with cluster(("a",), max_inflight=1, control={"max_queue": 2}) as env:
            eng = env.engines["a"]
            eng.hold()
            held = [asyncio.ensure_future(_send(env, f"p{k}")) for k in range(3)]
            await env.gw.wait_until(lambda: env.gw.cp.cluster.queued == 2, 5)
            client = env.openai()
            with pytest.raises(openai.RateLimitError) as exc:
                await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
            await client.close()
            assert exc.value.status_code == 429
            err = exc.value.body
            assert err["code"] == "queue_full"
            assert err["message"].startswith("queue_full: ")
            assert "queue holds 2 requests (limit 2)" in err["message"]
            eng.release()
            assert [r[0] for r in await asyncio.gather(*held)] == [200] * 3
            _, text = await env.get("/metrics")
            assert 'sagellm_rejections_total{cause="queue_full"} 1.0' in text
            rejected = [r for r in env.gw.records.records() if r.status == "rejected"]
            assert len(rejected) == 1 and rejected[0].reject_cause == "queue_full"
    run(main())


def test_no_instance_up_is_503():
    async def main():
        async with cluster(("a",)) as env:
            status, _, body = await env.post("/admin/health",
                                             {"instance": "a", "health": "down"})
            assert status == 200 and body == {"instance": "a", "health": "down"}
            status, _, body = await env.post("/v1/completions", completion())
            assert status == 503
            assert body["error"]["code"] == "no_instances"
            assert "a down" in body["error"]["message"]
            status, _ = await env.get("/health")
            assert status == 503
    run(main())


def test_admin_policy_switch_keeps_queued_requests():
    async def main():
        async with cluster(("a",), max_inflight=1) as env:
            eng = env.engines["a"]
            eng.hold()
            tasks = [asyncio.ensure_future(_send(env, "first", "normal"))]
            await eng.wait_arrivals(1)
            for name, prio in (("low", "low"), ("bg", "background"), ("crit", "critical")):
                tasks.append(asyncio.ensure_future(_send(env, name, prio)))
                n = len(tasks) - 1
                await env.gw.wait_until(lambda n=n: env.gw.cp.cluster.queued == n, 5)
            status, _, body = await env.post("/admin/policy", {"policy": "priority"})
            assert status == 200, body
            assert body["switch"]["from_policy"] == "fifo"
            assert body["switch"]["to_policy"] == "priority"
            assert body["queued"] == 3
            status, _, body = await env.post("/admin/policy", {"policy": "nonsense"})
            assert status == 400 and body["error"]["param"] == "policy"
            assert "nonsense" in body["error"]["message"]
            status, _, body = await env.post("/admin/router", {"router": "least_loaded"})
            assert status == 200 and body["to_router"] == "least_loaded"
            eng.release()
            assert [r[0] for r in await asyncio.gather(*tasks)] == [200] * 4
            assert eng.finished == ["first", "crit", "low", "bg"]
            _, text = await env.get("/admin/state")
            state = json.loads(text)
            assert state["policy"] == "priority" and state["pending"] == 0
    run(main())


def test_client_leaving_while_queued_never_reaches_an_engine():
    async def main():
        async with cluster(("a",), max_inflight=1) as env:
            eng = env.engines["a"]
            eng.hold()
            first = asyncio.ensure_future(_send(env, "first"))
            await eng.wait_arrivals(1)
            leaver = asyncio.ensure_future(_send(env, "leaver", **{"x-request-id": "gone"}))
            await env.gw.wait_until(lambda: env.gw.cp.cluster.queued == 1, 5)
            leaver.cancel()  # closes the client's connection
            await env.gw.wait_until(lambda: "gone" not in env.gw.pending, 5)
            assert env.gw.cp.cluster.queued == 0  # cancelled in the control plane at once
            eng.release()
            assert (await first)[0] == 200
            await env.gw.wait_until(lambda: not env.gw.pending, 5)
            assert eng.prompts() == ["first"]
            recs = {r.request_id: r for r in env.gw.records.records()}
            assert recs["gone"].status == "failed"
            assert recs["gone"].reject_cause == "client_disconnected"
            assert env.gw.cp.cluster["a"].inflight == 0
            assert env.gw.cp.cluster["a"].health is Health.UP
    run(main())


def test_records_endpoint_gives_simulator_records():
    async def main():
        async with cluster(("a",)) as env:
            for k in range(3):
                assert (await _send(env, f"p{k}", **{"x-tenant": "t1"}))[0] == 200
            status, text = await env.get("/admin/records?clear=1")
            assert status == 200
            rows = [json.loads(line) for line in text.splitlines()]
            assert [r["tenant"] for r in rows] == ["t1"] * 3
            assert all(r["status"] == "ok" and r["instance_id"] == "a" for r in rows)
            assert all(r["finish_s"] >= r["dispatch_s"] >= r["arrival_s"] for r in rows)
            assert rows[0]["output_tokens"] == 4 and rows[0]["prompt_tokens"] == 7
            _, text = await env.get("/admin/records")
            assert text == ""
    run(main())


def test_locality_router_sends_a_repeated_prefix_to_one_engine():
    async def main():
        async with cluster(("a", "b", "c"), router="locality") as env:
            shared = "You are a helpful assistant. " * 40  # ~1,200 characters
            served = set()
            for k in range(6):
                status, headers, _ = await _send(env, shared + f"question {k}")
                assert status == 200
                served.add(headers["x-sagellm-instance"])
            assert len(served) == 1
    run(main())


def test_scrapes_feed_the_control_plane_and_failures_are_counted():
    async def main():
        async with cluster(("a", "b")) as env:
            a = env.engines["a"]
            a.running, a.waiting, a.kv_usage = 5, 3, 0.4
            view = env.gw.cp.cluster["a"]
            await env.gw.wait_until(
                lambda: (view.engine_running, view.engine_waiting) == (5, 3), 5)
            assert view.engine_kv_usage == pytest.approx(0.4)
            env.engines["b"].metrics_status = 500
            await env.gw.wait_until(lambda: env.gw.scraper.failures["b"] >= 2, 5)
            assert env.gw.cp.cluster["b"].health is Health.UP  # scrapes never mark down
            _, text = await env.get("/metrics")
            assert 'sagellm_engine_waiting{instance="a"} 3.0' in text
            assert 'sagellm_scrape_failures_total{instance="b"}' in text
    run(main())


def test_admin_token_and_bad_admin_requests():
    async def main():
        async with cluster(("a",), admin_token="s3cret") as env:
            status, _, body = await env.post("/admin/policy", {"policy": "priority"})
            assert status == 401 and body["error"]["type"] == "authentication_error"
            auth = {"authorization": "Bearer s3cret"}
            status, _, body = await env.post("/admin/policy", {"policy": "priority"},
                                             headers=auth)
            assert status == 200 and body["switch"]["to_policy"] == "priority"
            status, _, body = await env.post("/admin/policy", data=b"{oops", headers=auth)
            assert status == 400 and "not valid JSON" in body["error"]["message"]
            status, _, body = await env.post("/admin/router", {}, headers=auth)
            assert status == 400 and body["error"]["param"] == "router"
            status, _, body = await env.post("/admin/health", {"instance": ["x"]},
                                             headers=auth)
            assert status == 400 and body["error"]["param"] == "instance"
            status, _, body = await env.post("/admin/health",
                                             {"instance": "a", "health": "sleepy"},
                                             headers=auth)
            assert status == 400 and body["error"]["param"] == "health"
            # the API itself needs no token
            assert (await _send(env, "x"))[0] == 200
    run(main())
