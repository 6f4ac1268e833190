"""Process trees on Linux, read from /proc: descendants, liveness, group stop, listeners.

Used by :mod:`live.launcher`; standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

__all__ = ["alive", "descendants", "die_with_parent", "listener_pids", "listening_inodes",
           "stop_process_group"]

_PR_SET_PDEATHSIG = 1


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...),
    or None when the process is gone. The name may hold spaces and parens: the fields after
    its last ``)`` are fixed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def _all_stats():
    """(pid, stat fields) of every process in /proc."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            fields = _stat_fields(d)
            if fields is not None:
                yield int(d), fields


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process, from /proc."""
    return {pid: int(fields[1]) for pid, fields in _all_stats()}


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children, grandchildren, ...), from /proc."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for p, pp in parents.items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, fields in _all_stats()
            if int(fields[2]) == pgid and fields[0] != b"Z"]


def _wait_gone(pgid: int, pids: set[int], deadline: float,
               proc: subprocess.Popen | None = None) -> bool:
    """Poll until ``proc`` has exited, group ``pgid`` is empty and ``pids`` are all gone;
    False if ``deadline`` (monotonic) passes first."""
    while True:
        if (proc is None or proc.poll() is not None) and not _group_members(pgid) \
                and not any(alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 15.0,
                       kill_wait_s: float = 10.0) -> int | None:
    """SIGTERM ``proc``'s process group, wait up to ``grace_s``, then SIGKILL what is left,
    and return only once every process of the tree is gone (so its ports, cores and memory
    are free), or after a further ``kill_wait_s``.

    ``proc`` must lead its own group (``start_new_session=True``). Descendants that moved to
    another group are found through /proc beforehand and killed too. Returns the exit code.
    """
    pgid = proc.pid
    family = set(descendants(proc.pid))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    if _wait_gone(pgid, family, time.monotonic() + grace_s, proc):
        return proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    family |= set(descendants(proc.pid))
    for p in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    try:
        code = proc.wait(timeout=kill_wait_s)
    except subprocess.TimeoutExpired:
        return None
    # SIGKILL is asynchronous: the other members may still be exiting (and holding the port)
    _wait_gone(pgid, family, time.monotonic() + kill_wait_s)
    return code


def listening_inodes(port: int) -> set[int]:
    """Socket inodes of the TCP listeners (IPv4 and IPv6) on ``port``, from /proc/net."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)                     # the header line
                for line in f:
                    # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                    parts = line.split()
                    if len(parts) > 9 and parts[3] == "0A" \
                            and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        found.add(int(parts[9]))
        except OSError:
            continue
    return found


def listener_pids(port: int) -> set[int]:
    """The processes holding a TCP socket that listens on ``port`` (those whose open files
    this process may read; empty when none is found)."""
    wanted = {f"socket:[{i}]" for i in listening_inodes(port)}
    owners: set[int] = set()
    if not wanted:
        return owners
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{d}/fd/{fd}") in wanted:
                    owners.add(int(d))
                    break
    return owners


def die_with_parent() -> None:            # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
