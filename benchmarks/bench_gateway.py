"""Added latency and CPU per request of the gateway vs the Rust ``vllm-router`` (issue 6).

Both routers sit in front of the same minimal zero-latency upstream: a tiny OpenAI-compatible
HTTP/1.1 server on raw asyncio (its own process) that answers ``/v1/completions``
(non-streaming) instantly and serves ``/health``, ``/metrics`` (vLLM v1 gauge names) and
``/v1/models``. In one run, side by side:

- ``direct``: the load generator talks to the upstream itself (the reference);
- ``gateway``: ``sagellm gateway --engine URL --policy fifo --router round_robin`` (default
  settings: the control plane's admission, queueing and routing are active; its /metrics
  scraper and /health prober keep running);
- ``vllm_router``: ``vllm-router --worker-urls URL --policy round_robin`` from PyPI
  ``vllm-router``, installed on first use into ``.cache/vllm-router-venv`` (``python -m venv``
  + ``pip install vllm-router``). When it cannot be installed or started, ``vllm_router`` is
  ``null`` and ``vllm_router_error`` says why.

Method. The load generator is this process (aiohttp client, ``--concurrency`` workers on
one keep-alive connection pool). Per run and target: ``--warmup`` requests, then ``--requests``
timed ones; per-request latency with ``perf_counter``. ``added_p50_ms`` / ``added_p99_ms`` =
percentile through the router - the same percentile direct, measured in the same run round;
each figure is the median of ``--repeats`` rounds (targets interleaved within a round).
``added_p50_ms_c1`` / ``added_p99_ms_c1``: the same with one request at a time (a third as
many requests), the router's own latency without queueing behind other requests.
``cpu_us_per_req`` = user+sys CPU of the router's process tree over the timed requests
(``/proc/<pid>/stat``, clock ticks) / requests. ``gateway.max_rps``: gateway throughput at
saturation (``--max-concurrency``, default 64), requests / wall time (``direct_max_rps`` is
the same against the upstream alone, the ceiling this load generator can reach here).

CPU pinning (``os.sched_setaffinity``; the machine may have only 2 cores): the load
generator runs on core 0 and the upstream on the last core, so neither steals the router's
cycles from its own core. The routers under test are not pinned (the kernel places them;
with 2 cores they share with the load generator or the upstream, equally for both).

    python benchmarks/bench_gateway.py            # human summary
    python benchmarks/bench_gateway.py --json     # one JSON object
    python benchmarks/bench_gateway.py --check    # exit 2 when a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTER_VENV = ROOT / ".cache" / "vllm-router-venv"
MODEL = "tiny"
BODY = {"model": MODEL, "prompt": "Hello, my name is", "max_tokens": 4, "temperature": 0}
TARGET_ADDED_P50_MS = 0.5
TARGET_CPU_RATIO = 2.0

# --------------------------------------------------------------------------------------------
# Zero-latency upstream (raw asyncio HTTP/1.1, keep-alive)
# --------------------------------------------------------------------------------------------

_COMPLETION = json.dumps({
    "id": "cmpl-bench", "object": "text_completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "text": " Bench", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
}).encode()
_MODELS = json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench", "max_model_len": 2048},
]}).encode()
_METRICS = (
    f'vllm:num_requests_running{{model_name="{MODEL}"}} 0.0\n'
    f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 0.0\n'
    f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.0\n'
    f'vllm:gpu_cache_usage_perc{{model_name="{MODEL}"}} 0.0\n'
).encode()


def _response(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n").encode() + body


_RESP = {
    "/v1/completions": _response("200 OK", _COMPLETION),
    "/health": _response("200 OK", b""),
    "/v1/models": _response("200 OK", _MODELS),
    "/metrics": _response("200 OK", _METRICS, "text/plain; version=0.0.4"),
}
_NOT_FOUND = _response("404 Not Found", b'{"error":"not found"}')


class _Upstream(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length, close = 0, False
            for line in head[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v)
                elif k == "connection" and v.strip().lower() == "close":
                    close = True
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            parts = head[0].split(" ")
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            self.t.write(_RESP.get(path, _NOT_FOUND))
            if close:
                self.t.close()
                return


def serve_upstream(port: int) -> None:
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Upstream, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of ``pid`` and its descendants (threads included)."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError):
            pass
    return total / _TCK


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(cmd: list[str], log: Path, cpus: set[int] | None = None) -> subprocess.Popen:
    def pre():
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)
        else:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    f = open(log, "wb")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=pre)


async def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    import aiohttp
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}: {log.read_text()[-1500:]}")
            try:
                async with s.post(url + "/v1/completions", json=BODY,
                                  timeout=aiohttp.ClientTimeout(total=2)) as r:
                    await r.read()
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f}s: {log.read_text()[-1500:]}")


def ensure_vllm_router() -> list[str]:
    """The vllm-router command, installing it into its own cached venv if missing."""
    exe = ROUTER_VENV / "bin" / "vllm-router"
    if not exe.exists():
        if not (ROUTER_VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(ROUTER_VENV)], check=True,
                           capture_output=True, text=True)
        r = subprocess.run([str(ROUTER_VENV / "bin" / "pip"), "install", "-q", "vllm-router"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pip install vllm-router failed: {(r.stderr or r.stdout)[-1500:]}")
    if exe.exists():
        return [str(exe)]
    return [str(ROUTER_VENV / "bin" / "python"), "-m", "vllm_router.launch_router"]


def _sagellm() -> list[str]:
    exe = Path(sys.executable).parent / "sagellm"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("sagellm")
    if found:
        return [found]
    return [sys.executable, "-m", "sagellm"]


# --------------------------------------------------------------------------------------------
# Load generator
# --------------------------------------------------------------------------------------------

async def _load(session, url: str, n: int, concurrency: int) -> tuple[list[float], float, int]:
    lat: list[float] = []
    errors = 0
    left = n
    payload = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json"}

    async def worker():
        nonlocal left, errors
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
                ok = r.status == 200
            dt = time.perf_counter() - t0
            if ok:
                lat.append(dt)
            else:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, time.perf_counter() - t0, errors


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(base: str, pid: int | None, n: int, warmup: int, concurrency: int) -> dict:
    import aiohttp
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s:
        url = base + "/v1/completions"
        await _load(s, url, warmup, concurrency)
        c0 = cpu_seconds(pid) if pid else 0.0
        lat, wall, errors = await _load(s, url, n, concurrency)
        c1 = cpu_seconds(pid) if pid else 0.0
    return {
        "p50_ms": _pct(lat, 0.50) * 1e3, "p99_ms": _pct(lat, 0.99) * 1e3,
        "rps": len(lat) / wall, "errors": errors,
        "cpu_us_per_req": (c1 - c0) / n * 1e6 if pid else None,
    }


async def bench(args) -> dict:
    ncpu = os.cpu_count() or 1
    load_cpu, up_cpu = 0, ncpu - 1
    if ncpu > 1:
        os.sched_setaffinity(0, {load_cpu})
    logdir = ROOT / ".cache" / "bench_gateway"
    logdir.mkdir(parents=True, exist_ok=True)
    up_port, gw_port, vr_port = _free_port(), _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    procs: dict[str, subprocess.Popen] = {}
    result: dict = {"gateway": None, "vllm_router": None}
    try:
        procs["upstream"] = _start(
            [sys.executable, str(Path(__file__).resolve()), "--_upstream", str(up_port)],
            logdir / "upstream.log", {up_cpu} if ncpu > 1 else None)
        await _wait_ready(upstream, procs["upstream"], 30, logdir / "upstream.log")

        procs["gateway"] = _start(
            [*_sagellm(), "gateway", "--engine", upstream, "--policy", "fifo",
             "--router", "round_robin", "--port", str(gw_port), "--log-level", "warning"],
            logdir / "gateway.log")
        targets = {"gateway": f"http://127.0.0.1:{gw_port}"}
        await _wait_ready(targets["gateway"], procs["gateway"], 60, logdir / "gateway.log")

        vr_error = None
        try:
            cmd = ensure_vllm_router()
            procs["vllm_router"] = _start(
                [*cmd, "--worker-urls", upstream, "--policy", "round_robin",
                 "--host", "127.0.0.1", "--port", str(vr_port)], logdir / "vllm_router.log")
            await _wait_ready(f"http://127.0.0.1:{vr_port}", procs["vllm_router"], 90,
                              logdir / "vllm_router.log")
            targets["vllm_router"] = f"http://127.0.0.1:{vr_port}"
        except Exception as e:
            vr_error = f"{type(e).__name__}: {e}"
            _stop(procs.pop("vllm_router", None))

        rounds: dict[str, list[dict]] = {k: [] for k in ["direct", *targets]}
        n1 = max(100, args.requests // 3)
        for _ in range(args.repeats):
            d = await measure(upstream, None, args.requests, args.warmup, args.concurrency)
            d1 = await measure(upstream, None, n1, args.warmup // 3, 1)
            d["p50_ms_c1"], d["p99_ms_c1"] = d1["p50_ms"], d1["p99_ms"]
            rounds["direct"].append(d)
            for name, url in targets.items():
                m = await measure(url, procs[name].pid, args.requests, args.warmup,
                                  args.concurrency)
                m["added_p50_ms"] = m["p50_ms"] - d["p50_ms"]
                m["added_p99_ms"] = m["p99_ms"] - d["p99_ms"]
                m1 = await measure(url, None, n1, args.warmup // 3, 1)
                m["added_p50_ms_c1"] = m1["p50_ms"] - d1["p50_ms"]
                m["added_p99_ms_c1"] = m1["p99_ms"] - d1["p99_ms"]
                rounds[name].append(m)

        def med(name: str, key: str) -> float:
            return round(statistics.median(r[key] for r in rounds[name]), 4)

        for name in targets:
            result[name] = {k: med(name, k) for k in
                            ("added_p50_ms", "added_p99_ms", "added_p50_ms_c1",
                             "added_p99_ms_c1", "cpu_us_per_req", "p50_ms", "p99_ms", "rps")}
            result[name]["errors"] = sum(r["errors"] for r in rounds[name])
        result["direct"] = {k: med("direct", k) for k in ("p50_ms", "p99_ms", "rps",
                                                           "p50_ms_c1", "p99_ms_c1")}
        if vr_error:
            result["vllm_router_error"] = vr_error

        sat = await measure(targets["gateway"], procs["gateway"].pid, args.max_requests,
                            args.warmup, args.max_concurrency)
        result["gateway"]["max_rps"] = round(sat["rps"], 1)
        result["gateway"]["max_rps_errors"] = sat["errors"]
        dsat = await measure(upstream, None, args.max_requests, args.warmup,
                             args.max_concurrency)
        result["direct"]["max_rps"] = round(dsat["rps"], 1)
    finally:
        for p in procs.values():
            _stop(p)

    gw, vr = result["gateway"], result["vllm_router"]
    fails = []
    if gw["added_p50_ms"] > TARGET_ADDED_P50_MS:
        fails.append(f"gateway added p50 {gw['added_p50_ms']:.3f} ms > {TARGET_ADDED_P50_MS} ms")
    if vr and gw["cpu_us_per_req"] > TARGET_CPU_RATIO * vr["cpu_us_per_req"]:
        fails.append(f"gateway CPU {gw['cpu_us_per_req']:.0f} us/req > "
                     f"{TARGET_CPU_RATIO}x vllm-router's {vr['cpu_us_per_req']:.0f}")
    result["targets_met"] = not fails
    result["target_failures"] = fails
    result["setup"] = {
        "requests": args.requests, "warmup": args.warmup, "repeats": args.repeats,
        "concurrency": args.concurrency, "max_concurrency": args.max_concurrency,
        "cpus": ncpu, "loadgen_cpu": load_cpu if ncpu > 1 else None,
        "upstream_cpu": up_cpu if ncpu > 1 else None, "routers_pinned": False,
    }
    return result


def _summary(r: dict) -> str:
    lines = [f"direct upstream: p50 {r['direct']['p50_ms']:.3f} ms, p99 {r['direct']['p99_ms']:.3f}"
             f" ms, max {r['direct']['max_rps']:.0f} req/s (load generator ceiling)"]
    for name in ("gateway", "vllm_router"):
        m = r[name]
        if m is None:
            lines.append(f"{name}: unavailable ({r.get('vllm_router_error')})")
            continue
        lines.append(f"{name}: added p50 {m['added_p50_ms']:+.3f} ms, p99 "
                     f"{m['added_p99_ms']:+.3f} ms, CPU {m['cpu_us_per_req']:.0f} us/req, "
                     f"{m['rps']:.0f} req/s at c={r['setup']['concurrency']}; at c=1 added "
                     f"p50 {m['added_p50_ms_c1']:+.3f} ms, p99 {m['added_p99_ms_c1']:+.3f} ms")
    lines.append(f"gateway max throughput (c={r['setup']['max_concurrency']}): "
                 f"{r['gateway']['max_rps']:.0f} req/s")
    lines.append("targets: " + ("met" if r["targets_met"] else "; ".join(r["target_failures"])))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-concurrency", type=int, default=64)
    ap.add_argument("--max-requests", type=int, default=5000)
    ap.add_argument("--_upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._upstream:
        serve_upstream(args._upstream)
        return 0
    result = asyncio.run(bench(args))
    print(json.dumps(result, indent=2) if args.json else _summary(result))
    if args.check and not result["targets_met"]:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
