"""live.emulate_host: emulated engines on one machine slow each other down as the profile's
neighbour slowdowns say (control_plane.engine.contention), as the simulator's instances
with one host do."""

from __future__ import annotations

import asyncio

import pytest

from control_plane.engine import EngineConfig, SharedHostPredictor
from control_plane.perf.base import LinearPredictor
from live.emulate import EmulatedEngine
from live.emulate_host import EmulatedHost
from tests.live.harness import run

CFG = EngineConfig(max_num_seqs=4, max_num_batched_tokens=256, num_gpu_blocks=64)
BASE = LinearPredictor(overhead_s=0.02)       # 20 ms per iteration, whatever it holds
SLOW = (0.5, 0.25, 0.0, 0.0, 0.0, 0.0)      # decode x1.5 next to a decoding neighbour


def _decode_s(stream) -> float:
    return stream.finish_s - stream.first_token_s


def test_a_decoding_neighbour_slows_the_decode_by_its_slowdown():
    async def main():
        engines = [EmulatedEngine(CFG, SharedHostPredictor(BASE, SLOW), max_lag_s=1.0)
                   for _ in range(2)]
        EmulatedHost(engines)
        for e in engines:
            e.start()
        try:
            alone = engines[0].submit("alone", 16, 11)   # 10 decode steps, the other idle
            while not alone.done:
                await alone.wait(alone.tokens)
            both = [e.submit(f"both-{k}", 16, 11) for k, e in enumerate(engines)]
            for s in both:
                while not s.done:
                    await s.wait(s.tokens)
        finally:
            for e in engines:
                await e.stop()
        return _decode_s(alone), [_decode_s(s) for s in both]

    alone, both = run(main())
    assert alone == pytest.approx(10 * 0.02, rel=0.02)
    # both decode side by side: each step of each 1.5 x as long (the prefills, started
    # together, were timed before either decoded)
    for d in both:
        assert d == pytest.approx(10 * 0.02 * 1.5, rel=0.05)


def test_a_host_needs_two_engines():
    async def main():
        EmulatedHost([EmulatedEngine(CFG, BASE)])
    with pytest.raises(ValueError, match="2 or more engines"):
        asyncio.run(main())
