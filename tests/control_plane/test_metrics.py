"""Metrics: records -> summaries, with hand-computed expectations."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from control_plane.actions import RejectCause
from control_plane.errors import ValidationError
from control_plane.metrics import (
    InstanceUsage,
    Percentiles,
    RequestRecord,
    Summary,
    format_table,
    summarize,
)
from control_plane.types import SLO, InstanceSpec, Request


def ok(rid: str, arrival: float, dispatch: float, first: float | None, finish: float, *,
       out: int = 10, prompt: int = 100, inst: str = "i0", slo: SLO | None = None,
       tenant: str = "default", priority: int = 2, cached: int = 0) -> RequestRecord:
    return RequestRecord(request_id=rid, arrival_s=arrival, prompt_tokens=prompt,
                         output_tokens=out, instance_id=inst, dispatch_s=dispatch,
                         first_token_s=first, finish_s=finish, slo=slo, tenant=tenant,
                         priority=priority, attempts=1, cached_prompt_tokens=cached)


def rejected(rid: str, arrival: float, cause: str = "queue_full", *, tenant: str = "default",
             priority: int = 2, prompt: int = 100, slo: SLO | None = None) -> RequestRecord:
    return RequestRecord(request_id=rid, arrival_s=arrival, prompt_tokens=prompt,
                         status="rejected", reject_cause=cause, reject_detail="full",
                         tenant=tenant, priority=priority, slo=slo)


# -- percentiles ------------------------------------------------------------------------------

def test_percentiles_of_tiny_set_linear_interpolation():
    p = Percentiles.of([40.0, 10.0, 30.0, 20.0])
    # sorted 10 20 30 40; rank = q * (n - 1): 1.5 -> 25, 2.85 -> 38.5, 2.97 -> 39.7
    assert p.count == 4
    assert p.mean == 25.0
    assert p.p50 == pytest.approx(25.0)
    assert p.p95 == pytest.approx(38.5)
    assert p.p99 == pytest.approx(39.7)


def test_latency_percentiles_over_ok_records_only():
    recs = [ok(f"r{k}", 0.0, 0.0, float(k), float(k) + 1.0, out=11) for k in range(1, 6)]
    recs.append(rejected("x", 0.0))
    s = summarize(recs)
    # ttft 1..5: rank 4q -> p50 3, p95 4.8, p99 4.96
    assert (s.ttft_s.count, s.ttft_s.mean) == (5, 3.0)
    assert s.ttft_s.p50 == pytest.approx(3.0)
    assert s.ttft_s.p95 == pytest.approx(4.8)
    assert s.ttft_s.p99 == pytest.approx(4.96)
    # tpot = 1 s / (11 - 1) for each; e2e = ttft + 1
    assert s.tpot_s.p50 == pytest.approx(0.1)
    assert s.tpot_s.p99 == pytest.approx(0.1)
    assert s.e2e_s.mean == pytest.approx(4.0)
    assert s.e2e_s.p95 == pytest.approx(5.8)
    assert s.queue_delay_s.p99 == 0.0


def test_tpot_skips_single_token_outputs():
    recs = [ok("a", 0.0, 0.0, 1.0, 1.0, out=1), ok("b", 0.0, 0.0, 1.0, 3.0, out=5)]
    s = summarize(recs)
    assert s.tpot_s.count == 1
    assert s.tpot_s.p50 == pytest.approx(0.5)
    assert recs[0].tpot_s is None
    assert recs[1].tpot_s == pytest.approx(0.5)


# -- SLO attainment ---------------------------------------------------------------------------

def test_attainment_per_priority_and_tenant_counts_rejected_as_missed():
    slo = SLO(ttft_s=1.0)
    recs = [
        ok("a", 0.0, 0.0, 0.5, 2.0, slo=slo, tenant="A", priority=0),  # met
        rejected("b", 0.0, tenant="A", priority=0, slo=slo),  # miss
        ok("c", 0.0, 0.0, 2.0, 3.0, slo=slo, tenant="B", priority=2),  # miss: ttft 2 > 1
        ok("d", 0.0, 0.0, 5.0, 6.0, tenant="B", priority=2),  # met: no SLO
        RequestRecord(request_id="e", arrival_s=0.0, prompt_tokens=10, tenant="B",
                      priority=4, instance_id="i0", dispatch_s=0.0, finish_s=1.0,
                      status="failed", reject_detail="engine died"),  # miss
    ]
    assert [r.slo_met for r in recs] == [True, False, False, True, False]
    s = summarize(recs)
    assert s.slo_met == 2
    assert s.slo_attainment == pytest.approx(0.4)
    assert s.attainment_by_priority == {0: 0.5, 2: 0.5, 4: 0.0}
    assert s.attainment_by_tenant == pytest.approx({"A": 0.5, "B": 1 / 3})
    assert (s.total, s.ok, s.rejected, s.failed) == (5, 3, 1, 1)
    assert s.rejected_by_cause == {"queue_full": 1}


@pytest.mark.parametrize(("slo", "out", "first", "finish", "met"), [
    (SLO(tpot_s=0.1), 1, 1.0, 1.0, True),  # one token: no gaps, TPOT vacuously met
    (SLO(tpot_s=0.1), 5, 1.0, 1.4, True),  # 0.4 / 4 = 0.1 (bound inclusive)
    (SLO(tpot_s=0.1), 5, 1.0, 1.8, False),  # 0.2 per token
    (SLO(e2e_s=2.0), 5, 1.0, 2.0, True),
    (SLO(e2e_s=2.0), 5, 1.0, 2.5, False),
    (SLO(ttft_s=1.0), 5, None, 2.0, False),  # no first token measured
    (SLO(ttft_s=1.0, e2e_s=9.0), 5, 1.0, 2.0, True),
])
def test_slo_met_property_matches_summary(slo, out, first, finish, met):
    r = ok("r", 0.0, 0.0, first, finish, out=out, slo=slo)
    assert r.slo_met is met
    assert summarize([r]).slo_met == int(met)


def test_vectorised_summary_matches_per_record_properties():
    rng = random.Random(7)
    recs = []
    for k in range(300):
        arrival = rng.uniform(0, 50)
        slo = rng.choice([None, SLO(ttft_s=0.5), SLO(tpot_s=0.05), SLO(1.0, 0.05, 8.0)])
        if rng.random() < 0.2:
            recs.append(rejected(f"r{k}", arrival, slo=slo))
            continue
        dispatch = arrival + rng.uniform(0, 1)
        first = dispatch + rng.uniform(0, 1)
        out = rng.randint(0, 200)
        recs.append(ok(f"r{k}", arrival, dispatch, first, first + rng.uniform(0, 10) * out / 100,
                       out=out, slo=slo, inst=f"i{k % 3}"))
    s = summarize(recs)
    assert s.slo_met == sum(r.slo_met for r in recs)
    oks = [r for r in recs if r.status == "ok"]
    for name in ("ttft_s", "tpot_s", "e2e_s", "queue_delay_s"):
        vals = [getattr(r, name) for r in oks if getattr(r, name) is not None]
        want = np.percentile(vals, [50, 95, 99], method="linear")
        got = getattr(s, name)
        assert [got.p50, got.p95, got.p99] == pytest.approx(list(want))
        assert got.mean == pytest.approx(float(np.mean(vals)))


# -- goodput / throughput ---------------------------------------------------------------------

def ten_second_window() -> list[RequestRecord]:
    return [
        ok("r1", 0.0, 0.0, 1.0, 2.0, prompt=100, out=50, slo=SLO(ttft_s=2.0)),  # met
        ok("r2", 1.0, 1.0, 2.0, 5.0, prompt=200, out=100, slo=SLO(ttft_s=0.5)),  # miss
        rejected("r3", 3.0, prompt=400),
        ok("r4", 4.0, 5.0, 6.0, 10.0, prompt=300, out=150),  # met (no SLO)
    ]


def test_goodput_and_throughput_on_a_ten_second_window():
    s = summarize(ten_second_window())
    assert s.duration_s == 10.0
    assert s.throughput_rps == pytest.approx(0.3)
    assert s.output_tokens_per_s == pytest.approx(30.0)  # 300 / 10
    assert s.total_tokens_per_s == pytest.approx(90.0)  # (600 + 300) / 10, rejected excluded
    assert s.goodput_rps == pytest.approx(0.2)
    assert s.goodput_tokens_per_s == pytest.approx(20.0)  # (50 + 150) / 10
    assert s.slo_attainment == 0.5
    assert (s.prompt_tokens, s.output_tokens) == (600, 300)
    assert s.queue_delay_s.mean == pytest.approx(1 / 3)


def test_explicit_duration_overrides_the_window():
    s = summarize(ten_second_window(), duration_s=20.0)
    assert s.duration_s == 20.0
    assert s.throughput_rps == pytest.approx(0.15)
    assert s.goodput_tokens_per_s == pytest.approx(10.0)
    with pytest.raises(ValidationError) as e:
        summarize([], duration_s=0.0)
    assert e.value.field == "duration_s"


def test_prefix_cache_hit_ratio_over_ok_records():
    recs = [ok("a", 0, 0, 1, 2, prompt=100, cached=50), ok("b", 0, 0, 1, 2, prompt=300),
            rejected("c", 0, prompt=1000)]
    assert summarize(recs).prefix_cache_hit_ratio == pytest.approx(50 / 400)


# -- instance usage ---------------------------------------------------------------------------

def test_busy_fraction_is_union_and_mean_concurrency_is_sum():
    recs = [
        ok("a", 0.0, 0.0, 1.0, 4.0, inst="i0"),
        ok("b", 1.0, 2.0, 3.0, 6.0, inst="i0"),  # overlaps a: union [0, 6]
        ok("c", 7.0, 8.0, 9.0, 10.0, inst="i0"),  # union adds [8, 10]
        ok("d", 0.5, 1.0, 2.0, 3.0, inst="i1"),  # instance without a spec
        RequestRecord(request_id="e", arrival_s=1.0, prompt_tokens=5, instance_id="i0",
                      dispatch_s=1.0, status="rejected",
                      reject_cause=RejectCause.RETRIES_EXHAUSTED),  # no interval
    ]
    specs = [InstanceSpec("i0", max_inflight=4), InstanceSpec("i2", max_inflight=8)]
    s = summarize(recs, instances=specs)
    assert s.duration_s == 10.0
    assert list(s.instances) == ["i0", "i2", "i1"]  # specs first, then seen-only, sorted
    i0, i2, i1 = s.instances["i0"], s.instances["i2"], s.instances["i1"]
    assert i0.requests == 4
    assert i0.busy_fraction == pytest.approx(0.8)  # (6 + 2) / 10
    assert i0.mean_concurrency == pytest.approx(1.0)  # (4 + 4 + 2) / 10
    assert i0.utilization == pytest.approx(0.25)  # 1.0 / 4
    assert i1 == InstanceUsage("i1", 1, pytest.approx(0.2), pytest.approx(0.2), None)
    assert i2 == InstanceUsage("i2", 0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(("intervals", "union", "total"), [
    ([(0, 10), (2, 3)], 10, 11),  # nested
    ([(0, 2), (2, 4)], 4, 4),  # touching
    ([(5, 6), (0, 1), (0.5, 2)], 3, 3.5),  # unsorted input
])
def test_union_of_intervals(intervals, union, total):
    recs = [ok(f"r{k}", 0.0, a, a, b) for k, (a, b) in enumerate(intervals)]
    u = summarize(recs, duration_s=10.0).instances["i0"]
    assert u.busy_fraction == pytest.approx(union / 10)
    assert u.mean_concurrency == pytest.approx(total / 10)


# -- cost -------------------------------------------------------------------------------------

def test_cost_per_million_tokens_with_two_instances():
    specs = [InstanceSpec("i0", price_per_hour_usd=3.6),
             InstanceSpec("i1", price_per_hour_usd=7.2)]
    recs = [ok("a", 0.0, 0.0, 1.0, 10.0, prompt=1000, out=500),
            rejected("b", 2.0, prompt=10_000)]  # tokens of rejected requests not counted
    s = summarize(recs, instances=specs)
    assert s.instance_cost_usd == pytest.approx(0.03)  # (3.6 + 7.2) $/h * 10 s
    assert s.cost_per_million_tokens_usd == pytest.approx(20.0)  # 0.03 / 1500 * 1e6
    assert summarize(recs).cost_per_million_tokens_usd is None  # no instances
    none_ok = summarize([rejected("b", 0.0)], instances=specs, duration_s=5.0)
    assert none_ok.cost_per_million_tokens_usd is None  # no tokens
    assert none_ok.instance_cost_usd == pytest.approx(0.015)


def test_duplicate_instance_specs_are_an_error():
    with pytest.raises(ValidationError) as e:
        summarize([], instances=[InstanceSpec("i0"), InstanceSpec("i0")])
    assert e.value.field == "instances"


# -- empty input ------------------------------------------------------------------------------

def test_empty_input_never_raises():
    s = summarize([])
    assert (s.total, s.ok, s.rejected, s.failed, s.duration_s) == (0, 0, 0, 0, 0.0)
    assert s.ttft_s.count == 0 and math.isnan(s.ttft_s.p50) and math.isnan(s.e2e_s.mean)
    assert math.isnan(s.slo_attainment) and math.isnan(s.throughput_rps)
    assert math.isnan(s.prefix_cache_hit_ratio)
    assert s.attainment_by_priority == {} and s.attainment_by_tenant == {}
    assert s.instances == {} and s.cost_per_million_tokens_usd is None
    d = s.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["latency_s"]["ttft"]["p50"] is None


def test_empty_input_with_duration_and_instances():
    s = summarize([], instances=[InstanceSpec("i0", price_per_hour_usd=36.0)], duration_s=100.0)
    assert s.throughput_rps == 0.0 and s.goodput_rps == 0.0
    assert s.instances["i0"] == InstanceUsage("i0", 0, 0.0, 0.0, 0.0)
    assert s.instance_cost_usd == pytest.approx(1.0)
    assert s.cost_per_million_tokens_usd is None


# -- validation -------------------------------------------------------------------------------

BASE = dict(request_id="r", arrival_s=1.0, prompt_tokens=10, output_tokens=5, instance_id="i0",
            dispatch_s=2.0, first_token_s=3.0, finish_s=4.0)


@pytest.mark.parametrize(("change", "field"), [
    ({"first_token_s": 1.5}, "first_token_s"),  # before dispatch_s
    ({"dispatch_s": 0.5}, "dispatch_s"),  # before arrival_s
    ({"finish_s": 2.5}, "finish_s"),  # before first_token_s
    ({"status": "done"}, "status"),
    ({"status": "rejected"}, "reject_cause"),  # rejected without a cause
    ({"reject_cause": "queue_full"}, "reject_cause"),  # ok with a cause
    ({"finish_s": None}, "finish_s"),  # ok never finished
    ({"priority": 5}, "priority"),
    ({"prompt_tokens": -1}, "prompt_tokens"),
    ({"cached_prompt_tokens": 11}, "cached_prompt_tokens"),
    ({"instance_id": None}, "instance_id"),  # dispatched but nowhere
    ({"arrival_s": math.nan}, "arrival_s"),
    ({"attempts": 1.5}, "attempts"),
    ({"request_id": ""}, "request_id"),
    ({"slo": {"ttft_s": 1}}, "slo"),
])
def test_validation_names_the_field(change, field):
    with pytest.raises(ValidationError) as e:
        RequestRecord(**{**BASE, **change})
    assert e.value.field == field
    assert field in str(e.value)


def test_first_token_before_dispatch_message_names_both():
    with pytest.raises(ValidationError, match=r"first_token_s=1\.5.*dispatch_s=2\.0"):
        RequestRecord(**{**BASE, "first_token_s": 1.5})


# -- serialisation ----------------------------------------------------------------------------

def full_records() -> list[RequestRecord]:
    req = Request("q", 2.0, 50, output_tokens=7, priority=1, tenant="t", slo=SLO(1.0, None, 9.0))
    return [
        RequestRecord(**BASE),
        RequestRecord.from_request(req, output_tokens=7, instance_id="i1", dispatch_s=2.5,
                                   first_token_s=3.0, finish_s=4.0, attempts=2, preemptions=1,
                                   cached_prompt_tokens=16, cost_usd=0.002),
        RequestRecord(request_id="x", arrival_s=0.0, prompt_tokens=3, status="rejected",
                      reject_cause=RejectCause.QUEUE_FULL, reject_detail="p2 queue 100/100"),
    ]


def test_to_dict_from_dict_round_trip():
    for r in full_records():
        d = r.to_dict()
        assert tuple(d) == RequestRecord.FIELDS
        json.dumps(d, allow_nan=False)
        assert RequestRecord.from_dict(d) == r
    assert full_records()[2].reject_cause == "queue_full"  # enum stored as its value
    assert full_records()[1].to_dict()["slo_tpot_s"] is None


def test_from_dict_accepts_numpy_scalars_and_nan_for_missing():
    d = full_records()[2].to_dict()
    d.update(arrival_s=np.float64(0.0), prompt_tokens=np.int64(3), priority=np.int64(2),
             dispatch_s=math.nan, finish_s=np.float64("nan"), slo_ttft_s=math.nan)
    r = RequestRecord.from_dict(d)
    assert r == full_records()[2]
    assert type(r.prompt_tokens) is int


@pytest.mark.parametrize(("row", "field"), [
    ({"request_id": "r", "arrival_s": 0.0, "prompt_tokens": 1, "bogus": 1}, "bogus"),
    ({"request_id": "r", "prompt_tokens": 1}, "arrival_s"),
    ({"request_id": "r", "arrival_s": "0.5", "prompt_tokens": 1}, "arrival_s"),
    ({"request_id": "r", "arrival_s": 0.0, "prompt_tokens": 1, "slo_ttft_s": -1.0}, "ttft_s"),
])
def test_from_dict_validates(row, field):
    with pytest.raises(ValidationError) as e:
        RequestRecord.from_dict(row)
    assert e.value.field == field


def test_summary_to_dict_is_nested_and_json_friendly():
    s = summarize(ten_second_window(), instances=[InstanceSpec("i0", price_per_hour_usd=1.0)])
    d = s.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["counts"]["rejected_by_cause"] == {"queue_full": 1}
    assert d["throughput"]["output_tokens_per_s"] == pytest.approx(30.0)
    assert d["slo_attainment"]["by_priority"] == {"2": 0.5}
    assert d["instances"]["i0"]["requests"] == 3
    assert d["latency_s"]["tpot"]["count"] == 3


# -- table ------------------------------------------------------------------------------------

def test_format_table_has_each_name_and_is_aligned():
    summaries: dict[str, Summary] = {
        "fifo": summarize(ten_second_window()),
        "a-much-longer-policy-name": summarize(ten_second_window(), duration_s=20.0),
        "empty": summarize([]),
    }
    table = format_table(summaries)
    lines = table.splitlines()
    assert len(lines) == 2 + len(summaries)
    assert len({len(line) for line in lines}) == 1  # fixed widths: every line equally long
    for line, name in zip(lines[2:], summaries, strict=True):
        assert line.startswith(name)
    # columns separated by the same blank gaps in every line (from the dashed rule)
    gaps = [i for i, ch in enumerate(lines[1]) if ch == " "]
    assert all(line[i] == " " for line in lines for i in gaps)
    header = lines[0].split()
    assert header[:3] == ["name", "ttft", "p50"] and header[-1] == "rejected"
    fifo = lines[2].split()
    assert fifo[-1] == "1"  # rejected
    assert fifo[-2] == "30.0"  # output tok/s
    assert fifo[-4] == "50.0"  # attainment %
    assert lines[4].split()[1] == "-"  # empty summary: undefined values shown as '-'
    assert format_table({}).splitlines()[0].startswith("name")
