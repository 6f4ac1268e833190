"""Test harness: fake vLLM engines + the gateway on ephemeral loopback ports, one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
from multidict import CIMultiDict

from control_plane import ControlPlane, InstanceSpec
from live.gateway import Gateway, GatewayConfig
from tests.live.fake_vllm import MODEL, FakeVllm

TEST_TIMEOUT_S = 30.0

FAST = {"scrape_interval_s": 0.05, "health_interval_s": 0.05, "health_fail_threshold": 1,
        "tick_interval_s": 0.05}


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test coroutine with a bound on its duration."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TEST_TIMEOUT_S)
    return asyncio.run(bounded())


@dataclass
class Env:
    gw: Gateway
    engines: dict[str, FakeVllm]
    url: str
    http: aiohttp.ClientSession

    def openai(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                                  timeout=10.0, **kw)

    async def post(self, path: str, body: Any = None, headers: dict | None = None,
                   data: bytes | None = None) -> tuple[int, CIMultiDict, Any]:
        """(status, headers, JSON body or text) of a POST."""
        kw = {"data": data} if data is not None else {"json": body}
        async with self.http.post(self.url + path, headers=headers, **kw) as r:
            text = await r.text()
            try:
                parsed = await r.json(content_type=None)
            except ValueError:
                parsed = text
            return r.status, CIMultiDict(r.headers), parsed

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path) as r:
            return r.status, await r.text()


def completion(prompt: str = "hello", max_tokens: int = 4, **kw: Any) -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, **kw}


@asynccontextmanager
async def cluster(names: tuple[str, ...] = ("a", "b"), *, policy: object = "fifo",
                  router: object = "round_robin", control: dict | None = None,
                  max_inflight: int = 64, tokens: int = 4, token_delay_s: float = 0.0,
                  **config: Any) -> AsyncIterator[Env]:
    engines = {n: FakeVllm(n, tokens=tokens, token_delay_s=token_delay_s) for n in names}
    gw = None
    http = aiohttp.ClientSession()
    try:
        specs = [InstanceSpec(n, url=await e.start(), max_inflight=max_inflight)
                 for n, e in engines.items()]
        cp = ControlPlane(specs, policy, router, control)
        gw = Gateway(cp, config=GatewayConfig(**{**FAST, **config}))
        port = await gw.listen("127.0.0.1", 0)
        yield Env(gw, engines, f"http://127.0.0.1:{port}", http)
    finally:
        await http.close()
        if gw is not None:
            await gw.close()
        for e in engines.values():
            await e.stop()
