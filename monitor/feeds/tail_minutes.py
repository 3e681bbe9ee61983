"""TailMinutes: the minute a gap closed part-way through, fetched once it is over.

A reconnect at 14:31:40 lacks the trades of 14:31:00 to 14:31:40 (the gap's tail): the gap's
backfill ends where that minute begins, and the stream builds the rest. So the current minute,
when a gap closes part-way through it, is fetched once it is over and `backfill_tail_delay_s`
more (a provider publishes a minute's bar a few seconds after its end), for every symbol, and
its bars handed on as the provider's: each replaces the bar the stream built of the minute (its
volume counted once; a tick of the minute that comes after it merges into it, as into any
provider bar). Until then the feed awaits the minute (`await_minute`): the daemon's close clock
holds it open, bounded by `catch_up_hold_s` (`monitor.close_clock`), so that it closes once,
whole, and a 1m rule evaluates the provider's bar, not the stream's part of it. It is owed as a
failed window is (the store's `backfills_owed.json`, every symbol over that minute) until its
bars are on disk, and a fetch that fails is one as any other backfill's (counted, said, asked
for again): `GapFill` owes it, runs the fetch and keeps it if it is cancelled.

Why apart from `monitor.feeds.gap_fill`, whose `GapFill` owns and drives it: a tail is not
fetched with its gap but later, on the clock, and it holds the daemon's close of its minute
meanwhile; its own state is the tails waiting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from monitor.core.model import FeedBatch
from monitor.feeds.owed import Owed, floor_minute
from monitor.feeds.wire import Wire

__all__ = ["TAIL_POLL_S", "TailMinutes"]

# how often the wait for a tail's minute to be over looks at the clock (a simulated one jumps)
TAIL_POLL_S = 1.0
_MINUTE = dt.timedelta(minutes=1)


class TailMinutes:
    """The tails of one feed's gaps waiting to be over to be fetched (`hold`, then `fetch`);
    the daemon awaits each meanwhile (`await_minute(start, True)`: its close is held, until
    `await_minute(start, False)`)."""

    def __init__(
        self,
        name: str,
        *,
        queue: asyncio.Queue[FeedBatch | Wire],
        clock: Callable[[], dt.datetime],
        traded: Callable[[dt.datetime, dt.datetime], bool] | None,
        delay_s: float,
        await_minute: Callable[[dt.datetime, bool], None] | None,
    ) -> None:
        self._name = name
        self._queue = queue
        self._clock = clock
        self._traded = traded
        self._delay = dt.timedelta(seconds=delay_s)
        self._await_minute = await_minute
        self._waiting: list[Owed] = []

    def of(self, now: dt.datetime, symbols: Sequence[str]) -> Owed | None:
        """The tail of a gap closing at `now`: the minute of `now`, every one of `symbols`.
        None: `now` is a minute's start, or of no session (`traded`), or there is no symbol."""
        minute = floor_minute(now)
        if minute == now or not symbols:
            return None
        if self._traded is not None and not self._traded(minute, minute + _MINUTE):
            return None  # (a minute of no session: the engine takes none of its trades)
        return Owed(minute, minute + _MINUTE, tuple(symbols))

    def __contains__(self, tail: Owed) -> bool:
        """Whether `tail` waits already (a second reconnect in the minute: fetched once)."""
        return tail in self._waiting

    def hold(self, tail: Owed) -> None:
        """`tail` waits, to be fetched (`fetch`); the daemon awaits its minute meanwhile."""
        self._waiting.append(tail)
        if self._await_minute is not None:
            self._await_minute(tail.start, True)

    async def fetch(self, tail: Owed, run: Callable[[], Awaitable[None]]) -> None:
        """`run` (fetch the tail's minute and hand its bars on) `backfill_tail_delay_s` after
        its end (by the feed's clock), and stop awaiting it once the step that took them in is
        done (a marker's ack: the minute closes in the next); at once if it fails or is
        cancelled."""
        assert tail.end is not None
        due = tail.end + self._delay
        released = False
        try:
            while (left_s := (due - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(left_s, TAIL_POLL_S))
            await run()
            if self._await_minute is not None:
                done = partial(self._await_minute, tail.start, False)
                await self._queue.put(Wire(self._name, [], ack=done))
                released = True
        finally:
            self._waiting.remove(tail)
            if self._await_minute is not None and not released:
                self._await_minute(tail.start, False)
