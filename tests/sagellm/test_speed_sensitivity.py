import math

import pytest

from sagellm.fidelity import target_report
from sagellm.speed_sensitivity import (
    speed_elasticity,
    speed_figures,
    speed_moves,
    speed_tolerance,
)

TARGETS = {"e2e_p50": 0.05, "ttft_p90": 0.15, "throughput": 0.03}


def _band(power: dict[str, float], live: float = 2.0, base: float = 2.1) -> dict:
    """Signed errors at three speeds of a simulation whose figure k goes as factor^power[k]."""
    return {f"{f:g}": {k: base * f ** p / live - 1 for k, p in power.items()}
            for f in (1.03, 0.97, 1.0)}


def test_elasticity_is_the_log_slope_between_the_extreme_speeds():
    el = speed_elasticity(_band({"e2e_p50": 4.6, "ttft_p90": 7.5, "throughput": 0.0}))
    assert el["e2e_p50"] == pytest.approx(4.6)
    assert el["ttft_p90"] == pytest.approx(7.5)
    assert el["throughput"] == pytest.approx(0.0, abs=1e-12)
    # throughput falls when every iteration takes longer (overload): negative elasticity
    assert speed_elasticity(_band({"throughput": -0.8}))["throughput"] == pytest.approx(-0.8)


def test_elasticity_skips_figures_it_cannot_take_a_log_of():
    band = {"0.97": {"e2e_p50": -0.1, "ttft_p90": float("nan"), "tpot_p50": -1.0},
            "1.03": {"e2e_p50": 0.1, "ttft_p90": 0.2, "tpot_p50": 0.1, "e2e_p90": 0.3}}
    assert list(speed_elasticity(band)) == ["e2e_p50"]   # e2e_p90: only at one speed


@pytest.mark.parametrize("band, match", [
    ({"1.03": {"e2e_p50": 0.1}}, "two different speed factors"),
    ({"1.03": {}, "1.030": {}}, "two different speed factors"),
    ({"fast": {}, "1.03": {}}, "'fast': not a positive speed factor"),
    ({"0": {}, "1.03": {}}, "'0': not a positive speed factor"),
])
def test_elasticity_refuses_a_band_it_cannot_read(band, match):
    with pytest.raises(ValueError, match=match):
        speed_elasticity(band)


def test_tolerance_is_the_speed_error_that_uses_the_whole_target():
    tol = speed_tolerance({"e2e_p50": 4.0, "ttft_p90": -7.5, "throughput": 0.0,
                           "tpot_p50": 1.0}, TARGETS)
    assert tol == {"e2e_p50": pytest.approx(0.0125), "ttft_p90": pytest.approx(0.02),
                   "throughput": None}       # not a target: tpot_p50 left out


def test_moves_are_each_engines_log_change_between_consecutive_checks():
    speed = {"engine-0": {"decode": 1.0, "checks": [{"decode": 1.0}, {"decode": 1.05},
                                                    {"decode": 1.0}]},
             "engine-1": {"decode": 0.9, "checks": [{"decode": 0.9}, {"decode": 0.9}]}}
    assert speed_moves(speed) == pytest.approx([math.log(1.05)] * 2 + [0.0])
    assert speed_moves({"engine-0": {"checks": [{"decode": 1.0}]}}) == []
    with pytest.raises(ValueError, match=r"engine-1, check 1: decode factor None"):
        speed_moves({**speed, "engine-1": {"checks": [{"decode": 1.0}, {"prefill": 1.0}]}})
    with pytest.raises(ValueError, match=r"engine-0, check 0: decode factor -1"):
        speed_moves({"engine-0": {"checks": [{"decode": -1}, {"decode": 1.0}]}})


def _run(load, err_e2e, elasticity, moves):
    nan = float("nan")
    checks = [{"decode": 1.0}]
    for m in moves:
        checks.append({"decode": checks[-1]["decode"] * math.exp(m)})
    return {"load": load, "router": "round_robin",
            "err": {"e2e_p50": err_e2e, "ttft_p90": 0.0, "throughput": 0.0},
            "live_spread": dict.fromkeys(("e2e_p50", "ttft_p90", "throughput"), nan),
            "err_speed_band": _band({"e2e_p50": elasticity}),
            "speed": {"engine-0": {"checks": checks}}}


def test_target_report_lists_the_misses_finer_than_the_speed_checks_follow():
    runs = [_run(0.8, 0.2, 4.6, [0.05, 0.04, 0.03]),    # needs 1.1 %, checks moved 4 %
            _run(0.5, 0.08, 1.0, [0.01, 0.02, 0.01])]    # needs 5 %, checks moved 1 %
    rep = target_report(runs, TARGETS)
    assert len(rep["target_failures"]) == 2
    assert rep["target_failures"][0].endswith(
        "(needs the speed right to 1.1%; the checks around a replay moved by a median 4.0%)")
    assert rep["target_failures"][1].endswith(
        "(needs the speed right to 5.0%; the checks around a replay moved by a median 1.0%)")
    assert rep["failures_below_speed_resolution"] == [rep["target_failures"][0]]
    # a run without speed checks or speed band: the miss is listed, never below resolution
    bare = {k: v for k, v in runs[0].items() if k not in ("speed", "err_speed_band")}
    rep = target_report([bare], TARGETS)
    assert rep["target_failures"] == ["load 0.8 round_robin: e2e_p50 error 20.0% > 5%"]
    assert rep["failures_below_speed_resolution"] == []


def test_speed_figures_come_only_from_what_a_run_recorded():
    band = _band({"e2e_p50": 4.0})
    speed = {"engine-0": {"checks": [{"decode": 1.0}, {"decode": 1.05}]}}
    both = speed_figures(band, speed, TARGETS)
    assert both["speed_elasticity"]["e2e_p50"] == pytest.approx(4.0)
    assert both["speed_tolerance"] == {"e2e_p50": pytest.approx(0.0125)}
    assert both["speed_moved"] == pytest.approx([math.log(1.05)])
    assert set(speed_figures(None, speed, TARGETS)) == {"speed_moved"}
    assert set(speed_figures(band, {}, TARGETS)) == {"speed_elasticity", "speed_tolerance"}
    assert speed_figures(None, None, TARGETS) == {}
