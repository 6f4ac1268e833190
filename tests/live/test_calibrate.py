"""Calibration: the probe design, the metrics deltas, and a full run against a fake engine
whose iteration times follow a known model (the fit must recover its coefficients)."""

from __future__ import annotations

import asyncio

import pytest

from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor
from live.calibrate import CalibrationConfig, CalibrationError, calibrate
from live.calibrate_design import Design, EngineLimits, Probe, plan, schedule
from live.calibrate_metrics import MissingMetricsError, parse_snapshot
from live.client import EngineClient
from tests.live.fake_timed_vllm import MODEL, SPIN_S, TimedVllm, neighbour_pair
from tests.live.fake_vllm import FakeVllm
from tests.live.harness import run

# intercept, per prefill token, per attention pair, per decode seq, per context token
TRUE = FittedPredictor(0.002, 1e-5, 3e-9, 2e-4, 2e-7)
SMALL = Design(prefill_tokens=(16, 64, 256, 1024, 2047), decode_batches=(1, 2, 4, 8),
               decode_contexts=(16, 256, 1024), window_steps=4, repeats=1)
FAST = dict(max_batched_tokens=4096, max_num_seqs=16, decode_probe_s=0.01, background_s=0.02)


# --- design ------------------------------------------------------------------------------

def test_plan_respects_limits_and_holds_out_interior_points():
    probes = plan(Design(), EngineLimits(max_model_len=2048, max_batched_tokens=4096,
                                         max_num_seqs=8))
    pre = [p for p in probes if p.kind == "prefill"]
    dec = [p for p in probes if p.kind == "decode"]
    assert [p.prompt_tokens for p in pre] == [16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2047]
    assert [p.prompt_tokens for p in pre if p.holdout] == [32, 128, 512, 1024]
    assert not pre[0].holdout and not pre[-1].holdout
    assert all(p.batch * p.prompt_tokens <= 4096 and p.batch <= 8 for p in dec)
    assert {(p.batch, p.prompt_tokens) for p in dec} == {
        (1, 16), (1, 128), (1, 512), (1, 1024), (2, 16), (2, 128), (2, 512), (2, 1024),
        (4, 16), (4, 128), (4, 512), (4, 1024), (8, 16), (8, 128), (8, 512)}
    held = {(p.batch, p.prompt_tokens) for p in dec if p.holdout}
    assert held == {(1, 128), (2, 16), (2, 512), (4, 128)}   # (8, 16): a corner at 8 seqs
    # a short context and a small token budget drop points; the prompt cap is budget - 1
    small = plan(Design(), EngineLimits(max_model_len=300, max_batched_tokens=256,
                                        max_num_seqs=4, kv_capacity_tokens=1024))
    assert [p.prompt_tokens for p in small if p.kind == "prefill"] == [16, 32, 64, 128, 255]
    assert all(p.prompt_tokens + 2 * 16 <= 300 and p.batch <= 4 and p.batch * p.prompt_tokens
               <= 256 for p in small if p.kind == "decode")


def test_probe_features_are_the_measured_iteration():
    assert Probe("prefill", 100).features(40.0) == (100.0, 10000.0, 1.0, 40.0)
    assert Probe("decode", 100, 4).features(430.0) == (0.0, 0.0, 4.0, 430.0)
    assert Probe("decode", 100, 4).label == "decode 4x100"


def test_schedule_runs_rounds_in_seeded_order():
    probes = plan(SMALL, EngineLimits(2048, 4096, 16))
    a, b = schedule(probes, 3, seed=5), schedule(probes, 3, seed=5)
    assert a == b and len(a) == 3 * len(probes)
    for r in range(3):
        assert sorted(map(repr, (p for k, p in a if k == r))) == sorted(map(repr, probes))
    assert [p for _, p in a[:len(probes)]] != [p for _, p in a[len(probes):2 * len(probes)]]


@pytest.mark.parametrize("bad", [dict(repeats=0), dict(window_steps=0),
                                 dict(prefill_tokens=()), dict(decode_batches=(2, 0))])
def test_design_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=r"Design\."):
        Design(**bad)


# --- metrics -----------------------------------------------------------------------------

METRICS = """# HELP vllm:num_requests_running x
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 3.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 2.0
vllm:generation_tokens_total{engine="0",model_name="m"} 40.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 400.0
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 30.0
vllm:iteration_tokens_total_bucket{engine="0",le="1.0",model_name="m"} 20.0
"""
for _name in ("request_queue_time", "request_prefill_time", "request_decode_time",
              "request_inference_time", "e2e_request_latency", "time_to_first_token"):
    METRICS += (f'vllm:{_name}_seconds_sum{{engine="0",model_name="m"}} 0.5\n'
                f'vllm:{_name}_seconds_count{{engine="0",model_name="m"}} 5.0\n'
                f'vllm:{_name}_seconds_sum{{engine="1",model_name="m"}} 0.25\n')


def test_snapshot_sums_label_sets_and_subtracts():
    s = parse_snapshot(METRICS)
    assert s.values["finished"] == 5.0 and s.busy == 1
    assert s.sums["prefill"] == 0.75 and s.counts["prefill"] == 5.0
    assert s.counts["steps"] == 30.0 and s.sums["steps"] == 400.0
    d = parse_snapshot(METRICS.replace("} 3.0", "} 7.0")) - s
    assert d.values["finished"] == 4.0 and d.sums["decode"] == 0.0
    both = s + s                       # two engines' totals together
    assert both.values["finished"] == 10.0 and both.sums["prefill"] == 1.5
    assert both.counts["steps"] == 60.0 and both - s == s


def test_snapshot_names_missing_metrics():
    text = "\n".join(ln for ln in METRICS.splitlines() if "decode_time" not in ln)
    with pytest.raises(MissingMetricsError, match="vllm:request_decode_time_seconds"):
        parse_snapshot(text)


# --- a full run against the timed fake ---------------------------------------------------

async def _calibrate(engine: TimedVllm, cfg: CalibrationConfig, **kw):
    url = await engine.start()
    try:
        async with EngineClient(url) as client:
            return await calibrate(client, cfg, **kw)
    finally:
        await engine.stop()


def test_calibrate_recovers_the_engine_model_and_overheads():
    engine = TimedVllm(TRUE, api_s=0.002)
    cfg = CalibrationConfig(design=SMALL, **FAST)
    said: list[str] = []
    res = run(_calibrate(engine, cfg, gpu="cpu", meta={"hardware": "fake"}, say=said.append))
    fp = res.report.full
    got = (fp.intercept_s, fp.per_prefill_token_s, fp.per_attention_pair_s,
           fp.per_decode_seq_s, fp.per_context_token_s)
    want = (TRUE.intercept_s, TRUE.per_prefill_token_s, TRUE.per_attention_pair_s,
            TRUE.per_decode_seq_s, TRUE.per_context_token_s)
    assert got == pytest.approx(want, rel=0.02)
    assert res.report.holdout_err_max < 0.01 and res.report.holdout_rows == 6
    t = res.table
    assert (t.model, t.gpu, t.tp, t.pp) == (MODEL, "cpu", 1, 1)
    assert len(t.iteration_s) == 5 + 11 and not res.dropped
    assert t.extra["kind"].count("prefill") == 5
    assert t.meta["hardware"] == "fake" and t.meta["engine"] == "vllm fake-1"
    assert t.meta["max_num_batched_tokens"] == 4096
    # engine-side times are virtual, so the engine front end adds exactly nothing; the
    # fake API server sleeps 2 ms before a request reaches the engine
    o = res.overheads
    assert abs(o["engine_frontend_ttft_s"]) < 1e-9
    assert o["api_server_ttft_s"] >= 0.002 and o["request_ttft_overhead_s"] >= 0.002
    assert o["request_e2e_overhead_s"] >= 0.002
    assert float(t.meta["request_ttft_overhead_s"]) == pytest.approx(
        o["request_ttft_overhead_s"], abs=1e-6)
    assert any(s.startswith("warm-up:") for s in said) and res.prefix_hits == 0
    # decode rows: B sequences whose total context grew past B * L during the window; the
    # requests were cancelled after it (the engine aborted them)
    for m in res.measurements:
        if m.probe.kind == "decode":
            assert m.features[3] > m.probe.batch * m.probe.prompt_tokens
    # (and each prefill probe's background request, once the joining one was done)
    assert engine.aborted == sum(m.probe.batch if m.probe.kind == "decode" else 1
                                 for m in res.measurements) + 8   # + the warm-up's


def test_decode_windows_last_the_design_steps_on_a_slow_engine():
    # 20 ms iterations: a 4-iteration window is 80 ms, longer than decode_probe_s
    model = FittedPredictor(0.02, 1e-6, 0.0, 1e-5, 0.0)
    engine = TimedVllm(model, max_model_len=512)
    design = Design(prefill_tokens=(16, 32), decode_batches=(1, 2), decode_contexts=(16,),
                    window_steps=4, repeats=1)
    res = run(_calibrate(engine, CalibrationConfig(design=design, **FAST)))
    dec = [m for m in res.measurements if m.probe.kind == "decode"]
    assert len(dec) == 2
    for m in dec:
        want = model.iteration_s(Batch(decode_seqs=m.probe.batch))
        assert m.iteration_s == pytest.approx(want, rel=1e-6)
    steps = [b for b in engine.batches if b.decode_seqs == 2 and not b.prefill_tokens]
    assert len(steps) >= 4


def test_decode_probes_fall_back_to_whole_runs_when_reports_come_late():
    # /metrics only shows a run after it ended (an API server far behind its engine): the
    # decode rows come from the requests' whole runs, N - 1 decode steps each
    engine = TimedVllm(TRUE, max_model_len=160, late_stats=True)
    design = Design(prefill_tokens=(16, 64), decode_batches=(1, 2, 4), decode_contexts=(16,),
                    window_steps=4, repeats=1)
    res = run(_calibrate(engine, CalibrationConfig(design=design, retries=0, **FAST)))
    dec = [m for m in res.measurements if m.probe.kind == "decode"]
    assert len(dec) == 3 and engine.aborted == 0
    # prefill probes cannot see their background decoding: dropped, not mismeasured
    assert not [m for m in res.measurements if m.probe.kind == "prefill"]
    assert sorted(d.split(":")[0] for d in res.dropped) == ["prefill 16", "prefill 64"]
    for m in dec:
        b = m.probe.batch
        assert m.features == (0.0, 0.0, b, b * (16 + 144 / 2))   # N = 160 - 16
        want = TRUE.iteration_s(Batch(decode_seqs=b, decode_context=int(m.features[3])))
        assert m.iteration_s == pytest.approx(want, rel=0.03)


def test_calibrate_refuses_a_busy_engine():
    async def main():
        engine = TimedVllm(FittedPredictor(0.01, 0, 0, 0, 0))
        url = await engine.start()
        try:
            async with EngineClient(url) as client:
                hog = asyncio.ensure_future(client.create(
                    "completions", {"model": MODEL, "prompt": [20] * 8, "max_tokens": 200}))
                await asyncio.sleep(0.05)
                cfg = CalibrationConfig(design=SMALL, settle_timeout_s=0.3, **FAST)
                with pytest.raises(CalibrationError, match="stays busy"):
                    await calibrate(client, cfg)
                hog.cancel()
        finally:
            await engine.stop()
    run(main())


def test_calibrate_names_missing_metrics_and_unreachable_engines():
    async def main():
        fake = FakeVllm("e0")          # speaks the API, exports no request histograms
        url = await fake.start()
        try:
            async with EngineClient(url) as client:
                with pytest.raises(CalibrationError, match=r"/metrics: .*"
                                   r"vllm:request_queue_time_seconds"):
                    await calibrate(client, CalibrationConfig(design=SMALL, **FAST))
        finally:
            await fake.stop()
        async with EngineClient("http://127.0.0.1:9") as client:
            with pytest.raises(CalibrationError,
                               match=r"cannot reach the engine at http://127\.0\.0\.1:9"):
                await calibrate(client)
    run(main())


# --- the neighbour phase: two timed fakes that slow each other down ----------------------

def test_neighbour_phase_measures_how_a_busy_neighbour_slows_the_engine():
    # decode by decode, by prefill; prefill by decode, by prefill; decode, prefill by spin
    slow = (0.2, 0.3, 0.05, 0.25, 0.1, 0.08)
    engine, other = neighbour_pair(TRUE, slow)
    cfg = CalibrationConfig(design=SMALL, neighbour_spin_s=SPIN_S, **FAST)

    async def main():
        urls = [await engine.start(), await other.start()]
        try:
            async with EngineClient(urls[0]) as a, EngineClient(urls[1]) as b:
                return await calibrate(a, cfg, neighbour=b, neighbour_repeats=3)
        finally:
            await engine.stop()
            await other.stop()
    res = run(main())
    got = res.neighbour.slowdown
    assert got[("decode", "decode")] == pytest.approx(0.2, abs=0.02)
    assert got[("decode", "prefill")] == pytest.approx(0.3, abs=0.02)
    # the prefill probe's iteration also decodes its background request: separated
    assert got[("prefill", "decode")] == pytest.approx(0.05, abs=0.02)
    assert got[("prefill", "prefill")] == pytest.approx(0.25, abs=0.02)
    # a spinning neighbour; and the alone probes waited its spin out (else every
    # slowdown would come out low)
    assert got[("decode", "spin")] == pytest.approx(0.1, abs=0.02)
    assert got[("prefill", "spin")] == pytest.approx(0.08, abs=0.02)
    assert all(len(v) == 3 for v in res.neighbour.ratios.values())
    assert len(res.neighbour.ratios) == 6
    # the design itself ran with the neighbour idle: the fit is the undisturbed model
    fp = res.report.full
    assert fp.per_decode_seq_s == pytest.approx(TRUE.per_decode_seq_s, rel=0.02)
    assert fp.intercept_s == pytest.approx(TRUE.intercept_s, rel=0.02)
    # the profile carries the four figures; the simulator reads them back
    fitted = FittedPredictor.from_table(res.table)
    assert fitted.neighbour_decode_slowdown_prefill == pytest.approx(0.3, abs=0.02)
    assert fitted.neighbour_prefill_slowdown_spin == pytest.approx(0.08, abs=0.02)
    assert fitted.neighbour_spin_s == SPIN_S
    assert "neighbour_method" in res.table.meta
    assert any(line.startswith("neighbour engine busy") for line in res.lines())


def test_neighbour_phase_names_an_unreachable_neighbour():
    async def main():
        engine = TimedVllm(TRUE)
        url = await engine.start()
        try:
            async with EngineClient(url) as a, EngineClient("http://127.0.0.1:9") as b:
                with pytest.raises(CalibrationError, match=r"http://127\.0\.0\.1:9"):
                    await calibrate(a, CalibrationConfig(design=SMALL, **FAST), neighbour=b)
        finally:
            await engine.stop()
    run(main())
