"""The columnar summary core: columns built by hand, and the record / compact builders."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.errors import ValidationError
from control_plane.metrics import RequestRecord, SummaryColumns, summarize, summarize_columns
from control_plane.types import SLO, InstanceSpec
from sim.columns import RecordColumns
from tests.builders import req

NAN = float("nan")


def cols(**kw) -> SummaryColumns:
    """Three requests: ok on i1 (code 1), rejected, ok on i1; tables with unused entries."""
    base = dict(
        arrival_s=np.array([0.0, 1.0, 2.0]), dispatch_s=np.array([0.5, NAN, 2.0]),
        first_token_s=np.array([1.0, NAN, 3.0]), finish_s=np.array([2.0, NAN, 4.0]),
        prompt_tokens=np.array([10, 20, 30], dtype=np.int32),
        output_tokens=np.array([3, 0, 1], dtype=np.int32),
        cached_prompt_tokens=np.array([5, 0, 0], dtype=np.int32),
        preemptions=np.array([1, 0, 2], dtype=np.int32),
        attempts=np.array([1, 0, 2], dtype=np.int16),
        status=np.array([0, 1, 0], dtype=np.int8), priority=np.array([0, 0, 3], dtype=np.int8),
        tenant=np.array([1, 1, 0], dtype=np.int32), tenant_names=("b", "a", "unused"),
        instance=np.array([1, -1, 1], dtype=np.int16), instance_ids=("i0", "i1"),
        reject_cause=np.array([-1, 0, -1], dtype=np.int16),
        reject_causes=("queue_full", "never"),
        slo=np.array([0, -1, 1], dtype=np.int32), slos=(SLO(ttft_s=0.5), SLO(tpot_s=0.1)),
        cost_usd=np.array([0.25, 0.0, 0.5]))
    return SummaryColumns(**{**base, **kw})


def test_summarize_columns_by_hand():
    s = summarize_columns(cols(), instances=[InstanceSpec("i0", max_inflight=2)])
    assert (s.total, s.ok, s.rejected, s.failed, s.slo_met) == (3, 2, 1, 0, 1)
    assert s.duration_s == 4.0
    assert s.rejected_by_cause == {"queue_full": 1}
    assert s.attainment_by_tenant == {"a": 0.0, "b": 1.0}  # unused tenant left out
    assert list(s.attainment_by_tenant) == ["a", "b"]  # sorted by name
    assert s.attainment_by_priority == {0: 0.0, 3: 1.0}  # ttft 1.0 > 0.5; 1 output: tpot met
    assert (s.retried, s.preemptions, s.prompt_tokens, s.output_tokens) == (1, 3, 40, 4)
    assert s.tpot_s.count == 1 and s.tpot_s.p50 == 0.5
    assert s.record_cost_usd == 0.75
    assert list(s.instances) == ["i0", "i1"]
    assert s.instances["i0"].requests == 0 and s.instances["i1"].requests == 2
    assert s.instances["i1"].busy_fraction == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("kw", [{"status": np.zeros(2, dtype=np.int8)},
                                {"cost_usd": [0.0, 0.0, 0.0]},
                                {"tenant_names": ("a", "a")}])
def test_summary_columns_validate_shapes_and_tables(kw):
    with pytest.raises(ValidationError):
        cols(**kw)


def test_records_and_compact_columns_give_equal_summaries():
    slo = SLO(ttft_s=1.0, e2e_s=5.0)
    rs = [req("a", 0.0, 100, 4, tenant="x", ttft=1.0, e2e=5.0), req("b", 0.5, 50, 1),
          req("c", 1.0, 70, 2, priority=0)]
    store = RecordColumns(["i0", "i1"], [1e-6, 2e-6])
    store.append(rs[0], "ok", None, 1, 0.2, 0.9, 3.0, 4, 1, 0, 32)
    store.append(rs[1], "rejected", "queue_full", None, None, None, None, 0, 0, 0, 0)
    store.append(rs[2], "failed", "too_long", 0, 1.5, None, None, 0, 1, 1, 0)
    records = [
        RequestRecord.from_request(rs[0], instance_id="i1", dispatch_s=0.2, first_token_s=0.9,
                                   finish_s=3.0, output_tokens=4, attempts=1,
                                   cached_prompt_tokens=32, cost_usd=104 * 2e-6),
        RequestRecord.from_request(rs[1], status="rejected", reject_cause="queue_full"),
        RequestRecord.from_request(rs[2], status="failed", reject_cause="too_long",
                                   instance_id="i0", dispatch_s=1.5, attempts=1,
                                   preemptions=1),
    ]
    assert rs[0].slo == slo
    specs = [InstanceSpec("i0", max_inflight=4, price_per_hour_usd=1.0)]
    assert store.summary(instances=specs) == summarize(records, instances=specs)
    c = store.summary_columns()
    assert np.shares_memory(c.arrival_s, np.frombuffer(store._t[0], dtype=float))
