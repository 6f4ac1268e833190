"""The gateway's background timers: health checks of the engines and the control plane tick.

Health (the choice of who marks an engine down): :class:`HealthChecker` probes each
engine's ``GET /health`` every ``interval_s`` with the client's ``health_s`` timeout.
``fail_threshold`` consecutive failures mark the instance DOWN (``ControlPlane.set_health``:
it gets no new work and its in-flight requests are retried elsewhere); one success marks it
UP again. A request that cannot connect to its engine triggers an immediate probe
(:meth:`HealthChecker.probe_now`), so a dead engine is taken out within one probe rather
than one interval. Metric scrapes never change health (see :mod:`live.metrics_scrape`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from live.aio import cancel_all
from live.client import EngineClient

__all__ = ["HealthChecker", "Ticker"]


class HealthChecker:
    """Periodic ``/health`` probes; calls ``on_change(instance_id, up, reason)`` when an
    instance's health flips (every instance starts up)."""

    def __init__(self, clients: Mapping[str, EngineClient],
                 on_change: Callable[[str, bool, str], None], interval_s: float = 1.0,
                 fail_threshold: int = 2) -> None:
        if not interval_s > 0:
            raise ValueError(f"health interval_s must be > 0, got {interval_s!r}")
        if isinstance(fail_threshold, bool) or not isinstance(fail_threshold, int) or \
                fail_threshold < 1:
            raise ValueError(f"health fail_threshold must be an integer >= 1, got "
                             f"{fail_threshold!r}")
        self.clients = dict(clients)
        self.on_change = on_change
        self.interval_s = float(interval_s)
        self.fail_threshold = fail_threshold
        self.up = dict.fromkeys(self.clients, True)
        self.consecutive_failures = dict.fromkeys(self.clients, 0)
        self.failures = dict.fromkeys(self.clients, 0)
        self.probes = dict.fromkeys(self.clients, 0)
        self.last_error: dict[str, str | None] = dict.fromkeys(self.clients)
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []

    def probe_now(self, instance_id: str) -> None:
        """Probe this engine now instead of at its next interval."""
        ev = self._wake.get(instance_id)
        if ev is not None:
            ev.set()

    async def check(self, instance_id: str) -> bool:
        """One probe; reports a change of health. Returns the probe's result."""
        error = await self.clients[instance_id].health_error()
        self.probes[instance_id] += 1
        self.last_error[instance_id] = error
        if error is None:
            self.consecutive_failures[instance_id] = 0
            if not self.up[instance_id]:
                self.up[instance_id] = True
                self.on_change(instance_id, True, "health check passed")
            return True
        self.failures[instance_id] += 1
        n = self.consecutive_failures[instance_id] = self.consecutive_failures[instance_id] + 1
        if self.up[instance_id] and n >= self.fail_threshold:
            self.up[instance_id] = False
            self.on_change(instance_id, False,
                           f"GET /health failed {n} time(s) in a row (last: {error})")
        return False

    async def _loop(self, instance_id: str) -> None:
        wake = self._wake[instance_id]
        while True:
            await self.check(instance_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval_s)
            wake.clear()

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        for iid in self.clients:
            self._wake[iid] = asyncio.Event()
            self._tasks.append(loop.create_task(self._loop(iid), name=f"health {iid}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)
        self._wake.clear()


class Ticker:
    """Calls ``fn()`` every ``interval_s`` (the control plane's ``tick``)."""

    def __init__(self, fn: Callable[[], None], interval_s: float = 0.5) -> None:
        if not interval_s > 0:
            raise ValueError(f"tick interval_s must be > 0, got {interval_s!r}")
        self.fn = fn
        self.interval_s = float(interval_s)
        self._task: asyncio.Task | None = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at = max(next_at + self.interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())
            self.fn()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="tick")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_all([task])
