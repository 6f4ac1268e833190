"""benchmarks/fidelity.py --engine URL: the whole report against engines already running,
here two ``sagellm emulate --shared-host`` engines serving the built-in 92M-parameter
vllm-cpu profile, slowing each other down by its neighbour slowdowns.

Those engines run the simulator's engine model, host contention included, in real time
behind vLLM's API and metrics, so the report has to find the simulator close to them: what
is left is the live machinery (HTTP, the event loop, the replay client), and the
per-request API overhead the simulator adds from the profile (4.5 ms there for TTFT) while
the emulated engines have none: hence this profile, whose TTFTs (over 100 ms) it hardly
moves, not the tiny model's (5-30 ms). A harness that mis-aligned requests, mis-read the
engines' metrics, mis-scaled the speed checks or mis-modelled the contention would show
here, with no vLLM (simulated without the contention, ``--contention-scale 0``, the e2e
median was 11.4 % off). Round robin, so that live and simulated requests go to the same
engines (least loaded reads the engines' load at scrapes, 0.5 s apart live: 22.5 % of 40
requests went elsewhere, and TTFT p90 differed by 8.8-12.5 % in two runs)."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulated_engines import BLOCK, BLOCKS, emulated_engines

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
PROFILE = "vllm-cpu-llama-small-pinned"


@pytest.fixture(scope="module")
def engines():
    """Two emulated engines with the profile's engine settings: their URLs."""
    with emulated_engines(PROFILE, "llama-small", 2, shared_host=True) as urls:
        yield urls


def _trace(path: Path, rows: int = 80) -> Path:
    rng = random.Random(3)
    t, lines = 0.0, ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for _ in range(rows):
        t += rng.expovariate(2.0)
        lines.append(f"2023-11-16 18:{int(t // 60):02d}:{t % 60:09.6f},"
                     f"{rng.randint(40, 3000)},{rng.randint(10, 400)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_the_report_against_running_engines_finds_the_model_they_run(engines, tmp_path):
    out = tmp_path / "out"
    res = _bench("--engine", engines[0], "--engine", engines[1] + "/", "--profile", PROFILE,
                 "--trace", str(_trace(tmp_path / "t.csv")), "--requests", "40",
                 "--loads", "0.8", "--routers", "round_robin", "--live-repeats", "1",
                 "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    setup = doc["setup"]
    assert setup["model"] == "llama-small"   # the name the engines serve
    assert setup["engine"]["urls"] == engines and setup["engine"]["engines"] == 2
    # the KV capacity comes from the engines' vllm:cache_config_info
    assert (setup["engine"]["kv_capacity_tokens"], setup["engine"]["block_size"]) \
        == (BLOCKS * BLOCK, BLOCK)
    (run,) = doc["runs"]
    assert (run["load"], run["router"], run["live_failed"]) == (0.8, "round_robin", 0)
    assert run["same_engine"] == [1.0]   # round robin: every request where it was simulated
    assert len(run["live_replays"]) == 1
    # the speed checks find each engine as fast as its profile, and as slowed by the other
    # decoding as its profile says (0.156): it is the profile
    assert setup["contention_scale"] == 1.0
    slowdown = setup["neighbour_slowdowns"][0]["neighbour_decode_slowdown_decode"]
    for name in ("engine-0", "engine-1"):
        speed = run["speed"][name]
        assert len(speed["checks"]) == 2   # before and after the replay
        assert speed["decode"] == pytest.approx(1, abs=0.05)
        assert speed["prefill"] == pytest.approx(1, abs=0.05)
        assert speed["decode_by_decode"] == pytest.approx(slowdown, abs=0.02)
    # inside the engines the simulator matches them (their /metrics next to its records)
    side = run["engine_side"]
    assert side["sim_itl_mean_s"] == pytest.approx(side["live_itl_mean_s"], rel=0.05)
    assert side["sim_prefill_mean_s"] == pytest.approx(side["live_prefill_mean_s"], rel=0.05)
    # and outside: the targets hold against engines that are the model
    assert run["err"]["e2e_p50"] <= 0.05 and run["err"]["ttft_p90"] <= 0.15
    assert run["err"]["throughput"] <= 0.03
    where = out / "load=0.8" / "router=round_robin"
    for source in ("live", "sim"):
        assert (where / f"source={source}.parquet").is_file()
    assert (out / "fidelity_cdfs.png").is_file()


def test_an_engine_that_does_not_answer_is_named(tmp_path):
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = _bench("--engine", dead, "--profile", PROFILE, "--trace",
                 str(_trace(tmp_path / "t.csv")), "--requests", "40", "--out",
                 str(tmp_path / "out"), timeout=120)
    assert res.returncode == 1
    assert f"--engine {dead}: not a reachable vLLM server" in res.stderr


def test_an_engine_that_dies_mid_report_is_named_and_the_done_loads_kept(tmp_path):
    """The first load's records are written; then the engines stop: the report ends with
    exit code 1 naming an engine, and the records made before it are still there."""
    import time
    out = tmp_path / "out"
    first = out / "load=0.5" / "router=round_robin" / "source=sim.parquet"
    log = tmp_path / "stderr.txt"
    with emulated_engines("vllm-cpu-llama-tiny", "llama-tiny", 2) as urls, \
            log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH), "--engine", urls[0], "--engine", urls[1],
             "--profile", "vllm-cpu-llama-tiny", "--trace", str(_trace(tmp_path / "t.csv")),
             "--requests", "30", "--loads", "0.5,0.8", "--routers", "round_robin",
             "--live-repeats", "1", "--no-speed-check", "--json", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=err_file)   # a file: no pipe to fill
        deadline = time.monotonic() + 120
        while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    try:   # the engines are stopped; the report is on its second load or about to be
        proc.wait(timeout=120)
    finally:
        proc.kill()
    err = log.read_text()
    assert proc.returncode == 1, err[-3000:]
    assert re.search(r"fidelity: engine http://127\.0\.0\.1:\d+: /metrics did not answer", err)
    assert first.is_file() and (first.parent / "source=live.parquet").is_file()


def test_the_report_calibrates_running_engines_first(tmp_path):
    """--calibrate with --engine: each running engine is calibrated (the other as its
    neighbour) and simulated with its own profile, which gives back the one it runs; two
    emulated engines apart do not slow each other down, and their profiles say so."""
    from control_plane.perf.profile import FittedPredictor, read_profile
    from tests.emulated_engines import builtin_predictor, max_error
    out = tmp_path / "out"
    with emulated_engines("vllm-cpu-llama-tiny", "llama-tiny", 2) as urls:
        res = _bench("--engine", urls[0], "--engine", urls[1], "--profile",
                     "vllm-cpu-llama-tiny", "--calibrate", "--calibrate-budget", "10",
                     "--neighbour-repeats", "1", "--trace", str(_trace(tmp_path / "t.csv")),
                     "--requests", "40", "--loads", "0.8", "--routers", "round_robin",
                     "--live-repeats", "1", "--json", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    setup = json.loads(res.stdout)["setup"]
    assert setup["calibrated_here"] is True
    assert setup["profile"] == [str(out / "profiles" / f"engine-{k}.csv") for k in (0, 1)]
    for url, path in zip(urls, setup["profile"], strict=True):
        table = read_profile(path)
        assert table.meta["hardware"] == f"{url} (fidelity run)"
        assert max_error(FittedPredictor.from_table(table),
                         builtin_predictor("vllm-cpu-llama-tiny")) < 0.02
    for slow in setup["neighbour_slowdowns"]:
        assert max(slow.values()) < 0.03
