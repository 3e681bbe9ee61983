"""`QuietWatch`: when a feed is stale, counted in the market's hours only."""

from __future__ import annotations

import asyncio
import datetime as dt

from monitor.core.counters import Counters
from monitor.feeds.events import FeedEvent, QuietSettings, QuietWatch
from monitor.logs import get

AT = dt.datetime(2024, 7, 16, 13, 30, tzinfo=dt.UTC)


async def test_quiet_overnight_is_not_counted_at_the_open() -> None:
    """A feed last heard from before the close is not stale at the open: its silence counts
    from the open (it went stale at the first look after 09:30 and recovered a minute later,
    every trading day, for a feed of minute bars)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    events: list[tuple[float, str, float]] = []

    def open_after_half_a_second(_: dt.datetime) -> bool:
        return loop.time() - started >= 0.5

    def said(e: FeedEvent) -> None:
        events.append((loop.time() - started, e.kind, e.gap_s or 0.0))

    settings = QuietSettings(0.3, open_after_half_a_second, lambda: AT, said)
    watch = QuietWatch("bus", settings, Counters(), get("test"))
    task = asyncio.create_task(watch.watch())
    await asyncio.sleep(1.2)
    watch.data()
    task.cancel()
    kinds = [(kind, round(gap, 1)) for _, kind, gap in events]
    assert [k for k, _ in kinds] == ["feed_stale", "feed_recovered"]
    stale_at = events[0][0]
    assert stale_at >= 0.7  # (closed to 0.5 s, then 0.3 s quiet, give or take a look: not at 0.5)
    assert events[0][2] < 0.5 and events[1][2] < 1.0  # (gaps of the open hours only)
