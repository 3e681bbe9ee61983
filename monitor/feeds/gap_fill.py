"""GapFill: the minutes a stream missed, fetched over REST and handed on until they are on disk.

A `WebSocketFeed` opens a gap when its data stops (a lost connection; after a restart, where
the data taken up ends) and closes it at its next subscription; this fills it. The minutes of
the gap are fetched from the provider's REST API (`RestBackfill`) and queued as minute bars,
which the engine upserts by symbol and start:

- the window starts a minute before the gap (its first minute may be part-built), no further
  back than the oldest session whose minutes the engine still takes (`keeps_from`), else
  `backfill_max_s`; it ends at the current minute, which the stream goes on building;
- the current minute, when the gap closes part-way through it (its tail), is fetched once it
  is over, for every symbol, the daemon's close of it held meanwhile, and owed until its bars
  are on disk (`monitor.feeds.tail_minutes`);
- symbols whose requests failed are asked again, up to `backfill_attempts` times in all, the
  others' bars handed on at once; a 429's wait is honoured (`monitor.feeds.window_fetch`);
- a backfill whose attempts all fail is said (`error`, on /healthz, until every failed window
  is in or given up: not while one is asked for again, whatever other backfill ends first,
  and from the start for those owed at the last stop), its window owed for the
  symbols that failed only, and asked for again after `backfill_retry_s` (doubling, up to
  `MAX_REFILL_S`) while the connection stays up, and at the next subscription or start: then
  per symbol, the windows it lacks (`monitor.feeds.owed.plan`), not every symbol from the
  oldest failure;
- the minutes of a failed window older than the engine keeps (`reach`) are given up (counted,
  said once, no longer owed, no error on /healthz); so are those of an open gap that began
  before the reach, never asked for, and a symbol the provider refuses as a symbol (its
  request alone answered 400, 404 or 422 while the same backfill's requests for other symbols
  are answered), left out of the feed's later backfills until the daemon restarts
  (`monitor.feeds.given_up`);
- a gap is owed (`owe`) from when it opens until its bars are on disk (`settle`, acknowledged
  by the engine loop after the bars before it), so that one cut off by a stop is fetched at
  the next start (see `monitor.owed_backfills`);
- a delayed stream (its data ending well before it comes: Alpaca's delayed_sip, 15 minutes)
  owes, while it runs, from the minute its data ends in (`mark`), so that a kill -9 leaves
  owed the minutes it had not delivered (`monitor.feeds.delay_mark`).

Why apart from `monitor.feeds.websocket`: that module is the connection (handshake, frames,
reconnects); this is what happens after one, with its own bookkeeping of failed windows. A
request's attempts, the tail minutes, what is given up (and the refused symbols) and the
delayed stream's mark are objects of their own (`WindowFetch`, `TailMinutes`, `GivenUp`,
`DelayMark`) that `GapFill` owns and drives.
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
from monitor.feeds.delay_mark import DelayMark
from monitor.feeds.given_up import GivenUp, Refusals
from monitor.feeds.owed import GAP_OLDER_THAN_KEPT, OLDER_THAN_KEPT, Owed, Request, plan, some
from monitor.feeds.rest import RestBackfill
from monitor.feeds.tail_minutes import TailMinutes
from monitor.feeds.window_fetch import MAX_RETRY_AFTER_S, WindowFetch
from monitor.feeds.wire import Wire

__all__ = ["MAX_REFILL_S", "MAX_RETRY_AFTER_S", "GapFill"]

MAX_REFILL_S = 1800.0  # the longest wait before a failed backfill is asked for again


class GapFill:
    """The REST backfills of one feed's gaps, run in the feed's task group (`bind`).

    Counters (label `feed`): backfill_bars, backfill_failures, backfill_given_up{reason}.
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
        clock: Callable[[], dt.datetime],
        counters: Counters,
        backoff: Backoff,
        log: Any,
        max_s: float,
        attempts: int,
        retry_s: float,
        keeps_from: Callable[[dt.datetime], dt.datetime | None] | None,
        owe: Callable[[Owed], None] | None,
        settle: Callable[[list[Owed]], None] | None,
        owed: Sequence[Owed] = (),
        traded: Callable[[dt.datetime, dt.datetime], bool] | None = None,
        tail_delay_s: float = 5.0,
        await_minute: Callable[[dt.datetime, bool], None] | None = None,
    ) -> None:
        self._name = name
        self._symbols = list(symbols)
        self._queue = queue
        self._is_subscribed = is_subscribed
        self._clock = clock
        self._counters = counters
        self._log = log
        self._max = dt.timedelta(seconds=max_s)
        # (None: no REST API to ask, `rest_url` unset)
        self._windows = (
            WindowFetch(
                name,
                rest,
                deliver=deliver,
                counters=counters,
                backoff=backoff,
                log=log,
                attempts=attempts,
            )
            if rest is not None
            else None
        )
        # A backfill whose attempts all failed is asked for again after retry_s, doubling
        # with each round that fails in a row, up to MAX_REFILL_S.
        self._retry_s = retry_s
        self._refills = 0
        self._keeps_from = keeps_from
        # whether [start, end) holds minutes of a session (None: take it that it does): an
        # open gap's part before the reach is given up (counted, said) only if it held any
        # (a daemon stopped after a close and back two sessions later lost no minutes of the
        # night before the reach)
        self._traded = traded
        self._owe = owe if rest is not None else None
        self._settle = settle
        # The windows of backfills that failed, with the symbols that failed (and why:
        # /healthz shows it): asked for again at the next subscription (and, owed in the
        # store, at the next start); `owed`: those the store held at this start.
        self._failed: list[Owed] = []
        # Failed windows taken into a backfill under way: still an error (/healthz) until it
        # ends, whatever other backfill ends first (one used to clear the error while the
        # failed window was still being asked for); back among the failed if it is cancelled.
        self._retrying: list[Owed] = []
        # Open gaps whose backfill was cancelled (the feed crashed and is run again): filled
        # at the next subscription, as they stay owed in the store.
        self._reopened: list[Owed] = []
        # The minutes gaps closed part-way through (their tails), waiting to be over to be
        # fetched; the daemon awaits each (`await_minute`: its close is held) meanwhile.
        self._tails = TailMinutes(
            name,
            queue=queue,
            clock=clock,
            traded=traded,
            delay_s=tail_delay_s,
            await_minute=await_minute,
        )
        for window in owed:
            self._owe_window(window)
        # What is never fetched (again), and the symbols the provider refused as symbols
        # (`_run`): left out of every later backfill of this feed, until the daemon restarts.
        self._given_up = GivenUp(name, counters, log, counting=rest is not None)
        # (windows owed from before this start: an error, as they were at the stop, until
        # fetched; /healthz used to be healthy meanwhile, though they were not in yet)
        self.error: str | None = None
        if self._failed:
            first = min(self._failed, key=lambda w: w.start)
            self.error = _error(
                Request(first.start, first.end or first.start, first.symbols or ()),
                "failed before this start, asked for again at the first subscription",
                len(self._failed) - 1,
            )
        self._tasks: asyncio.TaskGroup | None = None
        self.pending: set[asyncio.Task[None]] = set()  # backfills running or waiting to
        self._mark = DelayMark(name, queue, self._owe, settle)  # (a delayed stream's)

    def __repr__(self) -> str:
        return f"GapFill({self._name!r}, {len(self._failed)} failed windows)"

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
            self._owe(Owed(since))

    async def mark(self, behind: dt.datetime | None) -> None:
        """The minute a delayed stream's data ends in (None: it is not behind): owed in place
        of the one before once on disk (`DelayMark.mark`)."""
        await self._mark.mark(behind)

    def unmark(self) -> None:
        """At a graceful stop: the mark is no longer owed (`DelayMark.unmark`)."""
        self._mark.unmark()

    def fill(self, gap_start: dt.datetime | None, now: dt.datetime) -> None:
        """Backfill, in a task, the gap just closed (from `gap_start`, every symbol), those
        whose backfill was cancelled, and the windows of backfills that failed (their symbols
        only): per symbol, what it lacks."""
        opened = [] if gap_start is None else [Owed(gap_start)]
        owed = [*opened, *self._reopened, *self._failed]
        if not owed:
            return
        self._failed, self._reopened = [], []
        if any(window.end is None for window in owed):  # (a gap closes now: its tail)
            tail = self._tail(now, owed)
            owed = [window for window in owed if window != tail]
        if owed:
            self._run_plan(owed, now)

    def _tail(self, now: dt.datetime, owed: list[Owed]) -> Owed | None:
        """The minute of `now`, when a gap closes part-way through it: fetched once it is over
        (every symbol), in a task, owed meanwhile (unless `owed` holds it already: a fetch of
        it cancelled), and awaited by the daemon (`TailMinutes`). None: `now` is a minute's
        start, or of no session (`traded`), or nothing is fetched."""
        if self._windows is None or self._tasks is None:
            return None
        tail = self._tails.of(now, self._symbols)
        if tail is None or tail in self._tails:  # (a second reconnect in the minute: once)
            return tail
        if self._owe is not None and tail not in owed:
            self._owe(tail)
        self._tails.hold(tail)
        self._start(self._fetch_tail(tail), "backfill-tail")
        return tail

    async def _fetch_tail(self, tail: Owed) -> None:
        """Fetch a tail's minute once it is over (`TailMinutes.fetch`), hand its bars on and
        settle it once they are on disk (`_run`); cancelled (the feed stopped), it stays owed,
        fetched at the next subscription."""
        assert tail.end is not None and tail.symbols is not None
        request = Request(tail.start, tail.end, tail.symbols)
        try:
            await self._tails.fetch(tail, partial(self._run, [request], [tail]))
        except asyncio.CancelledError:
            if tail not in self._reopened:
                self._reopened.append(tail)
            raise

    def reach(self, now: dt.datetime) -> dt.datetime:
        """How far back a backfill at `now` goes at most: to the open of the oldest session
        whose minutes the engine still takes (`keeps_from`; older ones it rejects as late),
        else `backfill_max_s`. A feed down through the close and back the next morning then
        fetches the afternoon it missed, whose session bars wait for it (see
        `monitor.core.closed_minutes`)."""
        kept = self._keeps_from(now) if self._keeps_from is not None else None
        return kept if kept is not None else now - self._max

    def _run_plan(self, owed: list[Owed], now: dt.datetime) -> None:
        """Fetch, in a task, what `owed` lacks from the reach on; what is older is given up.
        `owed` is settled once the requests' bars are on disk (what failed owed anew)."""
        reach = self.reach(now)
        todo = plan(owed, self._symbols, now, reach)
        kept_from = reach.isoformat()
        for part in todo.given_up:
            self._given_up.give_up(part, OLDER_THAN_KEPT, kept_from=kept_from)
        for part in todo.cut:
            if self._traded is None or self._traded(part.start, part.end):
                self._given_up.give_up(part, GAP_OLDER_THAN_KEPT, kept_from=kept_from)
        if self._windows is not None and self._tasks is not None and todo.requests:
            retried = [window for window in owed if window.end is not None]
            self._retrying += retried
            self._start(self._run(todo.requests, owed, retried), "backfill")
            return
        self._recovered()  # (what was given up is no error)
        if self._settle is not None:  # (nothing to fetch: within the minute, or too old)
            self._settle(owed)

    def _start(self, work: Coroutine[object, object, None], what: str) -> None:
        """Run `work` in the feed's task group (a backfill, or the wait before one), cancelled
        at the stop."""
        assert self._tasks is not None
        task = self._tasks.create_task(work, name=f"feed-{self._name}-{what}")
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _fill_later(self, delay_s: float, failed: list[Owed]) -> None:
        """After `delay_s`, fetch again the windows of a backfill that failed, for the symbols
        that failed only, if the feed is still subscribed (else its next subscription does)
        and nothing took them meanwhile (a reconnect's backfill); those older than the engine
        keeps by then are given up."""
        await asyncio.sleep(delay_s)
        if not self._is_subscribed() or any(window not in self._failed for window in failed):
            return
        for window in failed:
            self._failed.remove(window)
        symbols = sorted({s for window in failed for s in window.symbols or ()})
        self._log.info("backfill_asked_again", after_s=round(delay_s, 3), symbols=some(symbols))
        self._run_plan(failed, self._clock())

    async def fetch(
        self,
        start: dt.datetime,
        end: dt.datetime,
        gaps: list[Owed] | None = None,
        symbols: list[str] | None = None,
    ) -> None:
        """Fetch [start, end) of `symbols` (None: every one) and hand it on, as `_run` does;
        `gaps`: what it fills (settled once on disk)."""
        await self._run([Request(start, end, tuple(symbols or self._symbols))], gaps or [])

    async def _run(
        self, requests: list[Request], settles: list[Owed], retried: Sequence[Owed] = ()
    ) -> None:
        """Fetch each request in turn and hand its bars on; the symbols of one that failed
        are owed over its window (asked for again later), and `settles` (what the requests
        fill) is settled once the bars are on disk. `retried`: the failed windows among
        `settles` (an error until this ends; failed again if it is cancelled)."""
        failed: list[tuple[Request, str]] = []
        refused: str | None = None  # (credentials refused: the other requests would be too)
        refusals = Refusals()
        try:
            for asked in requests:
                if (request := self._given_up.without(asked)) is None:
                    continue
                if refused is not None:
                    failed.append((request, refused))
                    continue
                assert self._windows is not None
                left, why, refused = await self._windows.fetch(request, refusals)
                if left:
                    failed.append((Request(request.start, request.end, tuple(left)), why))
        except asyncio.CancelledError:  # (the feed stopped: asked for at its next subscription)
            self._failed += [window for window in retried if window in self._retrying]
            self._reopened += [gap for gap in settles if gap.end is None]
            raise
        finally:
            for window in retried:
                if window in self._retrying:
                    self._retrying.remove(window)
        if refusals.answered:  # (the provider takes the request: it refuses those symbols)
            self._given_up.refuse(refusals.alone)
            # (their windows that failed otherwise, a 500 say: given up with them, not owed)
            failed = [(r, why) for asked, why in failed if (r := self._given_up.without(asked))]
        else:  # (no symbol answered: a wrong URL, say, or a backfill of one symbol)
            failed += refusals.alone
        if failed:
            self._failed_requests(failed, ask_again=refused is None)
        else:
            self._recovered()
        if self._settle is not None:  # (once the engine loop has them on disk)
            await self._queue.put(Wire(self._name, [], ack=partial(self._settle, settles)))

    def _failed_requests(self, failed: list[tuple[Request, str]], ask_again: bool) -> None:
        """Owe the windows that failed (their symbols only), say why (/healthz) and, unless
        the credentials were refused, ask for them again while the connection stays up."""
        self._counters.inc("backfill_failures", feed=self._name)
        windows = [Owed(r.start, r.end, r.symbols) for r, _ in failed]
        for window in windows:
            self._owe_window(window)
        first, why = failed[0]
        self.error = _error(first, why.removeprefix("retries exhausted: "), len(failed) - 1)
        if not ask_again:
            return
        # Asked for again while the connection stays up, not only at its next loss: a REST
        # API down for a minute would otherwise leave the gap (and the session bars that wait
        # for it) until the next reconnect or start, hours later.
        # (the exponent capped: left to grow, it overflowed a float after 1,024 rounds in a
        # row, three weeks of a symbol the provider refuses for good, and stopped the feed)
        delay_s = min(self._retry_s * 2 ** min(self._refills, 32), MAX_REFILL_S)
        self._refills += 1
        for request, why in failed:
            self._log.error(
                "backfill_failed",
                error=why,
                failed=len(request.symbols),
                symbols=some(request.symbols),
                asked_again_in_s=round(delay_s, 3),
                start=request.start.isoformat(),
                end=request.end.isoformat(),
            )
        if self._tasks is not None:  # (else not running: the next start asks again)
            self._start(self._fill_later(delay_s, windows), "backfill-later")

    def _recovered(self) -> None:
        """No error any more (/healthz), and the next failure's retry waits the least, unless
        another backfill failed since (its windows still owed) or is asking for failed
        windows again."""
        if not self._failed and not self._retrying:
            self.error = None
            self._refills = 0

    def _owe_window(self, window: Owed) -> None:
        """A failed window (its symbols): owed, here and in the store, until fetched."""
        self._failed.append(window)
        if self._owe is not None:
            self._owe(window)


def _error(first: Request, why: str, more: int) -> str:
    """A backfill's error, for /healthz: the first failed window, its symbols, why, and how
    many more windows failed."""
    n = len(first.symbols)
    windows = f" (and {more} more windows)" if more else ""
    return (
        f"from {first.start:%Y-%m-%d %H:%M}Z, {n} symbol{'s' if n > 1 else ''}"
        f" ({some(first.symbols, 5)}): {why}{windows}"
    )
