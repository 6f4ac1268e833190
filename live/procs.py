"""Process trees on Linux, read from /proc: descendants, liveness, group stop.

Used by :mod:`live.launcher`; standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

__all__ = ["alive", "descendants", "die_with_parent", "stop_process_group"]

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


def stop_process_group(proc: subprocess.Popen, grace_s: float = 15.0) -> int | None:
    """SIGTERM ``proc``'s process group, wait up to ``grace_s``, then SIGKILL what is left.

    ``proc`` must lead its own group (``start_new_session=True``). Descendants that moved to
    another group are found through /proc beforehand and killed too. Returns the exit code.
    """
    pgid = proc.pid
    family = set(descendants(proc.pid))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_members(pgid) \
                and not any(alive(p) for p in family):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for p in family | set(descendants(proc.pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


def die_with_parent() -> None:            # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
