"""Replay day by day: minute bars and ticks into the engine as a feed's would come.

`monitor.replay` feeds daily bars a batch of sessions at a time. Minute bars and ticks go a
day at a time (`day_steps`): each day's, with any daily bars of that day, in one batch, then
the simulated clock moved past the day's close and its last bar or tick, so that the engine
closes the minutes, builds the session's bar of them and runs every rule, `1m` rules among
them, as the daemon does over a day of its feed.

Why apart from `monitor.replay`: that module is the daily replay and its summary; this is
only how intraday data is cut into days and timed, for `replay` and `backfill` alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, NamedTuple

import polars as pl

from monitor.core.engine import Engine, Step
from monitor.core.model import FeedBatch, Rejection
from monitor.core.sessions import NEW_YORK


class Intraday(NamedTuple):
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
    return pl.col(column).dt.convert_time_zone(NEW_YORK).dt.date()


def _by_day(frame: pl.DataFrame, day: pl.Expr) -> dict[dt.date, pl.DataFrame]:
    """`frame`'s rows by `day` (an expression of their date), each part in `frame`'s order."""
    if frame.is_empty():
        return {}
    parts = frame.with_columns(day.alias("_day")).partition_by(
        "_day", as_dict=True, maintain_order=True, include_key=False
    )
    return {key[0]: part for key, part in parts.items()}


def day_steps(
    engine: Engine,
    daily: pl.DataFrame,
    minutes: pl.DataFrame,
    ticks: pl.DataFrame,
    *,
    feed: str,
    deferred: bool,
    rejected: list[Rejection] | None,
    now: dt.datetime,
) -> Iterator[Step]:
    """One day's step: its ticks, minute bars and daily bars into the engine in one batch, as
    a daemon whose feed sent that day would take them, and the clock moved past its session's
    close and its last tick or bar (and the bar builder's `close_delay`), but never past `now`
    (the wall clock: a session still under way does not close). Its minutes close, its session
    bar is built of them (regular hours: outside them, ticks and bars are rejected and
    counted, as the daemon's are), and every rule evaluates. (Minute by minute, as the
    daemon steps, a universe's day would take minutes: each step evaluates every minute rule.)"""
    batch = FeedBatch.empty(feed)
    batch.minute_bars, batch.ticks, batch.daily_bars = minutes, ticks, daily
    refused = engine.ingest(batch)
    if rejected is not None:
        rejected += refused
    day = _day_of(daily, minutes, ticks)
    ends = [
        engine.sessions.close_of(day) if engine.sessions.is_session(day) else None,
        _latest(minutes, "start", _MINUTE),
        _latest(ticks, "ts", dt.timedelta()),
    ]
    known = [end for end in ends if end is not None]
    if known:
        yield engine.advance(min(max(known) + engine.book.close_delay, now), deferred=deferred)


def _day_of(daily: pl.DataFrame, minutes: pl.DataFrame, ticks: pl.DataFrame) -> dt.date:
    """The New York date of a day's rows (there is one)."""
    for frame, day in ((daily, pl.col("session")), (minutes, _new_york_day("start"))):
        if not frame.is_empty():
            return frame.select(day.first()).item()  # type: ignore[no-any-return]
    return ticks.select(_new_york_day("ts").first()).item()  # type: ignore[no-any-return]


_MINUTE = dt.timedelta(minutes=1)


def _latest(frame: pl.DataFrame, column: str, span: dt.timedelta) -> dt.datetime | None:
    """The latest `column` of `frame` plus `span` (None: no rows)."""
    latest: dt.datetime | None = frame.get_column(column).max()  # type: ignore[assignment]
    return None if latest is None else latest + span
