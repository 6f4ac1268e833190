"""Small asyncio helpers shared by the gateway's background loops."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["cancel_all"]


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel ``tasks`` and wait until each has finished."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
