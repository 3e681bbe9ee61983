"""Waiting on asyncio events with a timeout: what the Redis publisher (`monitor.alerts`) and the
notifier (`monitor.notify`) both do between attempts, in packages that do not import each
other; and how long an HTTP 429 asks to wait (the notifier's senders, a feed's REST backfill)."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime


async def wait_any(events: tuple[asyncio.Event, ...], timeout_s: float) -> None:
    """Return when any of `events` is set or after `timeout_s`, whichever comes first.

    A cancellation a call below swallowed is raised here (`raise_if_cancelled`)."""
    raise_if_cancelled()
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def raise_if_cancelled() -> None:
    """Raise the CancelledError of a task asked to stop by cancellation, when a call below
    swallowed it: Python 3.11's `asyncio.wait_for` drops a cancellation that arrives as the
    awaited call completes (CPython gh-86296), and redis-py sends every command through it.
    A loop that goes on until `stop` is set, or until cancelled, calls this at each turn, or
    waits with `wait_any`: it would otherwise run on, and a cancelled notifier never ended (its
    task group waiting on the loop for good). A task that handles its cancellation and goes
    on, as `asyncio.timeout` does, calls `uncancel` and is not stopped here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds; None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
