"""live.speed_check against the timed fake: the factors by which an engine runs slower or
faster than its profile, and FittedPredictor.scaled."""

from __future__ import annotations

import pytest

from control_plane.errors import ConfigError
from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor
from live.calibrate import CalibrationConfig, CalibrationError
from live.calibrate_design import Probe
from live.client import EngineClient
from live.speed_check import SpeedCheck, speed_check
from tests.live.fake_timed_vllm import SPIN_S, TimedVllm, neighbour_pair
from tests.live.fake_vllm import FakeVllm
from tests.live.harness import run

PROFILE = FittedPredictor(0.002, 1e-5, 3e-9, 2e-4, 2e-7, request_ttft_overhead_s=0.004,
                          neighbour_decode_slowdown_decode=0.1)
FAST = CalibrationConfig(max_batched_tokens=4096, max_num_seqs=16, decode_probe_s=0.01,
                         background_s=0.02)


def test_scaled_multiplies_the_decode_and_prefill_parts_and_keeps_the_rest():
    s = PROFILE.scaled(decode=1.25, prefill=0.8)
    dec = Batch(decode_seqs=8, decode_context=2000)
    pre = Batch(prefill_tokens=512, prefill_attention=512 * 512)
    assert s.iteration_s(dec) == pytest.approx(1.25 * PROFILE.iteration_s(dec))
    # the prefill iteration's intercept is decode work (paid by every iteration)
    want = 1.25 * PROFILE.intercept_s + 0.8 * (PROFILE.iteration_s(pre) - PROFILE.intercept_s)
    assert s.iteration_s(pre) == pytest.approx(want)
    assert s.request_ttft_overhead_s == 0.004 and s.neighbour_decode_slowdown_decode == 0.1
    assert PROFILE.scaled() == PROFILE
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="decode"):
            PROFILE.scaled(decode=bad)
    with pytest.raises(ConfigError, match="prefill"):
        PROFILE.scaled(prefill=0.0)


def test_a_prefill_probe_of_several_prompts_is_one_iteration_of_all_of_them():
    p = Probe("prefill", 128, 4)
    assert p.features(300.0) == (512.0, 4 * 128 * 128, 1.0, 300.0)
    assert p.label == "prefill 4x128" and Probe("prefill", 128).label == "prefill 128"


async def _check(engine, predictor, **kw):
    url = await engine.start()
    try:
        async with EngineClient(url) as client:
            return await speed_check(client, predictor, cfg=FAST, **kw)
    finally:
        await engine.stop()


@pytest.mark.parametrize("decode, prefill", [(1.2, 1.1), (0.9, 1.0)])
def test_speed_check_recovers_how_much_slower_or_faster_the_engine_runs(decode, prefill):
    engine = TimedVllm(PROFILE.scaled(decode=decode, prefill=prefill))
    said: list[str] = []
    got = run(_check(engine, PROFILE, repeats=3, say=said.append))
    assert got.decode == pytest.approx(decode, rel=0.03)
    assert got.prefill == pytest.approx(prefill, rel=0.03)
    assert len(got.decode_ratios) == 3 and len(got.prefill_ratios) == 3
    assert got.as_dict()["decode"] == round(got.decode, 4)
    # one prompt per prefill probe measures the same factors on this engine
    one = run(_check(TimedVllm(PROFILE.scaled(decode=decode, prefill=prefill)), PROFILE,
                     repeats=2, prefill=Probe("prefill", 512)))
    assert one.prefill == pytest.approx(prefill, rel=0.03)
    assert any(line.startswith("speed check http") for line in said)
    # the same engine measured against its own model: no drift
    same = run(_check(TimedVllm(PROFILE), PROFILE, repeats=2))
    assert same.decode == pytest.approx(1.0, rel=0.03)
    assert same.prefill == pytest.approx(1.0, rel=0.03)


def test_speed_check_names_an_engine_it_cannot_probe():
    with pytest.raises(ValueError, match="repeats"):
        run(_check(TimedVllm(PROFILE), PROFILE, repeats=0))

    async def unreachable():
        async with EngineClient("http://127.0.0.1:9") as client:
            return await speed_check(client, PROFILE, cfg=FAST)
    with pytest.raises(CalibrationError, match=r"127\.0\.0\.1:9"):
        run(unreachable())
    # a server without vLLM's request histograms cannot be measured: the missing one named
    with pytest.raises(CalibrationError, match="vllm:request_queue_time_seconds"):
        run(_check(FakeVllm("e0"), PROFILE, repeats=1))


def test_speed_check_measures_the_decode_slowdown_next_to_a_decoding_neighbour():
    # decode slowed 20 % while the other engine decodes, 10 % while it spins
    slow = (0.2, 0.0, 0.0, 0.0, 0.1, 0.0)
    engine, other = neighbour_pair(PROFILE, slow)
    cfg = CalibrationConfig(max_batched_tokens=4096, max_num_seqs=16, decode_probe_s=0.01,
                            background_s=0.02, neighbour_spin_s=SPIN_S)

    async def main():
        urls = [await engine.start(), await other.start()]
        try:
            async with EngineClient(urls[0]) as a, EngineClient(urls[1]) as b:
                return await speed_check(a, PROFILE, cfg=cfg, repeats=3, neighbour=b)
        finally:
            await engine.stop()
            await other.stop()
    got = run(main())
    assert got.decode_by_decode == pytest.approx(0.2, abs=0.03)
    assert len(got.neighbour_ratios) == 3
    # the alone probes waited out the neighbour's spin after each load (else x1.1)
    assert got.decode == pytest.approx(1.0, rel=0.03)
    assert got.as_dict()["decode_by_decode"] == round(got.decode_by_decode, 4)
    # without a neighbour nothing of it is measured or reported
    alone = run(_check(TimedVllm(PROFILE), PROFILE, repeats=1))
    assert alone.decode_by_decode is None and "decode_by_decode" not in alone.as_dict()
    # what a run's JSON keeps reads back as the same (rounded) check, with or without it
    for check in (got, alone):
        again = SpeedCheck.from_dict(check.as_dict())
        assert again.as_dict() == check.as_dict()
        want = None if check is alone else round(got.decode_by_decode, 4)
        assert again.decode_by_decode == want
