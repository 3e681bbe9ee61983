"""What a feed tells the daemon about itself (`FeedEvent`), and the watch that says when a feed
has gone quiet (`QuietWatch`), shared by the WebSocket and MQTT feeds: a feed whose source stops
sending, its connection up, is otherwise seen nowhere (the connection gauge stays 1, the lag
gauge stays what it was)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from monitor.core.counters import Counters

FeedEventKind = Literal["feed_stale", "feed_recovered", "trading_status", "provider_error"]


class FeedEvent(msgspec.Struct, frozen=True):
    """Something about a feed the service may alert on.

    `feed_stale`: no data for `gap_s` seconds in regular hours. `feed_recovered`: data again
    after a stale gap of `gap_s`. `trading_status`: a halt (`halted` True), a resumption (False)
    or another status of `symbol`. `provider_error`: a provider error the feed carries on after.
    """

    feed: str
    kind: FeedEventKind
    at: dt.datetime
    gap_s: float | None = None
    symbol: str | None = None
    halted: bool | None = None
    message: str = ""


class QuietSettings(msgspec.Struct, frozen=True):
    """What a feed's `QuietWatch` needs from the daemon: how long is quiet, when the market is
    open, the (possibly simulated) clock, and where its events go."""

    stale_after_s: float
    is_regular_hours: Callable[[dt.datetime], bool]
    clock: Callable[[], dt.datetime]
    on_event: Callable[[FeedEvent], None] | None = None
    # The feed was stale when the daemon stopped (the store keeps which): its first data after
    # the start is a `feed_recovered`, else the notifier holds alerts back for its stale.
    stale_at_start: bool = False


class QuietWatch:
    """`feed_stale` when a feed has had no data for `stale_after_s` in regular hours, and
    `feed_recovered` (with the gap) at its next data: each as the gauge `feed_stale`, a log
    line and a FeedEvent to `on_event`. The feed calls `data()` as data arrives (cheap: a
    clock read) and runs `watch()` beside its reading."""

    def __init__(self, feed: str, settings: QuietSettings, counters: Counters, log: Any) -> None:
        self.feed = feed
        self.stale_after_s = settings.stale_after_s
        self.stale = settings.stale_at_start
        self._is_regular_hours = settings.is_regular_hours
        self._clock = settings.clock
        self._on_event = settings.on_event
        self._counters = counters
        self._log = log
        self.last_data = 0.0  # loop time of the last data (or of the watch's start)
        # Loop time the market was last seen closed: quiet before it is no staleness (a feed of
        # minute bars is silent from the evening's last bar to the first after the open).
        self._closed_at = 0.0

    def data(self) -> None:
        """Data arrived: the feed is not quiet (and if it was stale, it has recovered)."""
        now = asyncio.get_running_loop().time()
        if self.stale:
            gap_s = now - max(self.last_data, self._closed_at)
            self.stale = False
            self._counters.set("feed_stale", 0, feed=self.feed)
            self._log.info("feed_recovered", gap_s=round(gap_s, 3))
            self._emit("feed_recovered", gap_s)
        self.last_data = now

    async def watch(self) -> None:
        """Until cancelled: look a few times per `stale_after_s` (at most every second) whether
        the feed has been quiet that long in regular hours, counting from the later of its last
        data and the market's open; the time before the watch started counts as data (a feed
        is not stale the moment the daemon starts). A feed whose connection is down is quiet
        too: the notifier holds per-symbol alerts back on `feed_stale`, whatever the cause."""
        loop = asyncio.get_running_loop()
        self.last_data = loop.time()
        period_s = min(max(self.stale_after_s / 4, 0.01), 1.0)
        self._counters.set("feed_stale", 1 if self.stale else 0, feed=self.feed)
        while True:
            await asyncio.sleep(period_s)
            now = loop.time()
            if not self._is_regular_hours(self._clock()):
                self._closed_at = now
                continue
            silent_s = now - max(self.last_data, self._closed_at)
            if self.stale or silent_s < self.stale_after_s:
                continue
            self.stale = True
            self._counters.set("feed_stale", 1, feed=self.feed)
            self._log.warning("feed_stale", silent_s=round(silent_s, 3))
            self._emit("feed_stale", silent_s)

    def _emit(self, kind: FeedEventKind, gap_s: float) -> None:
        if self._on_event is not None:
            self._on_event(FeedEvent(self.feed, kind, self._clock(), gap_s))
