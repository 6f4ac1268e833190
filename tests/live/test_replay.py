"""Replay: prompts from prefix hashes, headers and body, client-side records, files, CLI.
Against the gateway in front of scripted engines (tests/live/harness.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from click.testing import CliRunner

from control_plane.prefix import block_hashes
from control_plane.records import RequestRecord
from control_plane.types import SLO, Request
from live.replay import (
    ReplayConfig,
    load_records,
    prompt_text,
    prompt_token_ids,
    replay,
    request_body,
    request_headers,
    save_records,
)
from sagellm.cli_replay import replay_cmd
from tests.live.fake_vllm import MODEL
from tests.live.harness import cluster, run
from workloads import shared_system_prompts


def req(rid: str = "r1", arrival: float = 0.0, prompt: int = 40, out: int = 4,
        **kw) -> Request:
    return Request(rid, arrival, prompt, output_tokens=out, **kw)


# --- prompts, headers, body -------------------------------------------------------------

def test_token_ids_share_exactly_the_shared_hash_blocks():
    shared = list(range(100, 148))                        # 3 blocks of 16
    a_ids, b_ids = shared + list(range(500, 540)), shared + list(range(900, 940))
    a = req("a", prompt=len(a_ids), prefix_hashes=block_hashes(a_ids))
    b = req("b", prompt=len(b_ids), prefix_hashes=block_hashes(b_ids))
    ta, tb = prompt_token_ids(a), prompt_token_ids(b)
    assert len(ta) == 88 and len(tb) == 88
    assert ta[:48] == tb[:48]                             # the 3 shared blocks
    assert ta[48:64] != tb[48:64]                         # different 4th block hash
    assert ta[80:] != tb[80:]                             # tails come from the ids
    assert all(8 <= t < 4096 for t in ta + tb)
    assert prompt_token_ids(a) == ta                      # deterministic
    # no hashes: the whole prompt comes from the request id
    c, d = req("c", prompt=30), req("d", prompt=30)
    assert prompt_token_ids(c) != prompt_token_ids(d)
    assert len(prompt_token_ids(c, 7)) == 7
    # hashes beyond the prompt are ignored; vocabulary bounds are honoured
    assert len(prompt_token_ids(a, 20)) == 20
    assert prompt_token_ids(a, 20)[:16] == ta[:16]
    small = prompt_token_ids(a, vocab_size=20, first_token_id=10)
    assert set(small) <= set(range(10, 20))
    words = prompt_text(ta[:5]).split()
    assert len(words) == 5 and prompt_text(ta[:5]) == prompt_text(tb[:5])


def test_headers_and_body_carry_the_request():
    r = req("x", prompt=30, out=7, priority=0, tenant="chat", session_id="s-1",
            slo=SLO(ttft_s=0.5, tpot_s=0.05, e2e_s=10.0), cost_budget_usd=0.25)
    cfg = ReplayConfig(id_prefix="run1-", extra_body={"temperature": 0})
    h = request_headers(r, cfg, 7)
    assert h == {"x-request-id": "run1-x", "x-priority": "0", "x-tenant": "chat",
                 "x-output-tokens": "7", "x-session-id": "s-1", "x-slo-ttft-ms": "500",
                 "x-slo-tpot-ms": "50", "x-slo-e2e-ms": "10000",
                 "x-cost-budget-usd": "0.25"}
    body = request_body(r, cfg, "m", 30, 7)
    assert body["prompt"] == prompt_token_ids(r) and body["max_tokens"] == 7
    assert body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert body["temperature"] == 0
    text = request_body(r, ReplayConfig(prompt_mode="text", stream=False), "m", 30, 7)
    assert isinstance(text["prompt"], str) and len(text["prompt"].split()) == 30
    assert "stream_options" not in text


@pytest.mark.parametrize("kw", [{"time_scale": 0}, {"max_concurrency": 0},
                                {"prompt_mode": "bytes"}, {"first_token_id": 4096},
                                {"max_model_len": 1}])
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        ReplayConfig(**kw)


# --- against the gateway ---------------------------------------------------------------

def _workload(n: int = 12) -> list[Request]:
    return [req(f"r{k}", arrival=0.02 * k, prompt=20 + k, out=4, priority=k % 5,
                tenant=f"t{k % 2}", session_id=f"s{k % 3}",
                slo=SLO(ttft_s=5.0) if k % 2 else None) for k in range(n)]


def test_replay_through_the_gateway_records_every_request():
    async def main():
        async with cluster(("a", "b"), tokens=4, token_delay_s=0.01) as env:
            seen = []
            res = await replay(_workload(), env.url, ReplayConfig(keep_token_times=True),
                               on_record=seen.append)
            recs = res.records
            assert [r.request_id for r in recs] == [f"r{k}" for k in range(12)]
            assert len(seen) == 12 and res.counts() == {"ok": 12, "rejected": 0,
                                                       "failed": 0}
            for k, r in enumerate(recs):
                assert r.status == "ok" and r.output_tokens == 4
                assert r.arrival_s == pytest.approx(0.02 * k)
                assert r.instance_id in ("a", "b") and r.attempts == 1
                assert r.arrival_s <= r.dispatch_s <= r.first_token_s <= r.finish_s
                assert r.priority == k % 5 and r.tenant == f"t{k % 2}"
                assert r.prompt_tokens == 20 + k
                assert r.tpot_s is not None and r.tpot_s > 0
            # the engines got token-id prompts, exact lengths and the hints
            bodies = env.engines["a"].bodies + env.engines["b"].bodies
            assert sorted(len(b["prompt"]) for b in bodies) == list(range(20, 32))
            assert all(b["max_tokens"] == 4 and b["ignore_eos"] for b in bodies)
            gw = {r.request_id: r for r in env.gw.records.records()}
            assert set(gw) == {r.request_id for r in recs}
            assert all(gw[r.request_id].instance_id == r.instance_id for r in recs)
            assert gw["r0"].priority == 0 and gw["r1"].slo == SLO(ttft_s=5.0)
            assert gw["r4"].tenant == "t0"
            # every token arrival is kept: 4 tokens, 3 gaps per request
            assert len(res.token_times) == 12
            assert all([n for _, n in t] == [1, 2, 3, 4] for t in res.token_times.values())
            assert len(res.inter_token_latencies()) == 36
    run(main())


def test_time_scale_and_the_first_arrival_set_the_clock():
    async def main():
        async with cluster(("a",)) as env:
            reqs = [req(f"q{k}", arrival=100.0 + 0.3 * k) for k in range(3)]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            res = await replay(reqs, env.url, ReplayConfig(time_scale=3.0, model=MODEL))
            took = loop.time() - t0
            assert [r.arrival_s for r in res.records] == pytest.approx(
                [100 / 3, 100.3 / 3, 100.6 / 3])
            assert 0.2 <= took < 2.0   # 0.2 s of scaled arrivals, not 100 s
            assert all(r.dispatch_s >= r.arrival_s for r in res.records)
    run(main())


def test_bounded_concurrency_holds_sends_on_the_client():
    async def main():
        async with cluster(("a",), max_inflight=1) as env:
            eng = env.engines["a"]
            eng.hold()
            reqs = [req(f"p{k}", arrival=0.0) for k in range(3)]
            task = asyncio.ensure_future(replay(reqs, env.url, ReplayConfig(
                max_concurrency=2)))
            await eng.wait_arrivals(1)
            await env.gw.wait_until(lambda: env.gw.cp.cluster.queued == 1, 5)
            await asyncio.sleep(0.1)
            assert len(env.gw.pending) == 2      # the third is still on the client
            eng.release()
            res = await task
            assert [r.status for r in res.records] == ["ok"] * 3
            assert res.max_send_lag_s > 0.05
            assert res.records[2].dispatch_s - res.records[2].arrival_s > 0.05
    run(main())


def test_rejections_become_rejected_records():
    async def main():
        async with cluster(("a",), max_inflight=1, control={"max_queue": 1}) as env:
            eng = env.engines["a"]
            eng.hold()
            reqs = [req(f"p{k}", arrival=0.01 * k) for k in range(3)]
            task = asyncio.ensure_future(replay(reqs, env.url))
            await env.gw.wait_until(lambda: len(env.gw.records) == 1, 5)
            eng.release()
            res = await task
            assert [r.status for r in res.records] == ["ok", "ok", "rejected"]
            r = res.records[2]
            assert r.reject_cause == "queue_full" and "queue holds" in r.reject_detail
            assert r.finish_s is None and r.instance_id is None and r.dispatch_s is None
    run(main())


@pytest.mark.parametrize("mode,status,cause", [
    ("status400", "failed", "http_400"),            # the engine's 4xx, passed through
    ("die_after", "failed", "stream_error"),        # cut after its first tokens
    ("status500", "rejected", "retries_exhausted"),  # the gateway gave up (502)
])
def test_engine_errors_become_failed_or_rejected_records(mode, status, cause):
    async def main():
        async with cluster(("a",), tokens=5) as env:
            env.engines["a"].mode = mode
            res = await replay([req("f1")], env.url, ReplayConfig(model=MODEL))
            (r,) = res.records
            assert (r.status, r.reject_cause) == (status, cause) and r.reject_detail
            if mode == "die_after":      # the stream had started: 2 tokens, then an error
                assert r.output_tokens == 2 and r.first_token_s is not None
                assert r.instance_id == "a" and r.finish_s >= r.first_token_s
            gw = next(iter(env.gw.records.records()))
            assert gw.status == r.status
    run(main())


def test_unreachable_server_gives_connection_errors():
    async def main():
        res = await replay([req("u1"), req("u2", arrival=0.01)], "http://127.0.0.1:9",
                           ReplayConfig(model="m", connect_timeout_s=2))
        assert [r.reject_cause for r in res.records] == ["connection_error"] * 2
        assert all(r.status == "failed" and r.instance_id is None for r in res.records)
    run(main())


def test_non_streaming_and_text_prompts():
    async def main():
        async with cluster(("a",), tokens=3) as env:
            res = await replay(_workload(3), env.url, ReplayConfig(
                stream=False, prompt_mode="text", max_model_len=25))
            assert all(r.status == "ok" and r.output_tokens == 3 for r in res.records)
            assert all(r.first_token_s == r.finish_s for r in res.records)
            assert [r.prompt_tokens for r in res.records] == [20, 21, 21]   # 22 + 4 > 25
            assert res.clipped == 1
            bodies = env.engines["a"].bodies
            assert all(isinstance(b["prompt"], str) for b in bodies)
            assert len(bodies[2]["prompt"].split()) == 21 and bodies[2]["max_tokens"] == 4
    run(main())


def test_records_files_round_trip(tmp_path):
    recs = [RequestRecord(request_id="1", arrival_s=0.5, prompt_tokens=10, output_tokens=3,
                          instance_id="a", dispatch_s=0.6, first_token_s=0.7, finish_s=0.9,
                          slo=SLO(ttft_s=1.0), attempts=1),
            RequestRecord(request_id="x2", arrival_s=1.0, prompt_tokens=5, status="rejected",
                          reject_cause="queue_full", tenant="t", priority=4)]
    for suffix in (".parquet", ".csv"):
        path = save_records(recs, tmp_path / f"r{suffix}")
        assert load_records(path) == recs
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        save_records(recs, tmp_path / "r.json")


# --- the command -----------------------------------------------------------------------

def test_replay_command_writes_records(tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(row) for row in (
        {"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]},
        {"timestamp": 50, "input_length": 600, "output_length": 3, "hash_ids": [0, 2]},
        {"timestamp": 100, "input_length": 3000, "output_length": 3,
         "hash_ids": [5, 6, 7, 8, 9, 10]})) + "\n")
    out = tmp_path / "live.parquet"

    async def main():
        async with cluster(("a",), tokens=3) as env:
            runner = CliRunner()
            args = ["--gateway", env.url, "--trace", str(trace), "--time-scale", "2",
                    "--max-model-len", "2048", "--out", str(out)]
            # the command runs its own event loop: run it in a thread
            result = await asyncio.to_thread(runner.invoke, replay_cmd, args)
            assert result.exit_code == 0, result.output
            assert "3 requests in" in result.output and "ok 3" in result.output
            prompts = [b["prompt"] for b in env.engines["a"].bodies]
            assert [len(p) for p in prompts] == [600, 600, 2045]
            assert prompts[0][:512] == prompts[1][:512]       # the shared 512-token block
            assert prompts[0][512:] != prompts[1][512:]
            synth = await asyncio.to_thread(runner.invoke, replay_cmd, [
                "--gateway", env.url, "--requests", "5", "--rate", "50", "--seed", "3",
                "--max-model-len", "256", "--json"])
            assert synth.exit_code == 0, synth.output
            assert json.loads(synth.output)["counts"] == {"ok": 5, "rejected": 0,
                                                          "failed": 0}
            bad = await asyncio.to_thread(runner.invoke, replay_cmd, [
                "--gateway", env.url, "--out", "x.json"])
            assert bad.exit_code == 2 and ".parquet or .csv" in bad.output
    run(main())
    recs = load_records(out)
    assert [r.prompt_tokens for r in recs] == [600, 600, 2045]
    assert [r.arrival_s for r in recs] == pytest.approx([0.0, 0.025, 0.05])
    assert all(r.status == "ok" and r.output_tokens == 3 for r in recs)


def test_prefix_workload_shares_tokens_across_requests():
    trace = shared_system_prompts(np.arange(6) * 0.1, n_prompts=2, system_tokens=64,
                                  user_tokens=20, output_tokens=4, seed=1)
    reqs = list(trace.requests())
    ids = [prompt_token_ids(r, block_size=trace.block_size) for r in reqs]
    by_hash: dict[int, list[int]] = {}
    for r, t in zip(reqs, ids, strict=True):
        assert len(t) == r.prompt_tokens
        by_hash.setdefault(r.prefix_hashes[3], []).append(tuple(t[:64]))
    assert len(by_hash) == 2 and all(len(set(v)) == 1 for v in by_hash.values())
