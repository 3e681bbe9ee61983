"""Tick batches -> one-minute bars -> session (daily) bars, streaming and vectorised.

`BarBook` takes TICK_SCHEMA batches (and provider MINUTE_SCHEMA bars) and the passing of time:
`advance(now)` closes a minute bar `close_delay_s` after its end and a session's bar
`session_close_delay_s` after the session's close (by default `close_delay_s`; the daemon waits
longer, for closing prints that come late), and re-emits every bar that late ticks or re-sent
provider bars changed. Each step is a few polars passes over the whole batch.
The session's last minute (15:59, 12:59 on an early close) closes with the session's bar, not
`close_delay_s` after its end: the closing prints that come within `session_close_delay_s` are
taken into it while it is open, and it is emitted once, whole, in the same `advance` as the
session's bar (its minute rules run on it as `replay` does, not on a bar they correct after).
With `extended_hours`, a minute after it that would close before then waits for it, so
minutes close in order. (A provider's bar of it is closed when it is taken, as any: below.)
`advance(now, close_at=...)` closes them by `close_at` instead when it is earlier (the close
clock, which never goes back: the daemon's, held at a feed's newest data while it catches up on
a backlog, see `monitor.close_clock`), and by `now` for everything else: which ticks and bars
are from the future, which duplicate keys are kept, which sessions are kept. A tick newer than
the close clock is taken into its open bar, and closed with it when the clock gets there.

Open and close are the prices of the earliest and latest tick by `ts`; among ticks with the same
`ts`, the first to arrive opens and the last to arrive closes (the tape's last sale). A tick in
the first second of a session's close (16:00:00 to 16:00:00.999 New York, 13:00:00 on an early
close: the closing auction's print, stamped at or just after the close) belongs to the session's
last minute bar, and so to its session bar: the session closes on its closing price; a later
tick is outside the session (or post-market).
Provider bars replace the bar of their (symbol, start); a later tick for that minute merges into
it as for any closed bar (the provider's open and close stay). A provider's bar of a session's
last minute lacks the closing print (its provider files the print under the minute of the
close, which is outside the session): the closing prints taken are merged into it, whichever
came first.
A provider bar is a closed bar once its minute is over by the book's clock (the last `advance`),
and a tick is taken once it is no more than `FUTURE_SKEW` ahead of it: until then they wait for
an `advance`, which takes them or rejects them as from the future ("future_bar", "future_tick",
in `ClosedBars.rejected`; see `monitor.core.clock_queue`). A book that never advanced has no
clock: it takes every bar at once (a history in one batch).

What is kept in memory:
- open minute bars: per-batch partial aggregates, compacted into one frame on each `advance`;
- closed minute bars of the current and the previous session (every session on or after the one
  before the latest closed session), one frame per minute, so late ticks and re-sent bars can
  correct a minute and its session bar. Older ones are dropped on `advance`, and ticks or bars
  for those sessions are then rejected ("late_tick", "late_bar") even with late_ticks="correct";
  with them, keys of bars still to emit, symbols whose emitted session bar needs redoing, and
  the sessions whose bar was emitted (within the same two sessions);
- the closing prints taken, as partial bars of their session's last minute (the same two),
  and with `cancel_window_s` a provider's bars of those minutes as it sent them (a closing
  print taken back is taken out of the bar it was merged into);
- duplicate keys: hashes of accepted ticks, kept for `dedup_window_s` (an hour) before the
  latest closed minute, at most `dedup_max_keys` of them ("dedup_keys_dropped_early" past it);
- provider bars waiting for their minute's end (or for the clock), and ticks ahead of it;
- with `cancel_window_s`, the ticks taken in that window, so that a feed's cancel or
  correction of a trade (`take_back`) builds its minute bar again without it
  (`monitor.core.trade_ledger`).

`state()` and `restore(state, now)` save that (the ticks ahead of the clock aside: they are
seconds ahead at most, or from the future) across a restart: see `monitor.core.bar_state`.
The schemas of the book's frames and the expressions it runs on each batch are in
`monitor.core.book_frames`. Four parts of the book's state are objects of their own, which it
owns and drives: its closed minute bars and what it has to emit of them
(`monitor.core.closed_minutes`), its duplicate keys (`monitor.core.duplicate_keys`), what
waits for its clock (`monitor.core.clock_queue`) and which session each minute belongs to
(`monitor.core.minute_classes`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING, Literal

import msgspec
import polars as pl

from monitor.core.book_frames import (
    BAR_PROBLEM,
    BAR_RAW,
    CANCEL_RAW,
    KEYS,
    OPEN_SCHEMA,
    STATE_SCHEMA,
    TICK_RAW,
    PrintCheck,
    aggregate,
    checked,
    closing_print,
    combine,
    conform,
    held_raw,
    split,
    tick_problem,
    ts_lit,
)
from monitor.core.clock_queue import ClockQueue
from monitor.core.closed_minutes import HELD_SCHEMA, REMOVED_SCHEMA, ClosedMinutes
from monitor.core.duplicate_keys import (
    DEDUP_MAX_KEYS,
    DEDUP_WINDOW_S,
    TICK_BUCKET,
    TICK_KEY,
    DuplicateKeys,
)
from monitor.core.minute_classes import EXTENDED_HOURS as EXTENDED_HOURS  # (re-exported)
from monitor.core.minute_classes import MinuteClasses
from monitor.core.model import (
    CANCEL_SCHEMA,
    EXCLUDED_SCHEMA,
    MINUTE_SCHEMA,
    TICK_SCHEMA,
    TS,
    Rejection,
    empty,
)
from monitor.core.sessions import Sessions, minute_date
from monitor.core.trade_ledger import TradeLedger

if TYPE_CHECKING:
    from monitor.core.bar_state import BookState

COMPACT_ROWS = 50_000  # accepted ticks aggregated into the open bars at the latest
CLOSING_PRINT = dt.timedelta(seconds=1)  # ticks this soon after a close belong to its session
_MINUTE = dt.timedelta(minutes=1)
_MICROSECOND = dt.timedelta(microseconds=1)
_BAR_SPAN = dt.timedelta(microseconds=59_999_999)


class ClosedBars(msgspec.Struct, frozen=True):
    """Bars closed or corrected by one `advance`: MINUTE_SCHEMA and DAILY_SCHEMA frames; and
    the provider bars and ticks that waited for the clock: found to be from the future
    ("future_bar", "future_tick", see the module), or taken."""

    minute: pl.DataFrame
    daily: pl.DataFrame
    rejected: list[Rejection] = msgspec.field(default_factory=list)
    # Provider bars that waited for the clock (see the module) and were taken now.
    taken: pl.DataFrame = msgspec.field(default_factory=lambda: empty(MINUTE_SCHEMA))
    # Ticks that waited for the clock (see the module) and were taken now (TICK_SCHEMA and more).
    taken_ticks: pl.DataFrame = msgspec.field(default_factory=lambda: empty(TICK_SCHEMA))
    # Session bars held back as cut short and given up, their session forgotten (HELD_SCHEMA:
    # session, symbol, why; see `monitor.core.closed_minutes`).
    cut_short: pl.DataFrame = msgspec.field(default_factory=lambda: empty(HELD_SCHEMA))
    # Minutes (symbol, start) emitted closed before, whose every trade was cancelled since
    # (`take_back`): the bar emitted of them no longer stands.
    removed: pl.DataFrame = msgspec.field(default_factory=lambda: empty(REMOVED_SCHEMA))


class BarBook:
    """Streaming minute and session bars of a whole universe, from tick and bar batches.

    `late_ticks="correct"` applies a tick for an already closed minute to it and re-emits the bar
    (and its session bar when that was emitted); `"reject"` rejects it. `counts` holds
    rejections by reason, plus "late_tick_corrected" (ticks), "bar_replaced" (provider bars),
    "dedup_keys_dropped_early" (see the module), and with `hold_cut_short` "session_held" and
    "session_released": session bars held back at the close as cut short, and released when
    later minutes made them whole (see `monitor.core.closed_minutes`; `exempt`: symbols never
    held, the engine's halted ones). A `check` given to `ingest_...` (the engine's
    bad-print screen, `monitor.core.price_check`) sees the rows the book takes but for it.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        extended_hours: bool = False,
        late_ticks: Literal["correct", "reject"] = "correct",
        close_delay_s: float = 2.0,
        session_close_delay_s: float | None = None,
        dedup_max_keys: int = DEDUP_MAX_KEYS,
        dedup_window_s: float = DEDUP_WINDOW_S,
        hold_cut_short: bool = False,
        exempt: set[str] | None = None,
        cancel_window_s: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.dedup_max_keys = dedup_max_keys
        self.dedup_window = dt.timedelta(seconds=dedup_window_s)
        self._seen = DuplicateKeys(window=self.dedup_window, max_keys=dedup_max_keys)
        self.extended_hours = extended_hours
        self.late_ticks = late_ticks
        self.close_delay = dt.timedelta(seconds=close_delay_s)
        # (never before the session's last minute closes)
        session_delay = max(close_delay_s, session_close_delay_s or close_delay_s)
        self.session_close_delay = dt.timedelta(seconds=session_delay)
        self.counts: dict[str, int] = {}
        self._closes: set[dt.datetime] = set(sessions.frame.get_column("close_ts").to_list())
        self._now: dt.datetime | None = None
        self._close_clock: dt.datetime | None = None  # (minutes and sessions close by it)
        self._keep_from: dt.date | None = None
        self._open = empty(OPEN_SCHEMA)
        self._partials: list[pl.DataFrame] = []  # accepted ticks, not aggregated yet
        self._partial_rows = 0
        self._earliest: dt.datetime | None = None  # no open bar or tick starts before this
        self._closed = ClosedMinutes(
            sessions, self.session_close_delay, hold=hold_cut_short, exempt=exempt
        )
        self._minute_classes = MinuteClasses(sessions, extended_hours)
        self.accepted = empty(TICK_SCHEMA)  # the rows the last `ingest_...` call took in
        self._waiting = ClockQueue()  # provider bars and ticks ahead of the clock
        # The closing prints taken (ticks stamped in a close's first second), as partial bars
        # of the session's last minute: a provider's bar of that minute, which lacks them (its
        # provider files them under the minute of the close), has them merged in.
        self._closing_prints = empty(OPEN_SCHEMA)
        # A provider's bars of sessions' last minutes as it sent them, before the closing
        # prints were merged in (kept with the ticks for cancels): a closing print its feed
        # takes back leaves such a bar by merging the prints left into it again.
        self._provider_last = empty(OPEN_SCHEMA)
        self._last_minutes = pl.Series(sorted(c - _MINUTE for c in self._closes), dtype=TS)
        self._started: dt.datetime | None = None  # (see start_clock)
        # The ticks taken lately, for a feed's cancels (`take_back`; 0 s: none kept)
        self._ledger = TradeLedger(dt.timedelta(seconds=cancel_window_s))
        self.taken_back = empty(CANCEL_SCHEMA)  # the cancels the last `take_back` applied

    def ingest_ticks(
        self, ticks: pl.DataFrame, check: PrintCheck | None = None, *, taken: bool = False
    ) -> list[Rejection]:
        """Fold a tick batch into the book; returns the ticks it did not accept (`check`: bad
        prints among the ticks it would take, see the class). `taken`: ticks a book took
        before (a journal's, after a restart, whose clock is the last save's): none waits
        for the clock."""
        frame = conform(ticks, TICK_SCHEMA).with_columns(**_TICK_PREP)
        starts = frame["start"].drop_nulls().unique().to_list()
        closes = [s for s in starts if s in self._closes]
        if closes:  # (the closing print: in the session's last minute)
            frame = frame.with_columns(start=closing_print(closes, CLOSING_PRINT))
            starts = frame["start"].drop_nulls().unique().to_list()
        screened = pl.coalesce("reason", *self._screen(frame, "late_tick", starts))
        dup = ~pl.when(screened.is_null()).then("key").is_first_distinct()
        cutoff = self._cutoff() if self._close_clock is not None else None
        aging = self._dedup_cutoff()
        buckets = frame["bucket"].unique()
        old = self._seen.has_old(buckets, aging)  # (older than the window: filed on arrival)
        copies = self._seen.copies(frame["key"], buckets, old)
        if copies is not None:
            dup = dup | pl.col("key").is_in(copies.implode())
        late = pl.lit(False) if cutoff is None else pl.col("start") <= ts_lit(cutoff)
        reasons = [screened, pl.when(dup).then(pl.lit("duplicate"))]
        if self.late_ticks == "reject":
            reasons.append(pl.when(late).then(pl.lit("late_tick")))
        frame = frame.with_columns(reason=pl.coalesce(reasons), late=late)
        if check is not None:
            frame = checked(frame, check, "price", pl.col("key"))
        rejected, good = split(frame)
        if check is not None:
            good = good.drop("held")
        if check is not None and self._ledger.on and rejected.height:
            # (a correction of a bad print may make it a good trade: `corrections_of_rejected`)
            self._ledger.note_rejected(rejected.filter(pl.col("reason") == "bad_print"))
        if old and aging is not None:
            good = self._seen.file_on_arrival(good, aging)
        # The keys of ticks that wait are held too: a copy before the next advance is one.
        self._count("dedup_keys_dropped_early", self._seen.remember(good))
        clock = self._now or self._started
        if clock is not None and good.height and not taken:
            good = self._waiting.hold_ticks(good, clock)
        self.accepted = good  # (a tick that waits is taken, or not, by `advance`)
        self._ledger.record(good)
        if closes:
            self._keep_closing_prints(good)
        if cutoff is not None and starts and min(starts) <= cutoff:
            starts = [s for s in starts if s > cutoff]
            good = self._correct_late(good)
        if good.height:
            self._take_ticks(good, min(starts) if starts else None)
        return self._reject(rejected, TICK_RAW if check is None else held_raw(TICK_RAW))

    def _keep_closing_prints(self, good: pl.DataFrame) -> None:
        """Remember the closing prints among accepted ticks (see `_closing_prints`)."""
        prints = good.filter(pl.col("ts") >= pl.col("start") + _MINUTE)
        if prints.height:
            self._closing_prints = combine(pl.concat([self._closing_prints, aggregate(prints)]))

    def _correct_late(self, good: pl.DataFrame) -> pl.DataFrame:
        """Fold accepted ticks for closed minutes (`late`) into those bars; the others."""
        n_late = int(good["late"].sum())
        if not n_late:
            return good
        self._count("late_tick_corrected", n_late)
        self._closed.merge(self._minute_classes.with_session(aggregate(good.filter("late"))))
        return good.filter(~pl.col("late"))

    def _take_ticks(self, good: pl.DataFrame, earliest: dt.datetime | None) -> None:
        """Pile up accepted ticks of open minutes (the earliest of which starts at `earliest`,
        when known) to be folded into the open bars when bars may close (or enough piled up),
        not on every batch."""
        self._partials.append(good)
        self._partial_rows += good.height
        if earliest is None:
            earliest = good.get_column("start").min()  # type: ignore[assignment]
        if earliest is not None and (self._earliest is None or earliest < self._earliest):
            self._earliest = earliest
        if self._partial_rows >= COMPACT_ROWS:
            self._compact()

    def _take_waiting_ticks(
        self, came_by: dt.datetime | None
    ) -> tuple[pl.DataFrame, list[Rejection]]:
        """At an `advance`: the ticks that came ahead of the clock (see the module), taken if
        the clock has caught up with them, else rejected as `future_tick`. A tick is late if
        its minute was closed when it came (`came_by`: the cutoff of the close clock before
        this advance moved it; None, none was), as one taken on arrival is: judged by the
        close clock this advance moves to, a restart's backlog taken in one batch (its ticks
        past the saved clock wait for this advance) had all but its last minute late,
        corrected or, with late_ticks="reject", thrown away."""
        assert self._now is not None
        due, future = self._waiting.due_ticks(self._now)
        rejected = self._reject(future, TICK_RAW)
        closed = pl.lit(False) if came_by is None else pl.col("start") <= ts_lit(came_by)
        due = due.with_columns(late=closed)
        if self.late_ticks == "reject":
            late = due.filter("late").with_columns(reason=pl.lit("late_tick"))
            rejected += self._reject(late, TICK_RAW)
            due = due.filter(~pl.col("late"))
        taken = due
        self._ledger.record(taken)
        if due.height:  # (a provider's bar of the last minute, taken after, gets them)
            self._keep_closing_prints(due)
        due = self._correct_late(due)
        if due.height:
            self._take_ticks(due, None)
        return taken, rejected

    def take_back(self, cancels: pl.DataFrame) -> list[Rejection]:
        """Take the trades of `cancels` (CANCEL_SCHEMA: a feed's cancels, errors and
        corrections) out of their minute bars, or put their correction in their place, and
        build those bars again from the minute's other ticks (`monitor.core.trade_ledger`):
        an open bar simply changes; a closed one is emitted again by the next `advance`, with
        its session bar when that was emitted, as a late tick's correction is. A minute left
        with no trade has no bar. A trade still waiting for the clock leaves the queue, or
        waits corrected (`ClockQueue.take_back`; not in `taken_back`: the journal then holds
        the trade as taken, or nothing). Returns the cancels not applied, each with why (see
        `_cancel_problem` and `TradeLedger.not_held`); `taken_back`: those applied, in the
        order applied (a correction of a correction in one batch comes after the first)."""
        cancels = conform(cancels, CANCEL_SCHEMA)
        self.taken_back = cancels.clear()
        if not cancels.height:
            return []
        if not self._ledger.on:
            return self._reject(cancels.with_columns(reason=pl.lit("cancel_ignored")), CANCEL_RAW)
        self._compact()  # (the open bars to build again are in `_open`)
        left = cancels.with_row_index("row")
        applied: list[pl.DataFrame] = []
        waited: list[pl.DataFrame] = []  # (of trades still waiting for the clock)
        refused: list[pl.DataFrame] = []
        while left.height:  # (a pass for each link of a chain of corrections)
            found = self._ledger.matches(left)
            rest = left.join(found.select("row"), on="row", how="anti") if found.height else left
            waits = self._waiting.take_back(rest)
            if not found.height and not waits.height:
                break
            if found.height:
                bad, good = split(found.with_columns(reason=self._cancel_problem(found)))
                if good.height:
                    self._ledger.apply(good)
                    applied.append(good)
                refused.append(bad)
            if waits.height:
                self._ledger.taken_back.update(
                    ((s, t), start) for s, t, start in waits.select("symbol", "id", "start").rows()
                )
                waited.append(waits)
            rows = pl.concat([found.select("row"), waits.select("row")])
            left = left.filter(~pl.col("row").is_in(rows.get_column("row").implode()))
        rejected = [self._ledger.not_held(left), *refused]
        if applied or waited:
            every = pl.concat([*applied, *waited], how="diagonal")
            fixed = int(every.get_column("new_id").is_not_null().sum())
            self._count("trade_corrected", fixed)
            self._count("trade_cancelled", every.height - fixed)
        if applied:  # (a waiting trade's cancel leaves no bar to build again, nor to journal)
            done = pl.concat(applied)
            self.taken_back = done.select(list(CANCEL_SCHEMA))
            keys = done.select(KEYS).unique()
            last = keys.join(self._provider_last, on=KEYS, how="semi")  # (closing prints)
            self._rebuild(keys.join(last, on=KEYS, how="anti") if last.height else keys)
            if last.height:
                self._retake_provider(last)
        return self._reject(pl.concat(rejected, how="diagonal"), CANCEL_RAW)

    def note_excluded(self, trades: pl.DataFrame) -> None:
        """Remember trades a feed kept out of bars by their sale conditions (EXCLUDED_SCHEMA)
        for the cancel window, as the bad prints the book refuses are: see
        `corrections_of_rejected`."""
        if self._ledger.on and trades.height:
            self._ledger.note_rejected(conform(trades, EXCLUDED_SCHEMA))

    def corrections_of_rejected(self, cancels: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The corrections among `cancels` (CANCEL_SCHEMA) of trades refused when they came
        within the cancel window (a bad print, or a trade its feed kept out by its sale
        conditions), as the ticks of the corrected trades at their trade's time (TICK_SCHEMA:
        the caller takes them in as any tick, screened again, a late one correcting its
        closed minute; counted as "rejected_trade_corrected"), and the other cancels, for
        `take_back`. A correction's own time is its message's, not the trade's: without the
        trade's, remembered when it was refused, the corrected trade has no minute."""
        none = empty(TICK_SCHEMA)
        if not self._ledger.on or not self._ledger.rejected or not cancels.height:
            return none, cancels
        rows = conform(cancels, CANCEL_SCHEMA).with_row_index("row")
        fixes = rows.filter(pl.col("new_id").is_not_null())
        found = self._ledger.rejected_of(fixes) if fixes.height else fixes
        if not found.height:
            return none, cancels
        self._ledger.placed(found)
        self._count("rejected_trade_corrected", found.height)
        ticks = found.select("symbol", ts="at", price="new_price", size="new_size", id="new_id")
        rest = rows.filter(~pl.col("row").is_in(found.get_column("row").implode()))
        return ticks, rest.drop("row")

    def _cancel_problem(self, found: pl.DataFrame) -> pl.Expr:
        """Why a cancel whose trade the ledger holds (`found`, with its `start`) is not
        applied: its minute is not whole in the ledger, or of a session the book no longer
        keeps (`cancel_too_old`), a provider's bar set it (`cancel_provider_bar`: that bar
        stands), or it is closed and late ticks are rejected (`cancel_minute_closed`)."""
        start = pl.col("start")
        # (a closing print merged into a provider's bar of a session's last minute is taken
        # out of it: `_retake_provider`)
        last = found.join(self._provider_last, on=KEYS, how="left", maintain_order="left")
        merged = last.get_column("first_ts").is_not_null() & (
            found.get_column("trade_ts") >= found.get_column("start") + _MINUTE
        )
        provider = self._ledger.from_provider(found) & ~merged
        reasons = [
            pl.when(~self._ledger.is_whole(start)).then(pl.lit("cancel_too_old")),
            *self._screen(found, "cancel_too_old"),
            pl.when(provider).then(pl.lit("cancel_provider_bar")),
        ]
        if self.late_ticks == "reject" and self._close_clock is not None:
            closed = start <= ts_lit(self._cutoff())
            reasons.append(pl.when(closed).then(pl.lit("cancel_minute_closed")))
        return pl.coalesce(reasons)

    def _rebuild(self, keys: pl.DataFrame) -> None:
        """Build the bars of the minutes `keys` (symbol, start) again from the ticks the
        ledger holds of them, in place of the open or closed bar (see `take_back`)."""
        ticks = self._ledger.ticks_of(keys)
        bars = aggregate(ticks)
        self._count("cancel_bar_removed", keys.height - bars.height)
        closed = pl.lit(False)
        if self._close_clock is not None:
            closed = pl.col("start") <= ts_lit(self._cutoff())
        opened = keys.filter(~closed)
        if opened.height:
            kept = self._open.join(opened, on=KEYS, how="anti")
            self._open = pl.concat([kept, bars.join(opened, on=KEYS, how="semi")])
        shut = keys.filter(closed)
        if shut.height:
            self._count("cancel_minute_corrected", shut.height)
            rebuilt = bars.join(shut, on=KEYS, how="semi")
            classes = self._minute_classes
            rebuilt = classes.with_session(rebuilt) if rebuilt.height else empty(STATE_SCHEMA)
            self._closed.replace(classes.with_session(shut, KEYS), rebuilt)
        if self._closing_prints.height:  # (a closing print taken back: see __init__)
            prints = ticks.filter(pl.col("ts") >= pl.col("start") + _MINUTE)
            kept = self._closing_prints.join(keys, on=KEYS, how="anti")
            self._closing_prints = pl.concat([kept, aggregate(prints)])

    def _retake_provider(self, keys: pl.DataFrame) -> None:
        """A closing print of the minutes `keys` (symbol, start: a session's last minute,
        whose bar a provider's set) was taken back: the provider's bar as it came, with the
        closing prints left merged in, replaces the minute's bar (emitted again, with its
        session bar when that was: see `take_back`), as when the provider sends it again."""
        prints = self._ledger.ticks_of(keys).filter(pl.col("ts") >= pl.col("start") + _MINUTE)
        kept = self._closing_prints.join(keys, on=KEYS, how="anti")
        self._closing_prints = pl.concat([kept, aggregate(prints)])
        self._count("cancel_minute_corrected", keys.height)
        self._take_bars(self._provider_last.join(keys, on=KEYS, how="semi"), again=True)

    def ingest_minute_bars(
        self, bars: pl.DataFrame, check: PrintCheck | None = None, *, taken: bool = False
    ) -> list[Rejection]:
        """Upsert provider minute bars by (symbol, start); they count as closed at once, or at
        the first `advance` after their minute's end when it is not over by the book's clock
        (see the module; `check`: see the class). `taken`: bars a book took before (a
        journal's, after a restart, whose clock is the last save's): closed at once, as they
        were then."""
        frame = conform(bars, MINUTE_SCHEMA).with_columns(reason=BAR_PROBLEM)
        frame = frame.with_columns(reason=pl.coalesce("reason", *self._screen(frame, "late_bar")))
        if check is not None:
            frame = checked(frame, check, "close", pl.struct(KEYS).hash(3))
        rejected, good = split(frame)
        if check is not None:
            good = good.drop("held")
        good = good.unique(KEYS, keep="last", maintain_order=True).with_columns(
            first_ts=pl.col("start"), last_ts=pl.col("start") + _BAR_SPAN
        )
        clock = self._now or self._started
        if clock is not None and good.height and not taken:  # (a new book takes all)
            good = self._waiting.hold_bars(good, clock)
        self.accepted = good  # (a bar that waits is taken, or not, by `advance`)
        self._take_bars(good)
        return self._reject(rejected, BAR_RAW if check is None else held_raw(BAR_RAW))

    def advance(self, now: dt.datetime, close_at: dt.datetime | None = None) -> ClosedBars:
        """Close the minute and session bars due at `now` (timezone-aware; time never goes
        back), or at `close_at` when it is earlier (see the module), and return them with
        every bar corrected since the last call."""
        if now.tzinfo is None or (close_at is not None and close_at.tzinfo is None):
            raise ValueError("now and close_at must be timezone-aware")
        self._now = max(now.astimezone(dt.UTC), self._now or now)
        close_by = self._now if close_at is None else min(self._now, close_at.astimezone(dt.UTC))
        came_by = self._cutoff() if self._close_clock is not None else None  # (before it moves)
        self._close_clock = max(close_by, self._close_clock or close_by)
        rejected: list[Rejection] = []
        # Ticks before bars: a provider's bar of a minute replaces the bar its ticks make,
        # as when it comes after them (taken the other way, the ticks merged into the bar,
        # and its volume counted twice).
        taken_ticks = empty(TICK_SCHEMA)
        if self._waiting.ticks:  # (ticks that came ahead of the clock)
            taken_ticks, rejected = self._take_waiting_ticks(came_by)
        taken = empty(MINUTE_SCHEMA)
        if self._waiting.bars:  # (provider bars of minutes not over when they came)
            taken, future = self._waiting.due_bars(self._now)
            self._take_bars(taken)
            rejected += self._reject(future, BAR_RAW)
        cutoff = self._cutoff()
        if self._earliest is not None and self._earliest <= cutoff:
            self._compact()
            due = pl.col("start") <= ts_lit(cutoff)
            closing = self._open.filter(due)
            if closing.height:
                self._open = self._open.filter(~due)
                self._closed.merge(self._minute_classes.with_session(closing))
            earliest = self._open.get_column("start").min() if self._open.height else None
            self._earliest = earliest  # type: ignore[assignment]
        minute, day = self._closed.emit(self._close_clock)
        self._forget(self._now)
        for what, n in self._closed.counts.items():
            self._count(what, n)
        self._closed.counts.clear()
        return ClosedBars(
            minute=minute,
            daily=day,
            rejected=rejected,
            taken=taken,
            taken_ticks=taken_ticks,
            cut_short=self._closed.take_refused(),
            removed=self._closed.take_removed(),
        )

    def start_clock(self, now: dt.datetime) -> None:
        """Give a book that never advanced the clock of its engine (`now`, timezone-aware):
        until its first `advance`, ticks and bars are checked against it for being from the
        future (see the module), and for nothing else: minutes before it are not late (a
        book that never advanced closed none of them)."""
        if self._now is None:
            self._started = now.astimezone(dt.UTC)

    def state(self) -> BookState:
        """What a restart would lose (see `BookState`); take it after an `advance`."""
        from monitor.core import bar_state  # (it builds on this module)

        return bar_state.state_of(self)

    def restore(self, state: BookState, now: dt.datetime) -> bool:
        """Continue from `state` on this fresh book unless it is stale at `now`; whether it
        did (see `monitor.core.bar_state.restore`)."""
        from monitor.core import bar_state

        return bar_state.restore(self, state, now)

    def unemitted(self, now: dt.datetime) -> list[dt.date]:
        """The sessions whose minutes the book holds, closed by `now`, whose session bars it
        has not emitted (at a start, those its saved state had not emitted yet)."""
        held = set(self._closed.minutes)
        if self._open.height:
            self._compact()
            held |= set(
                self._minute_classes.with_session(self._open).get_column("session").drop_nulls()
            )
        return sorted(
            s
            for s in held
            if s not in self._closed.done
            and self.sessions.close_of(s) + self.session_close_delay <= now
        )

    def mark_emitted(self, stored: pl.DataFrame) -> None:
        """Take the session bars of `stored` (DAILY_SCHEMA) as emitted: the next `advance`
        closes their minutes as usual but emits no bar for those symbols, unless their minutes
        changed since `track_changes` and the bar built of them differs from the stored one (a
        correction, emitted; a later correction still is too; the session's other symbols get
        theirs, judged as at any close). At a
        start, for the bars the store holds of sessions the saved state had not emitted:
        they were emitted and stored after the state was saved, and what the store holds
        since may be better (a provider's official bar that came after them). A symbol
        whose bar the store lacks was held back then (see `hold_cut_short`): it is judged
        again."""
        self._closed.mark_emitted(stored)

    def track_changes(self) -> None:
        """At a start, before the saved state and the journal are taken up: note whose minutes
        change from now, so that a bar `mark_emitted` takes as stored is built again when
        minutes taken in before its first close (journaled, or the broker's backlog) changed
        it (see `monitor.core.closed_minutes`)."""
        self._closed.track()

    def held(self) -> dict[dt.date, dict[str, str]]:
        """The session bars held back as cut short: session -> symbol -> why (see
        `monitor.core.closed_minutes`)."""
        return {day: dict(bars) for day, bars in self._closed.held.items()}

    def closed_minutes(self) -> pl.DataFrame:
        """Every closed minute bar the book holds (MINUTE_SCHEMA), by symbol and start."""
        return self._closed.frame()

    def oldest_kept(self, now: dt.datetime) -> dt.date | None:
        """The oldest session whose ticks and bars the book takes at `now` (None: every one):
        the session under way, the latest closed one and the one before."""
        return self._keep_at(now)

    def _keep_at(self, now: dt.datetime) -> dt.date | None:
        """The oldest session the book keeps at `now` (None: every session)."""
        last = self.sessions.last_closed(now)
        return self.sessions.shift(last, -1) if last is not None else None

    @property
    def closes_at(self) -> dt.datetime | None:
        """The close clock: minutes and sessions closed by it are (None: never advanced)."""
        return self._close_clock

    def latest_prices(self, symbols: list[str]) -> pl.DataFrame:
        """symbol, price: the latest trade of each of `symbols` among the ticks kept for
        cancels (`monitor.core.trade_ledger`), after `take_back` took some out."""
        return self._ledger.latest(symbols)

    @property
    def keeps_trades(self) -> bool:
        """Whether the ticks of the cancel window are kept (`take_back` applies cancels)."""
        return self._ledger.on

    @property
    def holds_nothing(self) -> bool:
        """Whether the book holds no bar nor tick, open, closed or waiting (a first start's)."""
        return not (
            self._open.height
            or self._partials
            or self._closed.minutes
            or self._waiting.ticks
            or self._waiting.bars
        )

    def resume_close_clock(self, at: dt.datetime) -> None:
        """Continue from a close clock of `at` when none was restored (a start after a kill -9
        before any save: where the journal's data end; the clock was there or later)."""
        if self._close_clock is None:
            self._close_clock = at.astimezone(dt.UTC)

    def closes_by(self, now: dt.datetime, close_at: dt.datetime | None = None) -> bool:
        """Whether `advance(now, close_at)` will close a minute bar that is open now, or take
        a provider bar that waits for its minute's end."""
        earliest = self._earliest
        if earliest is not None and earliest <= self._cutoff_at(self.closing(now, close_at)):
            return True
        return self._waiting.ends_by(now)

    def closing(self, now: dt.datetime, close_at: dt.datetime | None = None) -> dt.datetime:
        """The instant `advance(now, close_at)` closes minutes and sessions by: the earlier of
        the two, never before the close clock (which never goes back)."""
        closing = now if close_at is None else min(now, close_at)
        held = self._close_clock
        return closing if held is None else max(closing, held)

    def _take_bars(self, good: pl.DataFrame, *, again: bool = False) -> None:
        """Upsert provider bars (OPEN_SCHEMA) into the closed minute bars (`again`: a bar
        taken before, put back in place of its minute's: `_retake_provider`)."""
        if good.height:
            if self._ledger.on and not again:  # (see `_provider_last`)
                last = good.filter(pl.col("start").is_in(self._last_minutes.implode()))
                if last.height:
                    both = pl.concat([self._provider_last, last.select(list(OPEN_SCHEMA))])
                    self._provider_last = both.unique(KEYS, keep="last", maintain_order=True)
            if self._closing_prints.height:  # (the last minute of a session: see __init__)
                prints = self._closing_prints.join(good.select(KEYS), on=KEYS, how="semi")
                if prints.height:
                    good = combine(pl.concat([good.select(prints.columns), prints]))
            good = self._minute_classes.with_session(good)
            keys = good.select(KEYS)
            self._ledger.note_provider(keys)  # (a cancel leaves the provider's bar as it is)
            self._compact()
            stored = self._closed.stored(good)
            known = pl.concat([self._open.select(KEYS), stored.select(KEYS)])
            if not again:
                self._count("bar_replaced", known.join(keys, on=KEYS, how="semi").height)
            self._open = self._open.join(keys, on=KEYS, how="anti")
            self._closed.store(pl.concat([stored.join(keys, on=KEYS, how="anti"), good]), good)

    def hold_keys(self, now: dt.datetime) -> None:
        """At a start at `now`, after the saved state and the journal are taken up: the
        duplicate keys of ticks taken before it that `now` would forget are kept for
        `dedup_window` from now (what the broker delivers again is a duplicate; see
        `monitor.core.duplicate_keys.DuplicateKeys.hold`)."""
        self._seen.hold(now - _MINUTE - self.close_delay)

    def _dedup_cutoff(self) -> dt.datetime | None:
        """The cutoff duplicate keys are aged by: the book's, or before its first `advance`
        its start's (`start_clock`), whichever is later (a restored book's clock is its
        save's, and `hold_keys` filed the keys taken up by the start's). None: no clock yet.
        A tick older than the window in the first batch after a start is filed on arrival,
        so its copy sent again is a duplicate (filed under its own bucket, the first
        `advance` forgot it)."""
        clocks = [c for c in (self._now, self._started) if c is not None]
        return max(clocks) - _MINUTE - self.close_delay if clocks else None

    def _cutoff(self) -> dt.datetime:
        """Minutes starting at or before this instant are closed (by the close clock)."""
        assert self._close_clock is not None
        return self._cutoff_at(self._close_clock)

    def _cutoff_at(self, clock: dt.datetime) -> dt.datetime:
        """Minutes starting at or before this instant are closed at `clock` (a close clock):
        those that ended `close_delay` before it, but a session's last minute, and any after
        it, not before `session_close_delay` after the close (see the module)."""
        cutoff = clock - _MINUTE - self.close_delay
        if self.session_close_delay > self.close_delay:
            session = self.sessions.last_closed(clock - self.close_delay)
            if session is not None:
                close = self.sessions.close_of(session)
                if clock < close + self.session_close_delay:  # (its last minute still open)
                    cutoff = close - _MINUTE - _MICROSECOND
        return cutoff

    def minute_closes_at(self, start: dt.datetime) -> dt.datetime:
        """When the close clock closes the minute that starts at `start`: `close_delay` after
        its end; a session's last minute (and one after it, with `extended_hours`, that
        ends before then) `session_close_delay` after the session's close."""
        closes = start + _MINUTE + self.close_delay
        if self.session_close_delay > self.close_delay:
            session = self.sessions.last_closed(start + _MINUTE)
            if session is not None:
                closes = max(closes, self.sessions.close_of(session) + self.session_close_delay)
        return closes

    def _screen(
        self, frame: pl.DataFrame, late_reason: str, starts: list[dt.datetime] | None = None
    ) -> list[pl.Expr]:
        """Reasons for rows of minutes outside sessions, or of sessions already dropped
        (`starts`: the frame's distinct minute starts, if known)."""
        if starts is None:
            starts = frame["start"].drop_nulls().unique().to_list()
        classes = self._minute_classes.classify(starts)
        outside = [s for s, (session, _) in classes.items() if session is None]
        keep = self._keep_from
        old = [s for s, (session, _) in classes.items() if session and keep and session < keep]
        start = pl.col("start")
        flags = [(outside, "outside_session"), (old, late_reason)]
        return [
            pl.when(start.is_in(pl.Series(starts, dtype=TS).implode())).then(pl.lit(reason))
            for starts, reason in flags
            if starts
        ]

    def _compact(self) -> None:
        """Fold the accepted ticks piled up since the last call into the open bars."""
        if self._partials:
            new = aggregate(pl.concat(self._partials, rechunk=False))
            self._open = combine(pl.concat([self._open, new])) if self._open.height else new
            self._partials = []
            self._partial_rows = 0

    def _forget(self, now: dt.datetime) -> None:
        """Drop sessions before the previous one, and duplicate keys past `dedup_window`."""
        keep = self._keep_at(now)
        if keep is not None:
            self._keep_from = keep
            self._closed.forget(keep)
            day = minute_date(pl.col("start"))
            if self._closing_prints.height:
                self._closing_prints = self._closing_prints.filter(day >= keep)
            if self._provider_last.height:
                self._provider_last = self._provider_last.filter(day >= keep)
        self._seen.forget(now - _MINUTE - self.close_delay)  # (by the wall clock)
        self._ledger.forget(self._cutoff())
        self._count(
            "cancel_ticks_dropped_early", self._ledger.counts.pop("cancel_ticks_dropped_early", 0)
        )

    def _reject(self, bad: pl.DataFrame, raw: pl.Expr) -> list[Rejection]:
        if not bad.height:
            return []
        rows = bad.select("reason", "symbol", raw.alias("raw")).rows()
        out = [Rejection(reason, symbol, text) for reason, symbol, text in rows]
        for reason, n in Counter(r.reason for r in out).items():
            self._count(reason, n)
        return out

    def _count(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + n


def _tick_prep() -> dict[str, pl.Expr]:
    start = pl.col("ts").dt.truncate("1m")
    return {"start": start, "bucket": TICK_BUCKET, "key": TICK_KEY, "reason": tick_problem()}


# Expressions are built once: building them costs more than running them on a small batch.
_TICK_PREP = _tick_prep()
