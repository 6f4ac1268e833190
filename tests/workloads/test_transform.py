"""Trace transformations: exact results on small traces."""

from __future__ import annotations

import numpy as np
import pytest

from workloads import transform as T
from workloads.trace import Trace


def small() -> Trace:
    return Trace([10.0, 12.0, 13.0, 20.0, 30.0], [100, 5000, 200, 8000, 50],
                 [10, 20, 30, 40, 2000], name="s")


def test_scale_rate():
    t = T.scale_rate(small(), 2.0)
    assert t.arrival_s.tolist() == [10.0, 11.0, 11.5, 15.0, 20.0]
    assert t.meta["transforms"] == [{"op": "scale_rate", "k": 2.0}]
    assert T.scale_rate(T.scale_rate(small(), 2.0), 0.5).arrival_s.tolist() == [
        10.0, 12.0, 13.0, 20.0, 30.0]
    assert len(T.scale_rate(Trace([], [], []), 3.0)) == 0
    with pytest.raises(ValueError, match="k=0"):
        T.scale_rate(small(), 0)


def test_window_rebase_and_keep():
    t = T.window(small(), 12.0, 20.0)
    assert t.arrival_s.tolist() == [0.0, 1.0]  # [12, 20): 12 and 13, minus 12
    assert t.prompt_tokens.tolist() == [5000, 200]
    assert t.request_id.tolist() == ["s-1", "s-2"]  # original row ids kept
    assert t.meta["transforms"][-1]["dropped_rows"] == 3
    kept = T.window(small(), 12.0, 20.0, rebase=False)
    assert kept.arrival_s.tolist() == [12.0, 13.0]
    with pytest.raises(ValueError, match="end_s=5"):
        T.window(small(), 10.0, 5)


def test_sample_keeps_order_and_is_seeded():
    big = Trace(np.arange(100.0), np.arange(1, 101), np.ones(100))
    s = T.sample(big, 0.25, seed=3)
    assert len(s) == 25 and (np.diff(s.arrival_s) > 0).all()
    assert np.array_equal(s.arrival_s, T.sample(big, n=25, seed=3).arrival_s)
    assert not np.array_equal(s.arrival_s, T.sample(big, 0.25, seed=4).arrival_s)
    assert len(T.sample(big, n=0)) == 0 and len(T.sample(big, 1.0)) == 100
    for kwargs, message in (({"fraction": 1.5}, "fraction=1.5"), ({"n": 101}, "n=101"),
                            ({}, "exactly one"), ({"fraction": 0.1, "n": 1}, "exactly one")):
        with pytest.raises(ValueError, match=message):
            T.sample(big, **kwargs)


def test_clip_lengths_counts_everything():
    t = T.clip_lengths(small(), 4096, max_output=1000)
    # prompts 5000 and 8000 -> 4095 (1 output token left); 2000 outputs -> 1000
    assert t.prompt_tokens.tolist() == [100, 4095, 200, 4095, 50]
    assert t.output_tokens.tolist() == [10, 1, 30, 1, 1000]
    m = t.meta
    assert (m["clipped_rows"], m["clipped_prompt_rows"], m["clipped_prompt_tokens"]) == (
        3, 2, 905 + 3905)
    assert (m["clipped_output_rows"], m["clipped_output_tokens"]) == (3, 19 + 39 + 1000)
    assert m["transforms"][-1]["op"] == "clip_lengths" and m["dropped_rows"] == 0
    fit = T.clip_lengths(small(), 4096, drop=True)
    assert fit.prompt_tokens.tolist() == [100, 200, 50]
    assert fit.meta["dropped_rows"] == 2 and fit.meta["clipped_rows"] == 0
    untouched = T.clip_lengths(small(), 100_000)
    assert untouched.meta["clipped_rows"] == 0
    with pytest.raises(ValueError, match="max_context=1"):
        T.clip_lengths(small(), 1)


def test_clip_lengths_cuts_prefix_hashes():
    t = Trace([0.0], [70], [5], prefix_hashes=[(1, 2, 3, 4)], block_size=16)
    c = T.clip_lengths(t, 40)
    assert c.prompt_tokens.tolist() == [39] and c.prefix_hashes[0] == (1, 2)


RULES = [
    {"when": {"prompt_tokens_gt": 4000}, "set": {"priority": 3, "slo_ttft_s": 10}},
    {"when": {"output_tokens_ge": 2000}, "set": {"tenant": "long", "slo_e2e_s": 60.0}},
    {"share": 0.5, "set": {"tenant": "batch", "priority": 4}, "name": "half"},
    {"set": {"tenant": "default"}},
]


def test_assign_first_matching_rule_wins():
    t = T.assign(small(), RULES, seed=0)
    assert t.priority.tolist()[1::2] == [3, 3] and t.tenant[4] == "long"
    assert t.slo_ttft_s[[1, 3]].tolist() == [10.0, 10.0] and t.slo_e2e_s[4] == 60.0
    rest = t.tenant[[0, 2]].tolist()  # rows 0 and 2: one batch (share 0.5), one default
    assert sorted(rest) == ["batch", "default"]
    assert t.tenant[1] == "default"  # rule 0 did not set tenant: the default was kept
    assert np.isnan(t.slo_ttft_s[[0, 2, 4]]).all()
    assert t.meta["transforms"][-1]["rules"] == [
        {"rule": 0, "rows": 2}, {"rule": 1, "rows": 1}, {"rule": "half", "rows": 1},
        {"rule": 3, "rows": 1}]
    again = T.assign(small(), RULES, seed=0)
    assert np.array_equal(again.tenant, t.tenant)


def test_assign_tenant_condition_and_unmatched_rows_keep_values():
    base = T.assign(small(), [{"when": {"arrival_s_ge": 20}, "set": {"tenant": "late"}}])
    assert base.tenant.tolist() == ["default"] * 3 + ["late"] * 2
    assert base.meta["transforms"][-1]["unmatched_rows"] == 3
    t = T.assign(base, [{"when": {"tenant": ["late"], "priority_eq": 2},
                         "set": {"priority": 0}}])
    assert t.priority.tolist() == [2, 2, 2, 0, 0]


@pytest.mark.parametrize(("rules", "message"), [
    ([{"set": {"tenant": "x"}, "colour": 1}], r"rules\[0\]: unknown key 'colour'"),
    ([{"set": {"tenant": "x"}}, {"set": {"weight": 1}}], r"rules\[1\]: unknown key set.'weight'"),
    ([{"when": {"prompt_tokens_between": 1}, "set": {"priority": 1}}],
     r"rules\[0\].when.prompt_tokens_between"),
    ([{"set": {"priority": 9}}], r"rules\[0\].set.priority=9"),
    ([{"set": {"slo_ttft_s": -1}}], r"rules\[0\].set.slo_ttft_s=-1"),
    ([{"share": 2, "set": {"priority": 1}}], r"rules\[0\].share=2"),
    ([{"when": {}}], r"rules\[0\]: missing key 'set'"),
    ({"set": {}}, "must be a list"),
])
def test_assign_bad_rules(rules, message):
    with pytest.raises(ValueError, match=message):
        T.assign(small(), rules)
