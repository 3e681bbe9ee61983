"""GapFill: the minutes a stream missed, fetched over REST and handed on until they are on disk.

A `WebSocketFeed` opens a gap when its data stops (a lost connection; after a restart, where
the data taken up ends) and closes it at its next subscription; this fills it. The minutes of
the gap are fetched from the provider's REST API (`RestBackfill`) and queued as minute bars,
which the engine upserts by symbol and start:

- the window starts a minute before the gap (its first minute may be part-built), no further
  back than the oldest session whose minutes the engine still takes (`keeps_from`), else
  `backfill_max_s`; it ends at the current minute, which the stream goes on building;
- the current minute, when the gap closes part-way through it (its tail: a reconnect at
  14:31:40 lacks the trades of 14:31:00 to 14:31:40), is fetched once it is over and
  `backfill_tail_delay_s` more (a provider publishes a minute's bar a few seconds after its
  end), for every symbol, and its bars handed on as the provider's: each replaces the bar the
  stream built of the minute (its volume counted once; a tick of the minute that comes after
  it merges into it, as into any provider bar). Until then the feed awaits the minute
  (`await_minute`): the daemon's close clock holds it open, bounded by `catch_up_hold_s`
  (`monitor.close_clock`), so that it closes once, whole, and a 1m rule evaluates the
  provider's bar, not the stream's part of it. It is owed as a failed window is (the store's
  `backfills_owed.json`, every symbol over that minute) until its bars are on disk, and a fetch
  that fails is one as any other backfill's (counted, said, asked for again);
- symbols whose requests failed are asked again, up to `backfill_attempts` times in all, the
  others' bars handed on at once; a 429's wait is honoured (up to `MAX_RETRY_AFTER_S`);
- a backfill whose attempts all fail is said (`error`, on /healthz, until every failed window
  is in or given up: not while one is asked for again, whatever other backfill ends first,
  and from the start for those owed at the last stop), its window owed for the
  symbols that failed only, and asked for again after `backfill_retry_s` (doubling, up to
  `MAX_REFILL_S`) while the connection stays up, and at the next subscription or start: then
  per symbol, the windows it lacks (`monitor.feeds.owed.plan`), not every symbol from the
  oldest failure;
- the minutes of a failed window older than the engine keeps (`reach`) are given up: counted
  (`backfill_given_up{reason="older_than_kept"}`), said once (`backfill_given_up`), no longer
  owed, and no longer an error on /healthz; so are those of an open gap that began before the
  reach, never asked for (`reason="gap_older_than_kept"`), if the part cut off held minutes of
  a session (`traded`);
- a symbol the provider refuses as a symbol (an unknown or delisted ticker: its request for it
  alone, Polygon's always, Alpaca's once a group refused for it is asked one symbol at a time,
  answered 400, 404 or 422; asked again, it would be refused again, so it is not) is given up
  when the same backfill's requests for other symbols are answered: its window counted
  (`backfill_given_up{reason="refused"}`), said once (`backfill_given_up`, with the provider's
  words), not owed (nor a window of it that failed otherwise in that backfill), no error on
  /healthz. It is left out of the feed's later backfills until the daemon restarts (each
  window it is left out of counted, not said again): asked at every reconnect, it would be
  refused again, and on Alpaca its group of 100 with it, then asked one symbol at a time.
  A refusal when no symbol is answered (every request refused: a wrong `rest_url`; or a
  backfill of that symbol only, a failed window of it asked for again) is a failure as any
  other: it may be the request the provider refuses, not the symbol;
- a gap is owed (`owe`) from when it opens until its bars are on disk (`settle`, acknowledged
  by the engine loop after the bars before it), so that one cut off by a stop is fetched at
  the next start (see `monitor.owed_backfills`);
- a delayed stream (its data ending well before it comes: Alpaca's delayed_sip, 15 minutes)
  owes, while it runs, from the minute its data ends in (`mark`), moved on once a minute
  once the engine loop has on disk the step that took that data in (a marker's ack), so
  that a kill -9 leaves owed the minutes it had not delivered. The start after one
  backfills from the newest data the daemon took in otherwise (`Intraday.resumed_from`): a
  real-time feed's, or the clock of the last save of the sessions under way, up to 15
  minutes past the stream's; those minutes, which the stream does not send again, were
  lost. A graceful stop owes what the stream is behind itself, and drops the mark (`unmark`).

Why apart from `monitor.feeds.websocket`: that module is the connection (handshake, frames,
reconnects); this is what happens after one, with its own bookkeeping of failed windows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import MonitorError
from monitor.feeds.owed import (
    GAP_OLDER_THAN_KEPT,
    GIVEN_UP,
    OLDER_THAN_KEPT,
    REFUSED,
    Owed,
    Request,
    floor_minute,
    plan,
)
from monitor.feeds.rest import RestBackfill
from monitor.feeds.wire import Wire

__all__ = ["MAX_REFILL_S", "MAX_RETRY_AFTER_S", "GapFill"]

MAX_RETRY_AFTER_S = 60.0  # the longest a backfill waits for a 429's Retry-After
MAX_REFILL_S = 1800.0  # the longest wait before a failed backfill is asked for again
# how often the wait for a tail's minute to be over looks at the clock (a simulated one jumps)
TAIL_POLL_S = 1.0
_MINUTE = dt.timedelta(minutes=1)
GIVEN_UP_WHY = {  # (backfill_given_up's reasons here: see `monitor.feeds.owed`)
    OLDER_THAN_KEPT: "older than the oldest session the engine keeps: it would reject them",
    GAP_OLDER_THAN_KEPT: "the gap began before the oldest session the engine keeps: its"
    " minutes before then are not fetched (the engine would reject them as late)",
    REFUSED: "the provider refuses the symbol (its request alone refused, the others'"
    " answered): not asked for again until the daemon restarts",
}


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
        self._rest = rest
        self._queue = queue
        self._deliver = deliver
        self._is_subscribed = is_subscribed
        self._clock = clock
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
        self._tail_delay = dt.timedelta(seconds=tail_delay_s)
        self._await_minute = await_minute
        self._tails: list[Owed] = []
        # Symbols the provider refused as symbols (`_run`): left out of every later backfill
        # of this feed (`_without_refused`), until the daemon restarts.
        self._refused: set[str] = set()
        for window in owed:
            self._owe_window(window)
        if rest is not None:  # (at 0 from the start: a rate of it needs the 0 before it)
            for reason in GIVEN_UP:
                counters.zero("backfill_given_up", feed=name, reason=reason)
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
        # (a delayed stream's, see `mark`: the minute last queued, and the gap owed for it)
        self._marking: dt.datetime | None = None
        self._marked: Owed | None = None

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
        """The minute a delayed stream's data ends in (None: it is not behind): owed as a
        gap, in place of the one before, once the engine loop acknowledges a marker queued
        after the data (on disk by then: a kill -9 loses none of it). A no-op unless it
        changed (once a minute at most), or when gaps are not owed in the store."""
        if behind == self._marking or self._owe is None or self._settle is None:
            return
        self._marking = behind
        await self._queue.put(Wire(self._name, [], ack=partial(self._owe_marked, behind)))

    def _owe_marked(self, behind: dt.datetime | None) -> None:
        """A marker's ack: owe from `behind` (the new gap first, then the old one settled:
        the store never owes less), unless a later mark was queued since, or the feed has
        stopped (`unmark`)."""
        if behind != self._marking or self._owe is None or self._settle is None:
            return
        old, self._marked = self._marked, Owed(behind) if behind is not None else None
        if self._marked is not None:
            self._owe(self._marked)
        if old is not None:
            self._settle([old])

    def unmark(self) -> None:
        """At a graceful stop, which owes what the stream is behind itself: the mark is no
        longer owed, nor one still queued."""
        self._marking = None
        self._owe_marked(None)

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
        it cancelled), and awaited by the daemon. None: `now` is a minute's start, or of no
        session (`traded`), or nothing is fetched."""
        minute = floor_minute(now)
        if minute == now or self._rest is None or self._tasks is None or not self._symbols:
            return None
        if self._traded is not None and not self._traded(minute, minute + _MINUTE):
            return None  # (a minute of no session: the engine takes none of its trades)
        tail = Owed(minute, minute + _MINUTE, tuple(self._symbols))
        if tail in self._tails:  # (a second reconnect in the minute: fetched once)
            return tail
        self._tails.append(tail)
        if self._owe is not None and tail not in owed:
            self._owe(tail)
        if self._await_minute is not None:
            self._await_minute(minute, True)
        self._start(self._fetch_tail(tail), "backfill-tail")
        return tail

    async def _fetch_tail(self, tail: Owed) -> None:
        """Fetch a tail's minute `backfill_tail_delay_s` after its end (by the feed's clock),
        hand its bars on, settle it once they are on disk (`_run`), and stop awaiting it once
        the step that took them in is done (a marker's ack: the minute closes in the next);
        cancelled (the feed stopped), it stays owed, fetched at the next subscription."""
        assert tail.end is not None and tail.symbols is not None
        due = tail.end + self._tail_delay
        released = False
        try:
            while (left_s := (due - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(left_s, TAIL_POLL_S))
            await self._run([Request(tail.start, tail.end, tail.symbols)], [tail])
            if self._await_minute is not None:
                done = partial(self._await_minute, tail.start, False)
                await self._queue.put(Wire(self._name, [], ack=done))
                released = True
        except asyncio.CancelledError:
            if tail not in self._reopened:
                self._reopened.append(tail)
            raise
        finally:
            self._tails.remove(tail)
            if self._await_minute is not None and not released:
                self._await_minute(tail.start, False)

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
            self._give_up(part, OLDER_THAN_KEPT, kept_from=kept_from)
        for part in todo.cut:
            if self._traded is None or self._traded(part.start, part.end):
                self._give_up(part, GAP_OLDER_THAN_KEPT, kept_from=kept_from)
        if self._rest is not None and self._tasks is not None and todo.requests:
            retried = [window for window in owed if window.end is not None]
            self._retrying += retried
            self._start(self._run(todo.requests, owed, retried), "backfill")
            return
        self._recovered()  # (what was given up is no error)
        if self._settle is not None:  # (nothing to fetch: within the minute, or too old)
            self._settle(owed)

    def _give_up(self, part: Request, reason: str, **said: str) -> None:
        """Minutes never fetched (again), counted and said with `said`: older than the engine
        keeps, a failed window's (`OLDER_THAN_KEPT`) or an open gap's before the reach
        (`GAP_OLDER_THAN_KEPT`); or of symbols the provider refuses (`REFUSED`)."""
        self._counters.inc("backfill_given_up", len(part.symbols), feed=self._name, reason=reason)
        self._log.warning(
            "backfill_given_up",
            reason=GIVEN_UP_WHY[reason],
            **said,
            failed=len(part.symbols),
            symbols=_some(list(part.symbols)),
            start=part.start.isoformat(),
            end=part.end.isoformat(),
        )

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
        self._log.info("backfill_asked_again", after_s=round(delay_s, 3), symbols=_some(symbols))
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
        refusals = _Refusals()
        try:
            for asked in requests:
                if (request := self._without_refused(asked)) is None:
                    continue
                if refused is not None:
                    failed.append((request, refused))
                    continue
                left, why, refused = await self._fetch_window(request, refusals)
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
            for part, why in refusals.alone:
                self._refused.update(part.symbols)
                self._give_up(part, REFUSED, error=why)
            # (their windows that failed otherwise, a 500 say: given up with them, not owed)
            failed = [(r, why) for asked, why in failed if (r := self._without_refused(asked))]
        else:  # (no symbol answered: a wrong URL, say, or a backfill of one symbol)
            failed += refusals.alone
        if failed:
            self._failed_requests(failed, ask_again=refused is None)
        else:
            self._recovered()
        if self._settle is not None:  # (once the engine loop has them on disk)
            await self._queue.put(Wire(self._name, [], ack=partial(self._settle, settles)))

    def _without_refused(self, request: Request) -> Request | None:
        """`request` without the symbols the provider refused before (None: it had no other),
        not asked for again: each one's window counted as given up (said once, when it was
        refused)."""
        symbols = tuple(s for s in request.symbols if s not in self._refused)
        if out := len(request.symbols) - len(symbols):
            self._counters.inc("backfill_given_up", out, feed=self._name, reason=REFUSED)
            return Request(request.start, request.end, symbols) if symbols else None
        return request

    async def _fetch_window(
        self, request: Request, refusals: _Refusals
    ) -> tuple[list[str], str, str | None]:
        """Fetch one request; symbols whose requests failed are asked again (the others'
        bars are handed on at once), up to `backfill_attempts` times in all, but for those
        refused each in a request of its own (in `refusals`: asked again, it would be refused
        again). The symbols that still failed, why, and why the credentials were refused
        (None: they were not)."""
        assert self._rest is not None
        start, end = request.start, request.end
        window = {"start": start.isoformat(), "end": end.isoformat()}
        left, why, asked_wait, one_by_one = list(request.symbols), "", 0.0, False
        for attempt in range(self._attempts):
            if attempt:  # (at least as long as a 429 asked, up to a minute)
                wait = min(asked_wait, MAX_RETRY_AFTER_S)
                await asyncio.sleep(max(self._backoff.delay(attempt - 1), wait))
            try:
                fetched = await self._rest.fetch(
                    left, start, end, feed=self._name, one_by_one=one_by_one
                )
            except MonitorError as exc:  # (refused credentials: asking again will not help)
                self._log.error("backfill_failed", error=str(exc), **window)
                return left, str(exc), str(exc)
            batch, failed, asked, refused, alone = fetched
            asked_wait = asked or 0.0
            one_by_one = bool(refused)  # (a group refused for one symbol: find which)
            bars = batch.minute_bars.height
            self._counters.inc("backfill_bars", bars, feed=self._name)
            got = len(left) - len(failed)
            refusals.answered = refusals.answered or got > 0
            self._log.info("feed_backfilled", bars=bars, symbols=got, **window)
            if bars or batch.rejections:
                await self._deliver(batch)
            if gone := [s for s in left if s in alone]:
                refusals.alone.append((Request(start, end, tuple(gone)), failed[gone[0]]))
                failed = {s: w for s, w in failed.items() if s not in alone}
            if not failed:
                return [], "", None
            left, why = list(failed), next(iter(failed.values()))
            self._log.warning(
                "backfill_retry",
                error=why,
                attempt=attempt + 1,
                failed=len(left),
                symbols=_some(left),
                **window,
            )
        return left, f"retries exhausted: {why}", None

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
                symbols=_some(list(request.symbols)),
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


@dataclass(slots=True)
class _Refusals:
    """One backfill's symbols refused each in a request of its own (400, 404, 422), by
    window, with the provider's words (the first's); and whether any symbol's request was
    answered: then the provider takes the request, and refuses those symbols (a wrong URL is
    refused for every symbol)."""

    answered: bool = False
    alone: list[tuple[Request, str]] = field(default_factory=list)


def _error(first: Request, why: str, more: int) -> str:
    """A backfill's error, for /healthz: the first failed window, its symbols, why, and how
    many more windows failed."""
    n = len(first.symbols)
    windows = f" (and {more} more windows)" if more else ""
    return (
        f"from {first.start:%Y-%m-%d %H:%M}Z, {n} symbol{'s' if n > 1 else ''}"
        f" ({_some(list(first.symbols), 5)}): {why}{windows}"
    )


def _some(symbols: list[str], most: int = 20) -> str:
    """The first `most` of `symbols`, for a log line ("A, B, ... and 12 more")."""
    more = f" and {len(symbols) - most} more" if len(symbols) > most else ""
    return ", ".join(symbols[:most]) + more
