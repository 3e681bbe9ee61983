"""Waiting on asyncio events with a timeout: what the Redis publisher (`monitor.alerts`) and the
notifier (`monitor.notify`) both do between attempts, in packages that do not import each
other."""

from __future__ import annotations

import asyncio


async def wait_any(events: tuple[asyncio.Event, ...], timeout_s: float) -> None:
    """Return when any of `events` is set or after `timeout_s`, whichever comes first."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
