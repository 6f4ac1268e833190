"""``sagellm speed-check``: the factors of an engine running slower than its profile, as
text and JSON, and the errors that name a bad profile or an unreachable engine."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from control_plane.perf.profile import FittedPredictor
from sagellm.cli import main
from tests.live.fake_timed_vllm import TimedVllm, neighbour_pair, served_in_thread

BUILT_IN = "vllm-cpu-llama-small-pinned"


@pytest.fixture
def slow_engine() -> Iterator[str]:
    """A TimedVllm 1.2x slower on decode and 1.1x on prefill than the built-in profile, in
    its own event loop in a thread (the CLI runs its own), at a quarter of real time."""
    slow = FittedPredictor.from_file(BUILT_IN).scaled(decode=1.2, prefill=1.1)
    with served_in_thread(TimedVllm(slow, pace=0.25)) as url:
        yield url


def test_speed_check_reports_how_much_slower_the_engine_runs(slow_engine):
    r = CliRunner().invoke(main, ["speed-check", "--engine", slow_engine, "--profile",
                                  BUILT_IN, "--repeats", "2"])
    assert r.exit_code == 0, r.output
    assert "warm-up:" in r.output
    lines = {ln.split(":")[0]: ln for ln in r.output.splitlines()}
    assert "slower than the profile" in lines["decode"]
    got = float(lines["decode"].split("x")[1].split()[0])
    assert got == pytest.approx(1.2, rel=0.03)

    r = CliRunner().invoke(main, ["speed-check", "--engine", slow_engine, "--profile",
                                  BUILT_IN, "--repeats", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["engine"] == slow_engine and out["profile"] == BUILT_IN
    assert out["decode"] == pytest.approx(1.2, rel=0.03)
    assert out["prefill"] == pytest.approx(1.1, rel=0.03)
    assert len(out["decode_ratios"]) == 2


@pytest.mark.parametrize(("args", "code", "named"), [
    (["--engine", "http://127.0.0.1:9", "--profile", BUILT_IN], 1,
     "cannot reach the engine at http://127.0.0.1:9"),
    (["--engine", "http://127.0.0.1:9", "--profile", "no-such-profile"], 2,
     "profile 'no-such-profile': no such file"),
    (["--engine", "ftp://x:1", "--profile", BUILT_IN], 2, "--engine"),
    (["--engine", "http://127.0.0.1:9", "--profile", BUILT_IN, "--repeats", "0"], 2,
     "--repeats"),
    (["--profile", BUILT_IN], 2, "--engine"),
])
def test_speed_check_names_what_is_wrong(args, code, named):
    r = CliRunner().invoke(main, ["speed-check", *args])
    assert r.exit_code == code
    assert named in r.output


def test_speed_check_with_a_neighbour_reports_the_decode_slowdown_next_to_it():
    base = FittedPredictor.from_file(BUILT_IN)
    # decode 30 % slower while the other engine decodes (the profile says 15.6 %)
    engine, other = neighbour_pair(base, (0.3, 0, 0, 0, 0, 0), pace=0.25)
    with served_in_thread(engine) as url, served_in_thread(other) as nurl:
        r = CliRunner().invoke(main, ["speed-check", "--engine", url, "--profile", BUILT_IN,
                                      "--repeats", "2", "--neighbour", nurl, "--json"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["decode_by_decode"] == pytest.approx(0.3, abs=0.05)
        assert out["profile_decode_by_decode"] == pytest.approx(0.1563, abs=1e-3)
        assert out["neighbour"] == nurl and len(out["neighbour_ratios"]) == 2
        r = CliRunner().invoke(main, ["speed-check", "--engine", url, "--profile", BUILT_IN,
                                      "--repeats", "1", "--neighbour", nurl])
        assert r.exit_code == 0, r.output
        assert "decode while the neighbour decodes: +" in r.output
        assert "(the profile: +15.6 %)" in r.output
        # an unreachable neighbour is named before anything is measured
        r = CliRunner().invoke(main, ["speed-check", "--engine", url, "--profile", BUILT_IN,
                                      "--neighbour", "http://127.0.0.1:9"])
        assert r.exit_code == 1 and "http://127.0.0.1:9" in r.output
