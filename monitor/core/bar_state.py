"""A `BarBook`'s sessions saved at a stop and taken up at the next start.

`BarBook.state()` takes what a restart would lose of the book (closed and open minute bars,
duplicate keys, the sessions whose bar was emitted, the book's clock) as a `BookState`, which
`monitor.store` writes to disk; `BarBook.restore(state, now)` on a fresh book continues from it
when a session it holds is one the book would still keep at `now`, so that a session's bars
built across a restart equal those of one uninterrupted run.

Why apart from `monitor.core.bars`: building bars is the hot path and runs all day; this runs
once at a stop and once at a start, and the builder reads better without it. The two functions
here are BarBook's other half (its `state` and `restore` delegate to them): they read and set
the book's private fields (and those of the parts it owns: its closed minutes, duplicate keys
and what waits for its clock), and no other module does.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec
import polars as pl

from monitor.core.book_frames import OPEN_SCHEMA, STATE_SCHEMA, conform, ts_lit
from monitor.core.closed_minutes import HELD_SCHEMA
from monitor.core.model import DAILY_SCHEMA, TS, empty
from monitor.core.official_bars import SCHEMA as OFFICIAL_SCHEMA
from monitor.core.sessions import minute_date
from monitor.core.trade_ledger import LEDGER_SCHEMA, PROVIDER_SCHEMA

if TYPE_CHECKING:
    from monitor.core.bars import BarBook

RESTORE_SKEW = dt.timedelta(minutes=1)  # a saved state may be this far ahead of the clock
_SEEN_SCHEMA: dict[str, pl.DataType] = {"bucket": TS, "key": pl.UInt64()}


class BookState(msgspec.Struct, frozen=True):
    """A BarBook's sessions as `BarBook.state()` takes them, after an `advance` (nothing is left
    to emit then). `closed`: closed minute bars with their `session` and `regular` flag; `open`:
    open minute bars with `first_ts`/`last_ts`; `seen`: duplicate keys (`bucket`, `key`), hashes
    that only the polars version named by `hashed_by` reproduces; `done`: sessions whose bar was
    emitted; `now`: the book's clock; `keep_from`: its oldest session."""

    now: dt.datetime | None
    keep_from: dt.date | None
    done: list[dt.date]
    closed: pl.DataFrame
    open: pl.DataFrame
    seen: pl.DataFrame
    hashed_by: str = pl.__version__
    # The engine's session bars waiting for their session's close (a provider's daily bars of
    # the session under way): not the book's, saved with it (see `Engine.bar_state`).
    daily: pl.DataFrame = msgspec.field(default_factory=lambda: empty(DAILY_SCHEMA))
    # The engine's keys of a provider's session bars, which bars built from trades do not
    # replace (`monitor.core.official_bars`).
    official: pl.DataFrame = msgspec.field(default_factory=lambda: empty(OFFICIAL_SCHEMA))
    # The closing prints taken, as partial bars of their session's last minute (the book's
    # `_closing_prints`: merged into a provider's bar of that minute that comes later).
    closing: pl.DataFrame = msgspec.field(default_factory=lambda: empty(OPEN_SCHEMA))
    # Provider minute bars waiting for their minute's end (or for the clock): taken, or
    # rejected as from the future, by the first `advance` after the restart.
    waiting: pl.DataFrame = msgspec.field(default_factory=lambda: empty(OPEN_SCHEMA))
    # Session bars held back as cut short (session, symbol, why: the book's closed minutes'
    # `held`, see `monitor.core.closed_minutes`).
    held: pl.DataFrame = msgspec.field(default_factory=lambda: empty(HELD_SCHEMA))
    # The book's close clock (minutes and sessions closed by it: behind `now` while a feed
    # caught up on a backlog; None: a file of an earlier version, `now`'s).
    closes_at: dt.datetime | None = None
    # The ticks taken lately, for cancels (the book's `monitor.core.trade_ledger`): `trades`
    # in arrival order, `provider_minutes` (symbol, start) a provider's bar set, `trades_from`
    # its `whole_from`; `trades_kept` False: none saved (the ledger off, or a file of an
    # earlier version: after the restart, cancels of trades before it are `cancel_too_old`).
    trades: pl.DataFrame = msgspec.field(default_factory=lambda: empty(LEDGER_SCHEMA))
    provider_minutes: pl.DataFrame = msgspec.field(default_factory=lambda: empty(PROVIDER_SCHEMA))
    trades_from: dt.datetime | None = None
    trades_kept: bool = False
    # A provider's bars of sessions' last minutes as it sent them (the book's
    # `_provider_last`, kept with the trades: a closing print cancelled is taken out of them;
    # none in a file of an earlier version: such a cancel is then `cancel_provider_bar`).
    provider_last: pl.DataFrame = msgspec.field(default_factory=lambda: empty(OPEN_SCHEMA))

    def sessions(self) -> list[dt.date]:
        """The sessions of its closed minute bars and emitted session bars, sorted."""
        found = set(self.done) | set(self.closed.get_column("session").unique().to_list())
        return sorted(found)


def state_of(book: BarBook) -> BookState:
    """What a restart would lose of `book` (see `BookState`); take it after an `advance`."""
    book._compact()
    closed = [frame for minutes in book._closed.minutes.values() for frame in minutes.values()]
    buckets = [
        keys.to_frame("key").select(ts_lit(bucket).alias("bucket"), "key")
        for bucket, keys in book._seen.buckets.items()
    ]
    ledger = book._ledger
    return BookState(
        trades=ledger.frame(),
        provider_minutes=ledger.provider,
        trades_from=ledger.whole_from,
        trades_kept=ledger.on,
        now=book._now,
        closes_at=book._close_clock,
        keep_from=book._keep_from,
        done=sorted(book._closed.done),
        closed=pl.concat(closed) if closed else empty(STATE_SCHEMA),
        open=book._open,
        seen=pl.concat(buckets) if buckets else empty(_SEEN_SCHEMA),
        closing=book._closing_prints,
        provider_last=book._provider_last,
        waiting=pl.concat(book._waiting.bars) if book._waiting.bars else empty(OPEN_SCHEMA),
        held=pl.DataFrame(
            [(day, *held) for day, bars in book._closed.held.items() for held in bars.items()],
            schema=HELD_SCHEMA,
            orient="row",
        ),
    )


def restore(book: BarBook, state: BookState, now: dt.datetime) -> bool:
    """Continue from `state` (of a book with the same options) on the fresh `book`, when a
    session it holds is one the book keeps at `now` (still open, or the latest closed or the one
    before: corrections to those are taken); their bars, open bars and duplicate keys come back.
    False, restoring nothing, for a stale state, or one taken later than `now` (by more than
    RESTORE_SKEW: a replay started over). Duplicate keys hashed by another polars version are
    left out (copies of their trades would count again). Session bars it held back (`held`)
    of sessions the book no longer keeps are refused at the next `advance`, as if forgotten
    by a book that never stopped."""
    if from_later(state, now):
        return False
    keep = book._keep_at(now)
    sessions = state.sessions()
    for bars in (state.open, state.waiting):
        if bars.height:
            starts = bars.get_column("start").unique().to_list()
            sessions += [
                s for s, _ in book._minute_classes.classify(starts).values() if s is not None
            ]
    held = conform(state.held, HELD_SCHEMA)
    if not sessions or (keep is not None and max(sessions) < keep):
        book._closed.refused += held.rows()  # (no later minutes can make them whole now)
        return False
    if state.keep_from is not None and (keep is None or state.keep_from > keep):
        keep = state.keep_from
    closed = conform(state.closed, STATE_SCHEMA)
    if keep is not None:
        closed = closed.filter(pl.col("session") >= keep)
    for (session, start), part in closed.partition_by("session", "start", as_dict=True).items():
        book._closed.minutes.setdefault(session, {})[start] = part
    book._closed.done = {s for s in state.done if keep is None or s >= keep}
    if keep is not None:  # (held bars of sessions the book no longer keeps: refused)
        book._closed.refused += held.filter(pl.col("session") < keep).rows()
        held = held.filter(pl.col("session") >= keep)
    for day, symbol, why in held.iter_rows():
        book._closed.held.setdefault(day, {})[symbol] = why
    book._keep_from = keep
    book._now = state.now
    book._close_clock = state.closes_at or state.now
    if book._close_clock is not None and state.now is not None:  # (never ahead of it)
        book._close_clock = min(book._close_clock, state.now)
    book._open = conform(state.open, OPEN_SCHEMA)
    closing = conform(state.closing, OPEN_SCHEMA)
    if keep is not None and closing.height:
        closing = closing.filter(minute_date(pl.col("start")) >= keep)
    book._closing_prints = closing
    last = conform(state.provider_last, OPEN_SCHEMA)
    if keep is not None and last.height:
        last = last.filter(minute_date(pl.col("start")) >= keep)
    book._provider_last = last if book._ledger.on else empty(OPEN_SCHEMA)
    waiting = conform(state.waiting, OPEN_SCHEMA)
    book._waiting.bars = [waiting] if waiting.height else []
    earliest = book._open.get_column("start").min() if book._open.height else None
    book._earliest = earliest  # type: ignore[assignment]
    _restore_ledger(book, state, closed)
    if state.hashed_by == pl.__version__ and state.seen.height:
        seen = conform(state.seen, _SEEN_SCHEMA)
        for (bucket,), part in seen.partition_by("bucket", as_dict=True).items():
            book._seen.buckets[bucket] = part.get_column("key")
        book._seen.size = seen.height
        # Which buckets hold keys of late trades, filed under their arrival, is not saved: a
        # late tick is looked up in every bucket restored (more keys to look in, none missed).
        book._seen.arrivals = set(book._seen.buckets)
    return True


def _restore_ledger(book: BarBook, state: BookState, closed: pl.DataFrame) -> None:
    """The ticks taken lately (for cancels) as saved; or, none saved, no minute before the
    state's end (its clock, its latest bar) is whole (see `monitor.core.trade_ledger`)."""
    ledger = book._ledger
    if not ledger.on:
        return
    if state.trades_kept:
        ledger.load(conform(state.trades, LEDGER_SCHEMA), state.trades_from)
        ledger.provider = conform(state.provider_minutes, PROVIDER_SCHEMA)
        return
    ends = [book._open.get_column("start").max(), closed.get_column("start").max(), state.now]
    latest = max((e for e in ends if isinstance(e, dt.datetime)), default=None)
    if latest is not None:
        ledger.whole_from = latest.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def from_later(state: BookState, now: dt.datetime) -> bool:
    """Whether `state` was taken later than `now` (by more than RESTORE_SKEW): a replay
    started over, whose clock is behind the saved one."""
    return state.now is not None and state.now > now + RESTORE_SKEW
