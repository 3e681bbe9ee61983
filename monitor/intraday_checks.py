"""Checks of minute and tick data as a whole, before it is replayed or stored: sessions that
look cut short (`cut_short`), and times that look off by hours (`off_the_clock`).

Sessions cut short: a download that stopped at noon. A session bar built of such minutes
would close at noon's price, and a daily rule fire on it (or `backfill` store it). But a thin
small cap that does not trade after 15:20 is not cut short: its close is its last trade. So
each symbol is judged against itself: its data of a session is cut short when it ends more
than CUT_SHORT before the close (or starts more than CUT_SHORT after the open) while most of
its other sessions in the data run to the close (or start at the open); a symbol with one
session in the data has nothing else to go by, and a day that ends early is taken as cut
short. A symbol halted at noon looks the same as one whose download stopped there, and is
refused too (its rejection says why, and the session is named missing from its history).

Times off by hours: a file of naive UTC times (what pandas writes) is read as New York time,
the file's times of day are then 4 or 5 hours late, and what lies in regular hours is the
wrong part of the day. A US stock trades most at the open and the close: a symbol whose
busiest half hour lies outside regular hours is named, with what to do.

Why apart from `monitor.replay_days`: that module feeds the days to the engine; these look
at all of the data first (a symbol's other sessions, its day as a whole).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from monitor.core.sessions import NEW_YORK, Sessions, new_york_date

CUT_SHORT = dt.timedelta(minutes=30)
_MINUTE = dt.timedelta(minutes=1)


def cut_short(
    minutes: pl.DataFrame, ticks: pl.DataFrame, sessions: Sessions, now: dt.datetime
) -> dict[dt.date, dict[str, str]]:
    """Per session closed by `now`, the symbols whose minute bars (MINUTE_SCHEMA) and ticks
    (TICK_SCHEMA) of its regular hours look cut short (see the module), each with why: `ABC
    2024-12-06: its data ends at 12:00 New York time, 4.0 hours before the close (9 of its
    other 9 sessions run to the close)`."""
    parts = [
        frame.select("symbol", pl.col(at).alias("at"), (pl.col(at) + span).alias("end"))
        for frame, at, span in ((minutes, "start", _MINUTE), (ticks, "ts", dt.timedelta()))
        if frame.height
    ]
    if not parts:
        return {}
    times = pl.concat(parts).with_columns(new_york_date(pl.col("at")).alias("day"))
    days = [
        day
        for day in times.get_column("day").unique().sort().to_list()
        if sessions.is_session(day) and sessions.close_of(day) <= now
    ]
    if not days:
        return {}
    hours = pl.DataFrame(
        {
            "day": days,
            "open": [sessions.open_of(day) for day in days],
            "close": [sessions.close_of(day) for day in days],
        },
        schema_overrides={"open": times.schema["at"], "close": times.schema["at"]},
    )
    at = pl.col("at")
    spans = (
        times.join(hours, on="day")
        .filter((at >= pl.col("open")) & (at < pl.col("close")))
        .group_by("symbol", "day")
        .agg(
            at.min().alias("first"),
            pl.col("end").max().alias("last"),
            pl.col("open").first(),
            pl.col("close").first(),
        )
        .with_columns(
            (pl.col("last") < pl.col("close") - CUT_SHORT).alias("ends_early"),
            (pl.col("first") > pl.col("open") + CUT_SHORT).alias("starts_late"),
            pl.len().over("symbol").alias("n"),
        )
        .with_columns(
            pl.col("ends_early").sum().over("symbol").alias("n_early"),
            pl.col("starts_late").sum().over("symbol").alias("n_late"),
        )
        .filter(pl.col("ends_early") | pl.col("starts_late"))
        .sort("day", "symbol")
    )
    found: dict[dt.date, dict[str, str]] = {}
    for row in spans.iter_rows(named=True):
        why = _why(row)
        if why is not None:
            found.setdefault(row["day"], {})[row["symbol"]] = f"{row['symbol']} {row['day']}: {why}"
    return found


def _why(row: dict[str, object]) -> str | None:
    """Why a symbol's data of a session that ends early or starts late is cut short (None: it
    is not: most of the symbol's other sessions end early, or start late, too)."""
    first, last = row["first"], row["last"]
    opens, closes = row["open"], row["close"]
    assert isinstance(first, dt.datetime) and isinstance(last, dt.datetime)
    assert isinstance(opens, dt.datetime) and isinstance(closes, dt.datetime)
    sides = (
        ("ends_early", "n_early", "run to the close", f"ends at {_clock(last)}, "
         f"{_span(closes - last)} before the close"),
        ("starts_late", "n_late", "start at the open", f"starts at {_clock(first)}, "
         f"{_span(first - opens)} after the open"),
    )  # fmt: skip
    n = int(row["n"])  # type: ignore[call-overload]
    for flag, count, usual, what in sides:
        # (its other sessions: n - 1, of which count - 1 are so too)
        whole = n - int(row[count])  # type: ignore[call-overload]
        if row[flag] and (n == 1 or 2 * whole > n - 1):
            return f"its data {what} ({_basis(n, whole, usual)})"
    return None


def _basis(n: int, whole: int, what: str) -> str:
    if n == 1:
        return "its only session in the data"
    return f"{whole} of its other {n - 1} sessions {what}"


def _clock(instant: dt.datetime) -> str:
    return f"{instant.astimezone(ZoneInfo(NEW_YORK)):%H:%M} New York time"


def _span(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def off_the_clock(minutes: pl.DataFrame, ticks: pl.DataFrame, shown: int = 3) -> list[str]:
    """What to say of the symbols whose minute bars (MINUTE_SCHEMA) and ticks (TICK_SCHEMA)
    trade most, by volume over the whole data (by count where there is none), in a half hour
    outside regular hours (09:30-16:00 New York): their times are likely off by hours. At
    most one line, naming `shown` of them."""
    parts = [
        frame.select("symbol", pl.col(at).alias("at"), pl.col(weight).alias("weight"))
        for frame, at, weight in ((minutes, "start", "volume"), (ticks, "ts", "size"))
        if frame.height
    ]
    if not parts:
        return []
    local = pl.col("at").dt.convert_time_zone(NEW_YORK)
    minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    # (the closing cross, stamped in the close's first minute, 16:00, counts in the last half
    # hour: on an index's rebalance day it is a third of the day's volume)
    minute = pl.when(minute == _CLOSE).then(_CLOSE - 1).otherwise(minute)
    half_hours = (
        pl.concat(parts)
        .with_columns((minute // 30 * 30).alias("from"))
        .group_by("symbol", "from")
        .agg(pl.col("weight").sum(), pl.len().alias("rows"))
    )
    by_weight = half_hours.with_columns(
        pl.when(pl.col("weight").sum().over("symbol") > 0)
        .then(pl.col("weight"))
        .otherwise(pl.col("rows").cast(pl.Float64))
        .alias("weight")
    )
    busiest = (
        by_weight.sort("symbol", "weight", "from", descending=[False, True, False])
        .group_by("symbol", maintain_order=True)
        .first()
        .filter((pl.col("from") < _OPEN) | (pl.col("from") >= _CLOSE))
    )
    if busiest.is_empty():
        return []
    named = [
        f"{symbol} ({start // 60:02d}:{start % 60:02d}-{(start + 30) // 60:02d}:"
        f"{(start + 30) % 60:02d})"
        for symbol, start in busiest.select("symbol", "from").head(shown).iter_rows()
    ]
    more = f" and {busiest.height - shown} more" if busiest.height > shown else ""
    return [
        f"the minute bars or ticks of {', '.join(named)}{more} trade most in a half hour"
        " outside regular hours (09:30-16:00 New York time): are their times off by hours?"
        " Times without an offset are read as New York time; if a file's are UTC, write them"
        " with Z (or their offset)"
    ]


_OPEN, _CLOSE = 9 * 60 + 30, 16 * 60  # (regular hours, in minutes of New York's day)
