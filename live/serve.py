"""Run a server (the gateway, emulated engines) until SIGINT / SIGTERM, on uvloop when it
is installed (a faster event loop; the standard one otherwise)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

__all__ = ["new_event_loop", "run_until_signalled"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is importable, else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_until_signalled(start: Callable[[], Awaitable[object]],
                        stop: Callable[[], Awaitable[object]]) -> None:
    """``await start()``, wait for SIGINT or SIGTERM, then ``await stop()`` (also when
    ``start`` fails half way). Errors raised by ``start`` propagate."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        try:
            await start()
            await done.wait()
        finally:
            await stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
