"""Checks of minute and tick data as a whole, before it is replayed or stored: sessions that
look cut short (`cut_short`), and times that look off by hours (`off_the_clock`).

Sessions cut short: a download that stopped at noon. A session bar built of such minutes
would close at noon's price, and a daily rule fire on it (or `backfill` store it). But a thin
small cap that does not trade after 15:20 is not cut short: its close is its last trade. So a
symbol's data of a session is judged by the pace of that day's own trading: cut short when it
ends more than CUT_SHORT before the close (a closing print in the close's first second, or a
provider's bar of the close's minute, is the close) and a silence that long would be unlikely
(below UNLIKELY) for trades as frequent as its minutes with trades are over the whole session.
A stock that trades every minute and stops at noon is cut short; one with ten trades in the
day and none after 14:00 is not. A stock halted at noon looks the same as a download stopped
there, and is refused too (its rejection says why, and the session is named missing from its
history). A late start is not judged: small caps often open late (an order imbalance, news),
and their first trade is then the session's open; a download is cut at its end.

Times off by hours: a file of naive UTC times (what pandas writes) is read as New York time,
and its times of day are then 4 or 5 hours late (New York times written with `Z`, as many
hours early): what lies in regular hours is the wrong part of the day. A US stock trades most
in regular hours: a symbol with over a third of its volume outside them is named, with what
to do.

Why apart from `monitor.replay_days`: that module feeds the days to the engine; these look at
all of the data first.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from monitor.core.sessions import NEW_YORK, Sessions, new_york_date

CUT_SHORT = dt.timedelta(minutes=30)
_CLOSING_PRINT = dt.timedelta(seconds=1)  # (as the bar book takes it: `monitor.core.bars`)
UNLIKELY = 1e-3  # (the chance of a silence at the day's pace below which it is a cut)
_MINUTE = dt.timedelta(minutes=1)


def cut_short(
    minutes: pl.DataFrame, ticks: pl.DataFrame, sessions: Sessions, now: dt.datetime
) -> dict[dt.date, dict[str, str]]:
    """Per session closed by `now`, the symbols whose minute bars (MINUTE_SCHEMA) and ticks
    (TICK_SCHEMA) of its regular hours look cut short (see the module), each with why: `ABC
    2024-12-06: its data ends at 12:00 New York time, 4.0 hours before the close, though
    150 of the session's 390 minutes have trades`."""
    times = _regular_times(minutes, ticks, sessions, now)
    if times is None:
        return {}
    minute = pl.col("at").dt.truncate("1m")
    length = (pl.col("close") - pl.col("open")).dt.total_minutes()
    spans = (
        times.group_by("symbol", "day")
        .agg(
            pl.col("end").max().alias("last"),
            minute.n_unique().alias("active"),
            pl.col("open").first(),
            pl.col("close").first(),
        )
        .with_columns(
            length.alias("length"),
            (pl.col("close") - pl.col("last")).dt.total_minutes().alias("ends"),
        )
    )
    # The chance of no trade in `gap` minutes when a share `active / length` of the minutes
    # have trades: (1 - share) ** gap.
    share = (pl.col("active") / pl.col("length")).clip(0.0, 1.0)
    short = CUT_SHORT.total_seconds() // 60
    silent = (pl.col("ends") >= short) & ((1.0 - share).pow(pl.col("ends")) < UNLIKELY)
    found: dict[dt.date, dict[str, str]] = {}
    for row in spans.filter(silent).sort("day", "symbol").iter_rows(named=True):
        found.setdefault(row["day"], {})[row["symbol"]] = (
            f"{row['symbol']} {row['day']}: {_why(row)}"
        )
    return found


def _regular_times(
    minutes: pl.DataFrame, ticks: pl.DataFrame, sessions: Sessions, now: dt.datetime
) -> pl.DataFrame | None:
    """symbol, day, at (a minute bar's start or a tick's time), end (a bar's end, a tick's
    time), open and close of the day's session: the minute bars and ticks of the regular
    hours of sessions closed by `now` (None: there are none)."""
    parts = [
        frame.select("symbol", pl.col(at).alias("at"), (pl.col(at) + span).alias("end"))
        for frame, at, span in ((minutes, "start", _MINUTE), (ticks, "ts", dt.timedelta()))
        if frame.height
    ]
    if not parts:
        return None
    times = pl.concat(parts).with_columns(new_york_date(pl.col("at")).alias("day"))
    days = [
        day
        for day in times.get_column("day").unique().sort().to_list()
        if sessions.is_session(day) and sessions.close_of(day) <= now
    ]
    if not days:
        return None
    zone = times.schema["at"]
    hours = pl.DataFrame(
        {
            "day": days,
            "open": [sessions.open_of(day) for day in days],
            "close": [sessions.close_of(day) for day in days],
        },
        schema_overrides={"open": zone, "close": zone},
    )
    at = pl.col("at")  # (with the closing print, in the close's first second)
    regular = (at >= pl.col("open")) & (at < pl.col("close") + _CLOSING_PRINT)
    return times.join(hours, on="day").filter(regular)


def _why(row: dict[str, object]) -> str:
    """Why a symbol's data of a session is cut short (`cut_short`'s row of it)."""
    last = row["last"]
    assert isinstance(last, dt.datetime)
    gap = _span(dt.timedelta(minutes=int(row["ends"])))  # type: ignore[call-overload]
    pace = f"though {row['active']} of the session's {row['length']} minutes have trades"
    return f"its data ends at {_clock(last)}, {gap} before the close, {pace}"


def _clock(instant: dt.datetime) -> str:
    return f"{instant.astimezone(ZoneInfo(NEW_YORK)):%H:%M} New York time"


def _span(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def off_the_clock(minutes: pl.DataFrame, ticks: pl.DataFrame, shown: int = 3) -> list[str]:
    """What to say of the symbols with over OFF_HOURS of their minute bars' (MINUTE_SCHEMA)
    and ticks' (TICK_SCHEMA) volume outside regular hours (09:30-16:00 New York; by count
    where there is no volume) over the whole data: their times are likely off by hours. At
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
    # (the closing cross, stamped in the close's first minute, is the close's: on an index's
    # rebalance day it is a third of the day's volume)
    outside = (minute < _OPEN) | (minute > _CLOSE)
    weight = pl.col("weight")
    shares = (
        pl.concat(parts)
        .group_by("symbol")
        .agg(
            pl.when(weight.sum() > 0)
            .then(weight.filter(outside).sum() / weight.sum())
            .otherwise(outside.mean())
            .alias("outside")
        )
        .filter(pl.col("outside") > OFF_HOURS)
        .sort("symbol")
    )
    if shares.is_empty():
        return []
    named = [
        f"{symbol} ({share:.0%})"
        for symbol, share in shares.select("symbol", "outside").head(shown).iter_rows()
    ]
    more = f" and {shares.height - shown} more" if shares.height > shown else ""
    return [
        f"{', '.join(named)}{more}: that share of the volume of their minute bars or ticks lies"
        " outside regular hours (09:30-16:00 New York time): are their times off by hours?"
        " A time without an offset is read as New York time, one with an offset as the"
        " instant it says: UTC times need Z (pandas writes them without), New York times"
        " none (or -05:00, -04:00)"
    ]


OFF_HOURS = 1 / 3  # (of a symbol's volume outside regular hours: its times look off)
_OPEN, _CLOSE = 9 * 60 + 30, 16 * 60  # (regular hours, in minutes of New York's day)
