"""Core types validate on construction and name the bad field and value."""

from __future__ import annotations

import math

import pytest

from control_plane import SLO, EngineStats, InstanceSpec, Request, ValidationError
from control_plane.errors import ConfigError
from control_plane.registry import Registry


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_id": ""}, "Request.request_id=''"),
        ({"arrival_s": -1.0}, r"Request\[r\]\.arrival_s=-1.0: must be >= 0"),
        ({"arrival_s": math.nan}, "arrival_s=nan: must be finite"),
        ({"prompt_tokens": 0}, "prompt_tokens=0: must be >= 1"),
        ({"prompt_tokens": 1.5}, "prompt_tokens=1.5: must be an integer"),
        ({"output_tokens": None}, "output_tokens or max_tokens is required"),
        ({"output_tokens": -3}, "output_tokens=-3"),
        ({"priority": 5}, "priority=5: must be an integer in 0..4"),
        ({"priority": True}, "priority=True"),
        ({"tenant": ""}, "tenant=''"),
        ({"prefix_hashes": [1, 2]}, "prefix_hashes='list'"),
        ({"cost_budget_usd": -0.5}, "cost_budget_usd=-0.5"),
    ],
)
def test_request_validation(kwargs, message):
    args = {"request_id": "r", "arrival_s": 0.0, "prompt_tokens": 10, "output_tokens": 5}
    args.update(kwargs)
    with pytest.raises(ValidationError, match=message):
        Request(**args)


def test_request_derived_fields():
    r = Request("r", 10.0, 100, max_tokens=50, slo=SLO(ttft_s=1.0, tpot_s=0.1))
    assert r.expected_output_tokens == 50
    assert r.ttft_deadline_s() == 11.0
    assert r.e2e_deadline_s() == pytest.approx(10.0 + 1.0 + 0.1 * 49)
    assert r.deadline_s() == 11.0
    assert Request("s", 0.0, 1, output_tokens=3).deadline_s() == math.inf
    assert Request("t", 2.0, 1, output_tokens=3, slo=SLO(e2e_s=4.0)).deadline_s() == 6.0


def test_slo_met_and_validation():
    slo = SLO(ttft_s=1.0, e2e_s=5.0)
    assert slo.met(0.9, None, 4.0)
    assert not slo.met(1.1, None, 4.0)
    assert not slo.met(None, None, 4.0)
    with pytest.raises(ValidationError, match=r"SLO\.ttft_s=0: must be > 0"):
        SLO(ttft_s=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_inflight": 0}, r"InstanceSpec\[i\]\.max_inflight=0"),
        ({"weight": 0}, "weight=0: must be > 0"),
        ({"price_per_hour_usd": -2}, "price_per_hour_usd=-2"),
        ({"tokens_per_s": 0}, "tokens_per_s=0"),
    ],
)
def test_instance_spec_validation(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        InstanceSpec("i", **kwargs)


def test_engine_stats_validation():
    with pytest.raises(ValidationError, match=r"kv_usage=1\.5: must be <= 1"):
        EngineStats(kv_usage=1.5)
    with pytest.raises(ValidationError, match="running=-1"):
        EngineStats(running=-1)


def test_registry_errors_list_known_names():
    reg: Registry[object] = Registry("widgets")
    reg.register("a", dict)
    with pytest.raises(ConfigError, match="duplicate widgets name 'a'; known: a"):
        reg.register("a", dict)
    with pytest.raises(ConfigError, match="unknown widgets 'b'; known: a"):
        reg.create("b")
    with pytest.raises(ConfigError, match="lacks 'type'"):
        reg.create({"params": {}})
    assert reg.create({"type": "a", "params": {"x": 1}}) == {"x": 1}
