"""ReplayFeed: a history file streamed through the daemon as if live, on an accelerated clock.

Daily bars go out session by session and minute bars minute by minute; before each the simulated
clock moves to when a live feed would have them (a session's close, a minute's end), so the
engine closes the bars and evaluates the rules exactly as it would live.
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
    """Stream daily `bars` (DAILY_SCHEMA) and `minutes` (MINUTE_SCHEMA) in time order at `speed`
    simulated seconds per real second. `on_done` is called once every bar has been queued."""

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
    ) -> None:
        self.name = name
        self._bars = bars.sort("session", "symbol")
        self._minutes = minutes.sort("start", "symbol") if minutes is not None else bars.clear()
        self._sessions = sessions
        self._clock = clock
        self._queue = queue
        self._counters = counters
        self._speed = speed
        self._on_done = on_done
        self._log = logs.get("feed.replay").bind(feed=name)

    async def run(self, stop: asyncio.Event) -> None:
        """Queue the bars in time order until done or `stop` is set: each minute bar once its
        minute (and the bar-close delay) has passed, each session's daily bars at its close."""
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
        events.sort(key=lambda e: e[0])
        return events

    def _streamed_at(self, session: dt.date) -> dt.datetime:
        """When a day's bars go out: at its close; a day that is no session (a holiday, a
        weekend in the file) at midnight New York, for the engine to reject as `not_a_session`,
        counted and logged, as `replay` does (the feed crashed on it, over and over)."""
        if self._sessions.is_session(session):
            return self._sessions.close_of(session)
        midnight = dt.datetime.combine(session, dt.time(), tzinfo=ZoneInfo(NEW_YORK))
        return midnight.astimezone(dt.UTC)
