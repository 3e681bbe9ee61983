"""ReplayFeed: a history file streamed through the daemon as if live, on an accelerated clock.

Daily bars go out session by session, minute bars minute by minute and ticks second by second;
before each the simulated clock moves to when a live feed would have them (a session's close, a
minute's end, the second's last tick), so the engine builds and closes the bars and evaluates
the rules exactly as it would live. After each minute that has ticks, the clock moves to its end
(and the bar-close delay) with an empty batch, as a live daemon's clock passes it, so its bars
close then, the last minute's and its session's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import polars as pl

from monitor import logs
from monitor.clock import SimClock
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.core.sessions import NEW_YORK, Sessions

MAX_SLEEP_S = 2.0
MINUTE = dt.timedelta(minutes=1)
CLOSE_DELAY = dt.timedelta(seconds=2)  # the BarBook's default close delay


class ReplayFeed:
    """Stream daily `bars` (DAILY_SCHEMA), `minutes` (MINUTE_SCHEMA) and `ticks` (TICK_SCHEMA)
    in time order at `speed` simulated seconds per real second (ticks of one time in their
    order in `ticks`). `on_done` is called once every bar and tick has been queued."""

    def __init__(
        self,
        name: str,
        bars: pl.DataFrame,
        *,
        sessions: Sessions,
        clock: SimClock,
        queue: asyncio.Queue[FeedBatch],
        counters: Counters,
        speed: float,
        on_done: Callable[[], None] | None = None,
        minutes: pl.DataFrame | None = None,
        ticks: pl.DataFrame | None = None,
    ) -> None:
        self.name = name
        self._bars = bars.sort("session", "symbol")
        self._minutes = minutes.sort("start", "symbol") if minutes is not None else bars.clear()
        self._ticks = ticks.sort("ts", maintain_order=True) if ticks is not None else bars.clear()
        self._sessions = sessions
        self._clock = clock
        self._queue = queue
        self._counters = counters
        self._speed = speed
        self._on_done = on_done
        self._log = logs.get("feed.replay").bind(feed=name)

    async def run(self, stop: asyncio.Event) -> None:
        """Queue the bars and ticks in time order until done or `stop` is set: each minute bar
        once its minute (and the bar-close delay) has passed, each session's daily bars at its
        close, each second's ticks at the last of them."""
        events = self._timeline()
        self._log.info("feed_connected", events=len(events), speed=self._speed)
        for at, batch in events:
            wait = (at - self._clock.now()).total_seconds() / self._speed
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(wait, MAX_SLEEP_S))
            if stop.is_set():
                break
            self._clock.set(at)
            await self._queue.put(batch)
            if batch.ticks.height:
                self._counters.inc("feed_messages", feed=self.name)
                self._counters.inc("feed_ticks", batch.ticks.height, feed=self.name)
            elif batch.size():  # (not a minute's end: see the module)
                self._counters.inc("feed_messages", feed=self.name)
                self._counters.inc("feed_bars", batch.size(), feed=self.name)
        self._log.info("feed_replay_done")
        if self._on_done is not None:
            self._on_done()

    def _timeline(self) -> list[tuple[dt.datetime, FeedBatch]]:
        events: list[tuple[dt.datetime, FeedBatch]] = []
        if self._bars.height:
            for (session,), part in self._bars.partition_by(
                "session", maintain_order=True, as_dict=True
            ).items():
                assert isinstance(session, dt.date)
                batch = FeedBatch.empty(self.name)
                batch.daily_bars = part
                events.append((self._streamed_at(session), batch))
        if self._minutes.height:
            for (start,), part in self._minutes.partition_by(
                "start", maintain_order=True, as_dict=True
            ).items():
                assert isinstance(start, dt.datetime)
                batch = FeedBatch.empty(self.name)
                batch.minute_bars = part
                events.append((start + MINUTE + CLOSE_DELAY, batch))
        if self._ticks.height:
            events += self._tick_events()
        events.sort(key=lambda e: e[0])
        return events

    def _tick_events(self) -> list[tuple[dt.datetime, FeedBatch]]:
        """Each second's ticks at the last of them, and an empty batch at the end of each
        minute with ticks (and the bar-close delay)."""
        events: list[tuple[dt.datetime, FeedBatch]] = []
        second = pl.col("ts").dt.truncate("1s").alias("_second")
        for part in self._ticks.with_columns(second).partition_by("_second", maintain_order=True):
            batch = FeedBatch.empty(self.name)
            batch.ticks = part.drop("_second")
            at = batch.ticks.get_column("ts").max()
            assert isinstance(at, dt.datetime)
            events.append((at, batch))
        minutes = self._ticks.select(pl.col("ts").dt.truncate("1m").unique()).to_series()
        for start in minutes.to_list():
            events.append((start + MINUTE + CLOSE_DELAY, FeedBatch.empty(self.name)))
        return events

    def _streamed_at(self, session: dt.date) -> dt.datetime:
        """When a day's bars go out: at its close; a day that is no session (a holiday, a
        weekend in the file) at midnight New York, for the engine to reject as `not_a_session`,
        counted and logged, as `replay` does (the feed crashed on it, over and over)."""
        if self._sessions.is_session(session):
            return self._sessions.close_of(session)
        midnight = dt.datetime.combine(session, dt.time(), tzinfo=ZoneInfo(NEW_YORK))
        return midnight.astimezone(dt.UTC)
