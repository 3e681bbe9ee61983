"""GapFill: the minutes a stream missed, fetched over REST and handed on until they are on disk.

A `WebSocketFeed` opens a gap when its data stops (a lost connection; after a restart, where
the data taken up ends) and closes it at its next subscription; this fills it. The minutes of
the gap are fetched from the provider's REST API (`RestBackfill`) and queued as minute bars,
which the engine upserts by symbol and start:

- the window starts a minute before the gap (its first minute may be part-built), no further
  back than the oldest session whose minutes the engine still takes (`keeps_from`), else
  `backfill_max_s`; it ends at the current minute, which the stream builds;
- symbols whose requests failed are asked again, up to `backfill_attempts` times in all, the
  others' bars handed on at once; a 429's wait is honoured (up to `MAX_RETRY_AFTER_S`);
- a backfill whose attempts all fail is said (`error`, on /healthz), and asked for again after
  `backfill_retry_s` (doubling, up to `MAX_REFILL_S`) while the connection stays up, and at
  the next subscription or start;
- a gap is owed (`owe`) from when it opens until its bars are on disk (`settle`, acknowledged
  by the engine loop after the bars before it), so that one cut off by a stop is fetched at
  the next start (see `monitor.owed_backfills`).

Why apart from `monitor.feeds.websocket`: that module is the connection (handshake, frames,
reconnects); this is what happens after one, with its own bookkeeping of failed gaps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import MonitorError
from monitor.feeds.rest import RestBackfill
from monitor.feeds.wire import Wire

__all__ = ["MAX_REFILL_S", "MAX_RETRY_AFTER_S", "GapFill"]

_MINUTE = dt.timedelta(minutes=1)
MAX_RETRY_AFTER_S = 60.0  # the longest a backfill waits for a 429's Retry-After
MAX_REFILL_S = 1800.0  # the longest wait before a failed backfill is asked for again


class GapFill:
    """The REST backfills of one feed's gaps, run in the feed's task group (`bind`).

    Counters (label `feed`): backfill_bars, backfill_failures.
    """

    def __init__(
        self,
        name: str,
        symbols: Sequence[str],
        rest: RestBackfill | None,
        *,
        queue: asyncio.Queue[FeedBatch | Wire],
        deliver: Callable[[FeedBatch], Awaitable[None]],
        is_subscribed: Callable[[], bool],
        counters: Counters,
        backoff: Backoff,
        log: Any,
        max_s: float,
        attempts: int,
        retry_s: float,
        keeps_from: Callable[[dt.datetime], dt.datetime | None] | None,
        owe: Callable[[dt.datetime], None] | None,
        settle: Callable[[list[dt.datetime]], None] | None,
    ) -> None:
        self._name = name
        self._symbols = list(symbols)
        self._rest = rest
        self._queue = queue
        self._deliver = deliver
        self._is_subscribed = is_subscribed
        self._counters = counters
        self._backoff = backoff
        self._log = log
        self._max = dt.timedelta(seconds=max_s)
        self._attempts = attempts
        # A backfill whose attempts all failed is asked for again after retry_s, doubling
        # with each round that fails in a row, up to MAX_REFILL_S.
        self._retry_s = retry_s
        self._refills = 0
        self._keeps_from = keeps_from
        self._owe = owe if rest is not None else None
        self._settle = settle
        # The gaps of backfills that failed (and why: /healthz shows it): asked for again at the
        # next subscription (and, owed in the store, at the next start).
        self._failed_gaps: list[dt.datetime] = []
        self.error: str | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self.pending: set[asyncio.Task[None]] = set()  # backfills running or waiting to

    def __repr__(self) -> str:
        return f"GapFill({self._name!r}, {len(self._failed_gaps)} failed gaps)"

    @property
    def settles(self) -> bool:
        """Whether gaps are owed in the store (then one cut off by a stop is not lost)."""
        return self._settle is not None

    def bind(self, tasks: asyncio.TaskGroup | None) -> None:
        """Run backfills in `tasks` (the feed's, while it runs); None: the feed stopped."""
        self._tasks = tasks

    def owe(self, since: dt.datetime) -> None:
        """A gap opened at `since`: owed until its bars are on disk."""
        if self._owe is not None:
            self._owe(since)

    def fill(self, gap_start: dt.datetime | None, now: dt.datetime) -> None:
        """Backfill, in a task, the gap just closed (from `gap_start`) and those whose backfills
        failed."""
        # The gaps this backfill fills (this one, and those of backfills that failed before):
        # settled once its bars are on disk, and only they.
        gaps = [*([] if gap_start is None else [gap_start]), *self._failed_gaps]
        if not gaps:
            return
        start = max(_floor_minute(min(gaps)) - _MINUTE, self.reach(now))
        end = _floor_minute(now)
        self._failed_gaps = []
        if self._rest is not None and self._tasks is not None and start < end:
            self._start(self.fetch(start, end, gaps), "backfill")
        elif self._settle is not None:  # (nothing to fetch: within the minute, or too old)
            self._settle(gaps)

    def reach(self, now: dt.datetime) -> dt.datetime:
        """How far back a backfill at `now` goes at most: to the open of the oldest session
        whose minutes the engine still takes (`keeps_from`; older ones it rejects as late),
        else `backfill_max_s`. A feed down through the close and back the next morning then
        fetches the afternoon it missed, whose session bars wait for it (see
        `monitor.core.closed_minutes`)."""
        kept = self._keeps_from(now) if self._keeps_from is not None else None
        return kept if kept is not None else now - self._max

    def _start(self, work: Coroutine[object, object, None], what: str) -> None:
        """Run `work` in the feed's task group (a backfill, or the wait before one), cancelled
        at the stop."""
        assert self._tasks is not None
        task = self._tasks.create_task(work, name=f"feed-{self._name}-{what}")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _fill_later(
        self,
        delay_s: float,
        start: dt.datetime,
        end: dt.datetime,
        gaps: list[dt.datetime],
        symbols: list[str],
    ) -> None:
        """After `delay_s`, fetch again the window of a backfill that failed, for the symbols
        that failed only, if the feed is still subscribed (else its next subscription does)
        and nothing took its gaps meanwhile (a reconnect's backfill)."""
        await asyncio.sleep(delay_s)
        if not self._is_subscribed() or any(gap not in self._failed_gaps for gap in gaps):
            return
        for gap in gaps:
            self._failed_gaps.remove(gap)
        self._log.info("backfill_asked_again", after_s=round(delay_s, 3), symbols=_some(symbols))
        self._start(self.fetch(start, end, gaps, symbols), "backfill")

    async def fetch(
        self,
        start: dt.datetime,
        end: dt.datetime,
        gaps: list[dt.datetime] | None = None,
        symbols: list[str] | None = None,
    ) -> None:
        """Fetch [start, end) and hand it on; symbols whose requests failed are asked again
        (the others' bars are handed on at once), up to `backfill_attempts` times in all.
        `gaps`: the starts of the gaps it fills (settled once on disk, or failed)."""
        gaps = gaps or []
        assert self._rest is not None
        window = {"start": start.isoformat(), "end": end.isoformat()}
        left, why, asked_wait, one_by_one = list(symbols or self._symbols), "", 0.0, False
        for attempt in range(self._attempts):
            if attempt:  # (at least as long as a 429 asked, up to a minute)
                wait = min(asked_wait, MAX_RETRY_AFTER_S)
                await asyncio.sleep(max(self._backoff.delay(attempt - 1), wait))
            try:
                fetched = await self._rest.fetch(
                    left, start, end, feed=self._name, one_by_one=one_by_one
                )
            except MonitorError as exc:  # (refused credentials: asking again will not help)
                self._failed(start, gaps, str(exc))
                self._log.error("backfill_failed", error=str(exc), **window)
                return
            batch, failed, asked, refused = fetched
            asked_wait = asked or 0.0
            one_by_one = bool(refused)  # (a group refused for one symbol: find which)
            bars = batch.minute_bars.height
            self._counters.inc("backfill_bars", bars, feed=self._name)
            got = len(left) - len(failed)
            self._log.info("feed_backfilled", bars=bars, symbols=got, **window)
            if bars or batch.rejections:
                await self._deliver(batch)
            if not failed:
                if not self._failed_gaps:  # (no other backfill failed since this one began)
                    self.error = None
                    self._refills = 0
                if self._settle is not None:  # (once the engine loop has them on disk)
                    await self._queue.put(Wire(self._name, [], ack=partial(self._settle, gaps)))
                return
            left, why = list(failed), next(iter(failed.values()))
            self._log.warning(
                "backfill_retry",
                error=why,
                attempt=attempt + 1,
                failed=len(left),
                symbols=_some(left),
                **window,
            )
        n = len(left)
        self._failed(start, gaps, f"{n} symbol{'s' if n > 1 else ''} ({_some(left, 5)}): {why}")
        # Asked for again while the connection stays up, not only at its next loss: a REST
        # API down for a minute would otherwise leave the gap (and the session bars that wait
        # for it) until the next reconnect or start, hours later.
        # (the exponent capped: left to grow, it overflowed a float after 1,024 rounds in a
        # row, three weeks of a symbol the provider refuses for good, and stopped the feed)
        delay_s = min(self._retry_s * 2 ** min(self._refills, 32), MAX_REFILL_S)
        self._refills += 1
        self._log.error(
            "backfill_failed",
            error=f"retries exhausted: {why}",
            failed=len(left),
            symbols=_some(left),
            asked_again_in_s=round(delay_s, 3),
            **window,
        )
        if self._tasks is not None:  # (else not running: the next start asks again)
            later = self._fill_later(delay_s, start, end, gaps, left)
            self._start(later, "backfill-later")

    def _failed(self, start: dt.datetime, gaps: list[dt.datetime], why: str) -> None:
        self._counters.inc("backfill_failures", feed=self._name)
        self.error = f"from {start:%Y-%m-%d %H:%M}Z, {why}"
        self._failed_gaps += gaps


def _some(symbols: list[str], most: int = 20) -> str:
    """The first `most` of `symbols`, for a log line ("A, B, ... and 12 more")."""
    more = f" and {len(symbols) - most} more" if len(symbols) > most else ""
    return ", ".join(symbols[:most]) + more


def _floor_minute(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)
