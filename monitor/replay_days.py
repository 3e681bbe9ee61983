"""Replay of minute bars and ticks: a day at a time into the engine, as a feed's would come.

`monitor.replay` feeds daily bars a batch of sessions at a time. Minute bars and ticks go a
day at a time (`build_sessions`, `day_step`): each day's in one batch, then the simulated
clock moved past the day's close and its last bar or tick (never past now), so that the
engine closes the minutes, builds the session's bar of them and runs the `1m` rules, as the
daemon does over a day of its feed. The daily and weekly rules then take every session, the
daily files' and those built (`merged_sessions`), in one batch (`intraday_step`).

Why apart from `monitor.replay`: that module is the daily replay and its summary; this is
how intraday data is cut into days, timed and joined to the daily files, for `replay` and
`backfill` alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, NamedTuple

import polars as pl

from monitor.core.bar_history import sorted_unique
from monitor.core.engine import Engine, Step
from monitor.core.model import MINUTE_SCHEMA, FeedBatch, Rejection, empty
from monitor.core.payload import LINE_ORDER, LINE_SCHEMA
from monitor.core.sessions import Sessions, new_york_date
from monitor.intraday_checks import cut_short


class IntradayData(NamedTuple):
    """Minute bars (MINUTE_SCHEMA) and ticks (TICK_SCHEMA, in time order) to replay."""

    minutes: pl.DataFrame
    ticks: pl.DataFrame

    def is_empty(self) -> bool:
        return self.minutes.is_empty() and self.ticks.is_empty()

    def days(self) -> dict[dt.date, tuple[pl.DataFrame, pl.DataFrame]]:
        """Per New York date, its minute bars and its ticks (in order)."""
        minutes = _by_day(self.minutes, _new_york_day("start"))
        ticks = _by_day(self.ticks, _new_york_day("ts"))
        return {
            day: (minutes.get(day, self.minutes.clear()), ticks.get(day, self.ticks.clear()))
            for day in sorted(minutes.keys() | ticks.keys())
        }

    def first_day(self) -> dt.date:
        """The New York date of the first minute bar or tick (there must be one)."""
        return min(self._ends(pl.Expr.min))

    def last_day(self) -> dt.date:
        """The New York date of the last minute bar or tick (there must be one)."""
        return max(self._ends(pl.Expr.max))

    def symbols(self) -> set[str]:
        """The symbols of the minute bars and ticks."""
        return {
            s
            for frame in (self.minutes, self.ticks)
            for s in frame.get_column("symbol").unique().to_list()
        }

    def _ends(self, end: Any) -> list[dt.date]:
        return [
            frame.select(end(_new_york_day(col))).item()
            for frame, col in ((self.minutes, "start"), (self.ticks, "ts"))
            if not frame.is_empty()
        ]


def _new_york_day(column: str) -> pl.Expr:
    return new_york_date(pl.col(column))


def _by_day(frame: pl.DataFrame, day: pl.Expr) -> dict[dt.date, pl.DataFrame]:
    """`frame`'s rows by `day` (an expression of their date), each part in `frame`'s order."""
    if frame.is_empty():
        return {}
    parts = frame.with_columns(day.alias("_day")).partition_by(
        "_day", as_dict=True, maintain_order=True, include_key=False
    )
    return {key[0]: part for key, part in parts.items()}


def intraday_step(
    daily_engine: Engine,
    minute_engine: Engine,
    daily: pl.DataFrame,
    close_only: pl.Series,
    data: IntradayData,
    *,
    rejected: list[Rejection],
    now: dt.datetime,
) -> Step:
    """A replay with minute bars and ticks, as one Step of every alert in time order.

    Two passes. `minute_engine` (the `1m` rules only) takes the minutes and ticks a day at a
    time (`build_sessions`): it builds the sessions of them and runs the minute rules. Then
    `daily_engine` (every other rule) takes the session bars, those of the daily files and
    those built (`merged_sessions`; `close_only`: per row of `daily`, whether it is a close
    only), in one batch, as a replay of daily bars does: its rules see the whole history
    once, so their alerts are a daily file's, and what followed them is known. (Day by day,
    every day would evaluate every daily rule over the whole history again, and re-evaluate
    the week under way.) The daily rules' payloads are built a chunk at a time as the Step's
    lines are read, the minute rules' merged in (`MergedLines`)."""
    steps = build_sessions(minute_engine, data, rejected=rejected, now=now)
    sessions, _ = merged_sessions(daily, close_only, minute_engine.daily)
    batch = FeedBatch.empty("replay")
    batch.daily_bars = sessions
    rejected += daily_engine.ingest(batch)
    lines = [step.lines for step in steps if step.lines.height]
    minute = pl.concat(lines).sort(_ORDER) if lines else empty(LINE_SCHEMA)
    daily_step = None
    if not sessions.is_empty():
        last: dt.date = sessions.get_column("session").max()  # type: ignore[assignment]
        session = daily_engine.sessions.on_or_before(last)  # (as replay_steps: see there)
        if session is not None:
            close = daily_engine.sessions.close_of(session)
            daily_step = daily_engine.advance(close, deferred=True)
            steps.append(daily_step)
    firings = [fired for step in steps for fired in step.firings]
    merged = minute if daily_step is None else MergedLines(minute, daily_step)
    return Step(merged, empty(MINUTE_SCHEMA), sessions, [], firings)


_ORDER = LINE_ORDER  # (the order of a step's lines: `Emitted.new`)


class MergedLines:
    """The minute rules' alert lines (`minute`, in order) and those of the daily rules' step,
    in one order, a chunk at a time: each of the step's chunks (built as they are read, about
    40,000 alerts each: see `LineChunks`) with the minute lines up to its last instant. A
    universe's daily history beside a minute file makes hundreds of thousands of alerts; their
    payloads are never all held at once. Iterated once only, as the step's chunks are."""

    def __init__(self, minute: pl.DataFrame, daily: Step) -> None:
        self._minute = minute
        self._daily = daily

    def __iter__(self) -> Iterator[pl.DataFrame]:
        rest = self._minute
        for chunk in self._daily.line_chunks():
            # A chunk holds every alert of its instants, and later chunks later instants.
            last: str = chunk.get_column("ts").max()  # type: ignore[assignment]
            upto = int(rest.get_column("ts").search_sorted(last, "right"))
            if upto:
                chunk = pl.concat([rest.head(upto), chunk]).sort(_ORDER)
                rest = rest.slice(upto)
            yield chunk
        if rest.height:
            yield rest


def merged_sessions(
    daily: pl.DataFrame, close_only: pl.Series, built: pl.DataFrame
) -> tuple[pl.DataFrame, pl.Series]:
    """The daily files' bars (sorted by symbol and session) and the session bars `built` of
    minutes and ticks, one per symbol and session, sorted: a daily file's full bar outranks a
    built one, which outranks a close only (`close_only`: per row of `daily`, whether it is a
    close only, as a stored bar outranks one: see `Store.upsert_bars`). With, per row, where
    it came from: "full", "built" or "close" (a close only).

    Only the symbols of `built` are joined: beside a universe's history (8 million bars) a
    join over every bar took seconds."""
    keys = ["symbol", "session"]
    kind = pl.when("_close").then(pl.lit("close")).otherwise(pl.lit("full")).alias("_kind")
    labelled = daily.with_columns(close_only.alias("_close"))
    mine = pl.col("symbol").is_in(built.get_column("symbol").unique().implode())
    near, far = labelled.filter(mine), labelled.filter(~mine).with_columns(kind)
    full = near.filter(~pl.col("_close")).drop("_close")
    built = built.join(full, on=keys, how="anti")
    closes = near.filter("_close").drop("_close").join(built, on=keys, how="anti")
    parts = [(full, "full"), (built, "built"), (closes, "close")]
    near = pl.concat([part.with_columns(pl.lit(kind).alias("_kind")) for part, kind in parts])
    merged = _inserted(far.drop("_close"), near.sort(keys))
    return merged.drop("_kind"), merged.get_column("_kind")


def _inserted(far: pl.DataFrame, near: pl.DataFrame) -> pl.DataFrame:
    """`far` (sorted by symbol and session) with `near` (sorted, of symbols `far` has none
    of) put in their places: slices of `far` between each symbol of `near`'s rows, not a sort
    of them all (seconds over a universe's history; `merge_sorted` takes a second too)."""
    keys = ["symbol", "session"]
    if not near.height:
        return far
    if not sorted_unique(far, keys):  # (not as its callers give it: sorted, then)
        return pl.concat([far, near]).sort(keys)
    symbols = far.get_column("symbol")
    groups = near.partition_by("symbol", maintain_order=True)
    heads = pl.Series([group.get_column("symbol")[0] for group in groups], dtype=pl.String)
    cuts = symbols.search_sorted(heads, "left").to_list()
    parts, done = [], 0
    for group, cut in zip(groups, cuts, strict=True):
        parts += [far.slice(done, cut - done), group]
        done = cut
    return pl.concat([*parts, far.slice(done)])


def build_sessions(
    engine: Engine, data: IntradayData, *, rejected: list[Rejection], now: dt.datetime
) -> list[Step]:
    """The minutes and ticks of `data` into `engine` a day at a time (`day_step`): its
    `daily` holds the sessions built of them but those whose data looks cut short
    (`monitor.intraday_checks`), and the Steps its rules' alerts."""
    short = cut_short(data.minutes, data.ticks, engine.sessions, now)
    steps = []
    for day, (minutes, ticks) in data.days().items():
        step = day_step(
            engine, day, minutes, ticks, rejected=rejected, now=now, cut=short.get(day, {})
        )
        if step is not None:
            steps.append(step)
    return steps


def day_step(
    engine: Engine,
    day: dt.date,
    minutes: pl.DataFrame,
    ticks: pl.DataFrame,
    *,
    rejected: list[Rejection],
    now: dt.datetime,
    cut: dict[str, str] | None = None,
) -> Step | None:
    """One day: its ticks and minute bars into the engine in one batch, as a daemon whose
    feed sent that day would take them, and the clock moved past its session's close and its
    last tick or bar (and the bar builder's `close_delay`), but never past `now` (the wall
    clock). Its minutes close, its session bar is built of them (regular hours: outside them,
    ticks and bars are rejected and counted, as the daemon's are), and its rules evaluate.
    (Minute by minute, as the daemon steps, a universe's day would take minutes: each step
    evaluates every minute rule.) A day that is no session is refused whole (`not_a_session`,
    a rejection per symbol, its rows counted): None then. A session still under way at `now`
    is not built (`session_not_closed`, a rejection and a count per symbol), nor is one whose
    data looks cut short (`cut`: symbol -> why, see `monitor.intraday_checks`; a rejection and a
    count per symbol, `session_cut_short`): its minute rules run all the same."""
    symbols = pl.concat([minutes.get_column("symbol"), ticks.get_column("symbol")])
    if not engine.sessions.is_session(day):
        _refuse(engine, "not_a_session", day, symbols, rejected, symbols.len())
        return None
    batch = FeedBatch.empty("replay")
    batch.minute_bars, batch.ticks = minutes, ticks
    rejected += engine.ingest(batch)
    close = engine.sessions.close_of(day)
    latest = max(close, batch.data_end() or close) + engine.book.close_delay
    if close + engine.book.close_delay > now:
        _refuse(engine, "session_not_closed", day, symbols, rejected, symbols.n_unique())
    step = engine.advance(min(latest, now))
    engine.take_accepted()  # (what it took in, kept for a journal: a replay has none)
    if cut:  # (their minute rules ran: the minutes are real, the day's bar would not be)
        gone = (pl.col("session") == day) & pl.col("symbol").is_in(list(cut))
        dropped = engine.daily.filter(gone).get_column("symbol").to_list()
        engine.daily = engine.daily.filter(~gone)
        rejected += [Rejection("session_cut_short", symbol, cut[symbol]) for symbol in dropped]
        engine.counts["session_cut_short"] += len(dropped)
    return step


def closed_sessions(
    bars: pl.DataFrame, sessions: Sessions, now: dt.datetime
) -> tuple[pl.DataFrame, list[Rejection]]:
    """Daily `bars` less those of a session still under way at `now` (a file downloaded
    during the session holds the day so far): a rejection each (`session_not_closed`). Taken,
    such a bar would close the session hours early, and an alert say so at its close."""
    if bars.is_empty():
        return bars, []
    # (the usual file, downloaded after its last session's close: one look at its last date,
    # not a close looked up per bar, a tenth of a second over a universe's 8 million)
    last: dt.date | None = bars.get_column("session").max()  # type: ignore[assignment]
    latest = sessions.on_or_before(last) if last is not None else None
    if latest is None or sessions.close_of(latest) <= now:
        return bars, []
    under_way = (sessions.close_of_expr(pl.col("session")) > now).fill_null(False)
    late = bars.filter(under_way)
    if late.is_empty():
        return bars, []
    refused = [
        Rejection("session_not_closed", symbol, str(session))
        for symbol, session in late.select("symbol", "session").iter_rows()
    ]
    return bars.filter(~under_way), refused


def _refuse(
    engine: Engine,
    reason: str,
    day: dt.date,
    symbols: pl.Series,
    rejected: list[Rejection],
    count: int,
) -> None:
    """A rejection per symbol of `symbols` (with repeats) for `reason` on `day` (`raw`:
    the day, and the symbol too for `not_a_session`, as the engine's of daily bars: see
    `replay_command.first_rejected`); `count` counted."""
    for symbol in symbols.unique(maintain_order=True).to_list():
        raw = f"{symbol} {day}" if reason == "not_a_session" else str(day)
        rejected.append(Rejection(reason, symbol, raw))
    engine.counts[reason] += count
