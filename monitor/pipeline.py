"""The engine loop: micro-batches from the feed queue into the engine, alerts out.

Feeds put `FeedBatch`es (already decoded) or `Wire`s (raw messages, decoded here, many at once)
on one bounded queue. The loop takes what is there, up to `batch_max_rows` messages or
`batch_max_age_ms` after the first, decodes, ingests, advances the engine to `clock.now()` (its
minutes close by the close clock, held back while a feed catches up on a backlog: see
`monitor.close_clock`), hands the alerts to the sinks, passes what the engine took in to
`on_batch` (the daemon's journal) and then calls each Wire's `ack` (the feed acknowledges and
reads on); when the journal could not be written (a full disk: `on_batch` says False), the acks
wait until a later step writes it.
A Wire is claimed before it is decoded: one its feed has withdrawn (at shutdown, past the grace
period) is left alone, neither processed nor acknowledged, and the broker delivers it again.
With nothing arriving it still advances once a second, so bars close on the clock. Steps that
evaluate rules over the history run in a worker thread so the event loop keeps reading; the many
small steps of ticks and minute bars run inline. A change of the engine's rules (`engine_change`,
the daemon's SIGHUP) is made in the worker thread at the start of a step, between two batches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence

import polars as pl

from monitor import logs
from monitor.clock import Clock
from monitor.close_clock import HOLD_MAX_S, CloseClock
from monitor.core.clock_queue import FUTURE_SKEW
from monitor.core.counters import Counters
from monitor.core.engine import Engine, Step
from monitor.core.model import Alert, FeedBatch, Rejection
from monitor.feeds.generic import RAW_LIMIT, merge
from monitor.feeds.rejections import RejectionLog
from monitor.feeds.wire import Wire

BatchDecoder = Callable[[list[bytes]], FeedBatch]
AlertSink = Callable[[Sequence[Alert]], None]
IDLE_ADVANCE_S = 1.0
STOPPING_IDLE_S = 0.05  # stopping: the feeds finish their drain, the loop is soon to end
MINUTE = dt.timedelta(minutes=1)
POLL_S = 0.005
LOG_EVERY_S = 10.0


class Pipeline:
    """Owns the engine while the daemon runs; only this task touches it."""

    def __init__(
        self,
        engine: Engine,
        queue: asyncio.Queue[FeedBatch | Wire],
        *,
        clock: Clock,
        counters: Counters,
        sinks: Sequence[AlertSink],
        decoders: dict[str, BatchDecoder],
        batch_max_rows: int = 50_000,
        batch_max_age_ms: float = 25.0,
        on_step: Callable[[Step], Awaitable[None] | None] | None = None,
        on_batch: Callable[[FeedBatch, list[str]], bool | None] | None = None,
        side_alerts: Callable[[], list[Alert]] | None = None,
        status_changes: Callable[[], list[tuple[str, bool, dt.datetime]]] | None = None,
        engine_change: Callable[[], Callable[[], None] | None] | None = None,
        catch_up_hold_s: float = HOLD_MAX_S,
        feeds_ready: Callable[[], bool] | None = None,
        feeds_down: Callable[[], frozenset[str]] | None = None,
        feeds_awaiting: Callable[[], Mapping[str, dt.datetime]] | None = None,
        start_hold: bool = True,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.clock = clock
        self.counters = counters
        self.sinks = list(sinks)
        self.decoders = decoders
        self.batch_max_rows = batch_max_rows
        self.batch_max_age_s = batch_max_age_ms / 1000.0
        self.on_step = on_step
        self.on_batch = on_batch
        # Acknowledgements of messages whose step the journal could not write (a full disk):
        # given once it writes them (each step tries again, idle steps too).
        self._held_acks: list[Callable[[], object]] = []
        self._behind = False  # (the journal has records to write: see `_process`)
        self.side_alerts = side_alerts
        self.status_changes = status_changes
        self.engine_change = engine_change
        self.last_step_at: float = time.monotonic()
        self._log = logs.get("pipeline")
        self.close_clock = CloseClock(hold_max_s=catch_up_hold_s, log=self._log)
        self.start_hold = start_hold  # (see `_start_close_clock`)
        # (a start's: a broker's backlog comes once its feed has connected, see `starting`)
        self.close_clock.starting(self._start_close_clock(), time.monotonic())
        # (whether every feed has subscribed: None, at once)
        self.feeds_ready = feeds_ready if feeds_ready is not None else lambda: True
        # (the feeds that lost their connection and are not back yet: see `monitor.close_clock`)
        self.feeds_down = feeds_down if feeds_down is not None else frozenset
        # (by feed, the earliest minute it awaits the provider's bar of: a WebSocket feed back
        # part-way through it; see `monitor.close_clock`)
        self.feeds_awaiting = feeds_awaiting if feeds_awaiting is not None else dict
        self._rejections = RejectionLog(
            self._log, counters, counter="rejections", interval_s=log_every_s, clock=time.monotonic
        )
        self._log_every_s = log_every_s  # (rejections and corrections: a line a reason at most)
        counters.describe(
            "ticks_in",
            "Ticks decoded from the feeds' messages (a message refused as it is decoded counts"
            " in rejections only)",
        )
        counters.describe(
            "cancels_in", "Trade cancels, errors and corrections received from the feeds"
        )
        counters.describe(
            "feed_lag_seconds",
            "Clock minus the newest accepted tick's timestamp (or minute bar's end) yet: it grows"
            " while nothing arrives",
        )
        counters.describe("rejections", "Input rejected, by reason")
        counters.describe(
            "close_clock_behind_seconds",
            "How far the clock minutes close by is behind the wall clock: held while a feed"
            " catches up on a backlog (0: not held)",
        )
        counters.describe("alerts_fired", "Alerts fired by the engine, by rule")
        counters.describe(
            "bar_events", "Bar builder events: late ticks corrected, bars replaced, ... by kind"
        )
        self._book_counts: dict[str, int] = {}
        # session -> how many symbols' session bars are held back as cut short (/healthz):
        # taken from the engine after the steps that hold, release or refuse some
        self.held: dict[dt.date, int] = {}
        self._newest: dt.datetime | None = None  # the newest accepted tick or minute bar's end
        self._unsaid_corrections = 0  # (see `_corrected`)
        self._corrections_said_at = -log_every_s

    def _start_close_clock(self) -> dt.datetime | None:
        """Where the close clock starts: the one restored (the saved state's, or where the
        journal's data end), else, at a first start with nothing saved, the close of the last
        session closed when the engine was warmed: no minute after it is closed yet, so a
        broker's backlog of the session under way (a persistent session made by an earlier
        run) taken in after a few idle steps does not come late. It holds there until a feed
        delivers or every feed has subscribed and is quiet (`CloseClock.starting`); the book,
        empty, holds nothing it could close meanwhile, and what the engine evaluated at the
        warm-up (sessions closed by then) stays closed. (A book given bars before its first
        step, as tests do, closes them by the wall clock, as before.) None, no start's hold,
        without `start_hold`: replay feeds alone have no broker's backlog, and one of session
        bars only, which end no hold, streamed in less than the 2 s of quiet that would
        (`exit_when_done`), stopped the daemon with no session after the hold's closed."""
        book = self.engine.book
        if not self.start_hold:
            return None
        if book.closes_at is not None or not book.holds_nothing:
            return book.closes_at
        last = book.sessions.last_closed(self.engine.now or self.clock.now())
        return book.sessions.close_of(last) if last is not None else None

    async def run(self, stop: asyncio.Event, feeds_done: asyncio.Event) -> None:
        """Process batches until `stop` is set and the feeds have stopped, then drain the queue."""
        while True:
            items = await self._collect(stop, feeds_done)
            await self._process(items)
            if stop.is_set() and feeds_done.is_set() and self.queue.empty():
                break
        self._rejections.flush()
        self._corrected(0, now=True)

    async def _collect(
        self, stop: asyncio.Event, feeds_done: asyncio.Event
    ) -> list[FeedBatch | Wire]:
        items: list[FeedBatch | Wire] = []
        queue = self.queue
        if queue.empty() and not (stop.is_set() and feeds_done.is_set()):
            idle_s = STOPPING_IDLE_S if stop.is_set() else IDLE_ADVANCE_S
            try:
                items.append(await asyncio.wait_for(queue.get(), idle_s))
            except TimeoutError:
                return items
        deadline = time.monotonic() + self.batch_max_age_s
        messages = sum(_messages(item) for item in items)
        while messages < self.batch_max_rows:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0 or (stop.is_set() and feeds_done.is_set()):
                    break
                # Let the feeds fill the queue for a moment: cheaper than a waiter per message.
                await asyncio.sleep(min(left, POLL_S))
            else:
                items.append(item)
                messages += _messages(item)
        self.counters.set("queue_depth", queue.qsize())
        return items

    async def _process(self, items: list[FeedBatch | Wire]) -> None:
        items = [item for item in items if _claimed(item)]
        batch, parts = self._decode(items)
        now = self.clock.now()
        close_at, fed = self._close_at(parts, now)
        # (a change of the engine's rules evaluates them over the history, in the thread too)
        change = self.engine_change() if self.engine_change is not None else None
        if change is not None or self.engine.evaluates(now, batch, close_at):
            # Rules over the whole history can take seconds: keep the loop (feeds, HTTP) going.
            step, rejections = await asyncio.to_thread(self._step, batch, now, change, close_at)
        else:
            # Ticks and minute bars: a few polars calls, faster inline than across threads
            # (a worker thread would wait for the GIL the feed readers hold).
            step, rejections = self._step(batch, now, None, close_at)
        self.last_step_at = time.monotonic()
        closes_at = self.engine.closes_at
        behind = (now - closes_at).total_seconds() if closes_at is not None else 0.0
        self.counters.set("close_clock_behind_seconds", max(behind, 0.0))
        self._count(batch, rejections, _logged_by_feeds(items))
        # (idle steps too: the rest of a burst of rejections or corrections is said within
        # LOG_EVERY_S, not only when more come)
        self._rejections.flush_due()
        self._corrected(0)
        newest = _newest_accepted(batch, rejections) if batch is not None else None
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest
        if self._newest is not None:  # (each step: it grows while nothing arrives)
            self.counters.set("feed_lag_seconds", (now - self._newest).total_seconds())
        if self.side_alerts is not None:
            step.alerts.extend(self.side_alerts())
        if step.alerts:
            for rule in {a.rule for a in step.alerts}:
                n = sum(a.rule == rule for a in step.alerts)
                self.counters.inc("alerts_fired", n, rule=rule)
            for sink in self.sinks:
                sink(step.alerts)
        if step.minute_bars.height:
            self.counters.inc("bars_closed", step.minute_bars.height, timeframe="1m")
        if step.daily_bars.height:
            self.counters.inc("bars_closed", step.daily_bars.height, timeframe="1d")
        accepted = self.engine.take_accepted()
        durable = True
        if self.on_batch is not None and (accepted.size() or step.alerts or self._behind):
            # (the journal: what the engine took in, on disk before the messages are acked,
            # and the alerts it emitted; False: not written, the acks wait, see `_held_acks`,
            # and every step, idle ones too, has the journal try again)
            durable = self.on_batch(accepted, [a.id for a in step.alerts]) is not False
            self._behind = not durable
        if self.on_step is not None:
            saving = self.on_step(step)
            if saving is not None:  # (files written in a thread, before the messages' acks)
                await saving
        acks = [item.ack for item in items if isinstance(item, Wire) and item.ack is not None]
        if not durable:
            self._held_acks += acks
        else:
            acks, self._held_acks = self._held_acks + acks, []
            for ack in acks:
                ack()
        done = time.monotonic()
        for feed in fed:  # (its next delivery comes after this step's acks: quiet from here)
            self.close_clock.delivered(feed, done)

    def _close_at(
        self, parts: list[FeedBatch], now: dt.datetime
    ) -> tuple[dt.datetime | None, set[str]]:
        """The close clock of a step at `now` that takes in `parts` (see
        `monitor.close_clock`): each feed's newest data noted (a row from the future says
        nothing of how far behind its feed is), then where the catching-up feeds hold it;
        and the feeds that delivered data."""
        latest, at = now + FUTURE_SKEW, time.monotonic()
        if self.feeds_ready():
            self.close_clock.ready(at)
        fed: set[str] = set()
        for part in parts:
            newest = part.data_end(by=latest)
            if newest is not None:
                self.close_clock.delivered(part.feed, at, newest)
                fed.add(part.feed)
        book = self.engine.book
        down, awaiting = self.feeds_down(), self.feeds_awaiting()
        close_at = self.close_clock.close_at(
            now, at, book.close_delay, book.closes_at, down, awaiting, closes=book.minute_closes_at
        )
        return close_at, fed

    def _step(
        self,
        batch: FeedBatch | None,
        now: dt.datetime,
        change: Callable[[], None] | None = None,
        close_at: dt.datetime | None = None,
    ) -> tuple[Step, list[Rejection]]:
        if change is not None:
            change()
        if self.status_changes is not None:
            for symbol, halted, at in self.status_changes():
                self.engine.set_halted(symbol, halted, at)
        # (`now`: a session bar of a session not opened by then is `future_bar`)
        rejections = self.engine.ingest(batch, now=now) if batch is not None else []
        # (it may reject provider bars from the future; minutes close by `close_at`)
        step = self.engine.advance(now, close_at=close_at)
        return step, rejections + step.rejections

    def _decode(self, items: list[FeedBatch | Wire]) -> tuple[FeedBatch | None, list[FeedBatch]]:
        """The batch of a step's `items`, and the feeds' batches it was merged from."""
        if not items:
            return None, []
        batches: list[FeedBatch] = []
        raw: dict[str, list[bytes]] = defaultdict(list)
        for item in items:
            if isinstance(item, Wire):
                if item.payloads:  # (none: a marker, only to be acknowledged once on disk)
                    raw[item.feed].extend(item.payloads)
            else:
                batches.append(item)
        for feed, payloads in raw.items():
            batches.append(self._decoded(feed, payloads))
        return merge(batches, "pipeline"), batches

    def _decoded(self, feed: str, payloads: list[bytes]) -> FeedBatch:
        """`feed`'s decoder over `payloads`. A decoder never raises on bad input; should one
        still (a message nobody foresaw), its messages are rejected (`decode_error`, counted
        and logged with the error) and the daemon goes on: a message that crashed it would be
        delivered again at every start, for ever."""
        try:
            return self.decoders[feed](payloads)
        except Exception as exc:  # (any error: the messages, not the daemon)
            self._log.error(
                "decode_failed", feed=feed, messages=len(payloads), error=repr(exc)[:RAW_LIMIT]
            )
            batch = FeedBatch.empty(feed)
            batch.rejections = [
                Rejection("decode_error", raw=bytes(p[:RAW_LIMIT]).decode("utf-8", "replace"))
                for p in payloads
            ]
            return batch

    def _count(
        self, batch: FeedBatch | None, rejections: list[Rejection], logged: set[int]
    ) -> None:
        """Count what a step took in and refused (`logged`: the ids of rejections a feed has
        logged already, counted here without a second line)."""
        if batch is not None:
            if batch.ticks.height:
                self.counters.inc("ticks_in", batch.ticks.height)
            if batch.cancels.height:
                self.counters.inc("cancels_in", batch.cancels.height)
            if batch.minute_bars.height:
                self.counters.inc("bars_in", batch.minute_bars.height, timeframe="1m")
            if batch.daily_bars.height:
                self.counters.inc("bars_in", batch.daily_bars.height, timeframe="1d")
        if logged:
            self._rejections.record([r for r in rejections if id(r) in logged], log=False)
            rejections = [r for r in rejections if id(r) not in logged]
        refused = [r for r in rejections if r.reason == "session_cut_short"]
        if refused:  # (counted; said in a line of their own, each with why)
            self._rejections.record(refused, log=False)
            rejections = [r for r in rejections if r.reason != "session_cut_short"]
            self._refused(refused)
        self._rejections.record(rejections)
        for reset in self.engine.take_price_resets():
            self.counters.inc("price_reference_resets")
            self._log.warning(
                "price_reference_reset",
                symbol=reset.symbol,
                old=reset.old,
                new=reset.new,
                prints=reset.prints,
                note="prints this far from the last price kept coming: taken as the new level",
            )
        changed = bool(refused)
        newly_held = 0
        for kind, n in self.engine.book_counts().items():
            new = n - self._book_counts.get(kind, 0)
            if new > 0:
                self.counters.inc("bar_events", new, kind=kind)
                self._book_counts[kind] = n
                if kind == "daily_bar_corrected":
                    self._corrected(new)
                newly_held += new if kind == "session_held" else 0
                changed |= kind in ("session_held", "session_released")
        if changed:
            held = self.engine.held()
            self.held = {day: len(bars) for day, bars in held.items()}
            if newly_held:
                self._held(newly_held, held)

    def _held(self, new: int, held: dict[dt.date, dict[str, str]]) -> None:
        """Say that session bars were held back at the close as cut short: which, and why
        (a line per session of `held` holding some)."""
        for session, bars in sorted(held.items()):
            symbols = sorted(bars)
            self._log.warning(
                "session_bars_held",
                new=new,
                session=session.isoformat(),
                held=len(symbols),
                symbols=symbols[:SHOWN],
                example=bars[symbols[0]],
                note="their minutes end long before the close though they traded often (a "
                "feed down through the close?): the session bars wait for minutes that make "
                "them whole (a feed's backfill), and are refused (session_cut_short) if none "
                "come before the session is no longer kept",
            )

    def _refused(self, refused: list[Rejection]) -> None:
        """Say which held session bars were refused (`session_cut_short`), with why."""
        symbols = sorted({r.symbol or "" for r in refused})
        self._log.warning(
            "session_bars_refused",
            bars=len(refused),
            symbols=symbols[:SHOWN],
            example=refused[0].raw,
            note="held back as cut short, and no later minutes made them whole: those "
            "sessions are missing from the symbols' histories (a daily `backfill` of the "
            "provider's bars, with the daemon stopped, fills them)",
        )

    def _corrected(self, new: int, *, now: bool = False) -> None:
        """Say (at most every LOG_EVERY_S) that session bars came for periods already evaluated:
        stored as corrections, they fire nothing, so a feed that sends bars late or out of
        order loses alerts it would have made, and the log should tell. Called with 0 at every
        step: those of a burst not said yet are said once LOG_EVERY_S has passed (`now`: at
        once, at the stop)."""
        self._unsaid_corrections += new
        at = time.monotonic()
        if not self._unsaid_corrections or (
            not now and at - self._corrections_said_at < self._log_every_s
        ):
            return
        self._log.warning(
            "daily_bars_corrected",
            bars=self._unsaid_corrections,
            note="session bars of periods already evaluated (late, or out of order): stored "
            "as corrections, they fire nothing",
        )
        self._unsaid_corrections, self._corrections_said_at = 0, at


SHOWN = 10  # (symbols named in a line about held or refused session bars)


def _messages(item: FeedBatch | Wire) -> int:
    return len(item.payloads) if isinstance(item, Wire) else 1


def _claimed(item: FeedBatch | Wire) -> bool:
    return not isinstance(item, Wire) or item.claim is None or item.claim()


def _logged_by_feeds(items: list[FeedBatch | Wire]) -> set[int]:
    """The ids of the rejections of batches a feed decoded and logged itself, with the feed's
    name (a WebSocket feed's: `wire.hand_on`)."""
    return {
        id(r)
        for item in items
        if isinstance(item, FeedBatch) and item.rejections_logged
        for r in item.rejections
    }


def _newest_accepted(batch: FeedBatch, rejections: list[Rejection]) -> dt.datetime | None:
    """The newest instant among the rows the engine accepted: a tick's timestamp, a minute bar's
    end (session bars say when their session closed, not how current the feed is). A rejected
    row (dated 1969 or 2100, a duplicate delivered again an hour later) says nothing about the
    lag. A rejection names its row's symbol, not the row: the rows of a symbol with a rejection
    in this step are left out (its next step counts)."""
    rejected = list({r.symbol for r in rejections if r.symbol is not None})
    accepted = pl.col("symbol").is_not_null() & ~pl.col("symbol").is_in(rejected)
    newest: list[dt.datetime] = []
    for frame, column, span in (
        (batch.ticks, "ts", dt.timedelta(0)),
        (batch.minute_bars, "start", MINUTE),
    ):
        if rejections and frame.height:  # (without any, every row was accepted)
            frame = frame.filter(accepted)
        value = frame.get_column(column).max() if frame.height else None
        if isinstance(value, dt.datetime):
            newest.append(value + span)
    return max(newest, default=None)
