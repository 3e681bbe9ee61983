"""ReplayFeed: a history file streamed through the daemon as if live, on an accelerated clock.

Daily bars go out session by session; before each session the simulated clock moves to that
session's close, so the engine closes the bars and evaluates the rules exactly as it would live.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable

import polars as pl

from monitor import logs
from monitor.clock import SimClock
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.core.sessions import Sessions

MAX_SLEEP_S = 2.0


class ReplayFeed:
    """Stream `bars` (DAILY_SCHEMA) in session order at `speed` simulated seconds per real second.
    `on_done` is called once every bar has been queued."""

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
    ) -> None:
        self.name = name
        self._bars = bars.sort("session", "symbol")
        self._sessions = sessions
        self._clock = clock
        self._queue = queue
        self._counters = counters
        self._speed = speed
        self._on_done = on_done
        self._log = logs.get("feed.replay").bind(feed=name)

    async def run(self, stop: asyncio.Event) -> None:
        """Queue each session's bars in turn until done or `stop` is set."""
        days = self._bars.partition_by("session", maintain_order=True, as_dict=True)
        self._log.info("feed_connected", sessions=len(days), speed=self._speed)
        for (session,), part in days.items():
            assert isinstance(session, dt.date)
            close = self._sessions.close_of(session)
            wait = (close - self._clock.now()).total_seconds() / self._speed
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(wait, MAX_SLEEP_S))
            if stop.is_set():
                break
            self._clock.set(close)
            batch = FeedBatch.empty(self.name)
            batch.daily_bars = part
            await self._queue.put(batch)
            self._counters.inc("feed_messages", feed=self.name)
            self._counters.inc("feed_bars", part.height, feed=self.name)
        self._log.info("feed_replay_done")
        if self._on_done is not None:
            self._on_done()
