"""Checks of minute and tick data as a whole, before it is replayed or stored: sessions that
look cut short (`cut_short`), times that look off by hours (`off_the_clock`), and minute bars
that look stamped at their end (`stamped_at_end`).

Sessions cut short: a download that stopped at noon, whose session bar would close at noon's
price (the test, shared with the daemon's bar builder: `monitor.core.silences`). A stock halted
at noon looks the same as a download stopped there, and is refused too (its rejection says why,
and the session is named missing from its history). A late start is not judged: small caps
often open late (an order imbalance, news), and their first trade is then the session's open;
a download is cut at its end (`late_starts` only warns).

Times off by hours: a file of naive UTC times (what pandas writes) is read as New York time,
and its times of day are then 4 or 5 hours late (New York times written with `Z`, as many
hours early): what lies in regular hours is the wrong part of the day. A US stock trades most
in regular hours: a symbol that trades as if regular hours were 4 or 5 hours later or earlier
(over twice as much in the hours the moved window adds as in those it leaves) is named, with
what to do (an earnings day's evening or a small cap's busy pre-market is not that much).

Minute bars stamped at their end: a minute bar's time is its first instant (Alpaca's, Polygon's
and the daemon's bars are so stamped); some vendors stamp a bar with its end, 09:31 for the
09:30-09:31 bar. Read as starts, each bar is a minute late: the open's bar is taken for 09:31's,
and the session's last, stamped 16:00 (13:00 on an early close), is outside the session and
rejected, so the session bar closes on the 15:58 bar's close. Regular-hours data so stamped has
a bar at the close on most sessions and none at the open, which start-stamped data never has
(with extended hours there are both, and nothing is said).

Why apart from `monitor.replay_days`: that module feeds the days to the engine; these look at
all of the data first.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.bars import CLOSING_PRINT
from monitor.core.sessions import NEW_YORK, Sessions, new_york_date
from monitor.core.silences import CUT_SHORT, clock, cut_short_in, silences

_MINUTE = dt.timedelta(minutes=1)


def warnings_of(minutes: pl.DataFrame, ticks: pl.DataFrame, now: dt.datetime) -> list[str]:
    """The warnings of minute bars (MINUTE_SCHEMA) and ticks (TICK_SCHEMA) as a whole that
    refuse nothing (`off_the_clock`, `late_starts`), for a command's stderr."""
    from monitor.calendar import nyse_sessions
    from monitor.replay_days import IntradayData  # (it imports this module)

    lines = off_the_clock(minutes, ticks)
    data = IntradayData(minutes, ticks)
    if not data.is_empty():
        sessions = nyse_sessions(data.first_day(), data.last_day())
        lines += stamped_at_end(minutes, sessions)
        lines += late_starts(minutes, ticks, sessions, now)
    return lines


def stamped_at_end(minutes: pl.DataFrame, sessions: Sessions, shown: int = 3) -> list[str]:
    """What to say of the symbols whose minute bars (MINUTE_SCHEMA) start at their session's
    close (16:00, 13:00 on an early close) on at least half of their sessions and at its open
    on none: bars stamped at their end (see the module). At most one line, naming `shown`."""
    if minutes.is_empty():
        return []
    zone = minutes.schema["start"]
    hours = sessions.frame.select(
        pl.col("session").alias("day"), pl.col("open_ts").cast(zone), pl.col("close_ts").cast(zone)
    )
    bars = minutes.select("symbol", "start", new_york_date(pl.col("start")).alias("day"))
    start = pl.col("start")
    per_day = (
        bars.join(hours, on="day")
        .group_by("symbol", "day")
        .agg(
            (start == pl.col("open_ts")).any().alias("at_open"),
            (start == pl.col("close_ts")).any().alias("at_close"),
        )
    )
    found = (
        per_day.group_by("symbol")
        .agg(pl.len().alias("days"), pl.col("at_open").sum(), pl.col("at_close").sum())
        .filter((pl.col("at_open") == 0) & (pl.col("at_close") * 2 >= pl.col("days")))
        .sort("symbol")
    )
    if found.is_empty():
        return []
    named = [
        f"{symbol} ({at_close} of {days} sessions)"
        for symbol, days, at_close in found.select("symbol", "days", "at_close").head(shown).rows()
    ]
    more = f" and {found.height - shown} more" if found.height > shown else ""
    return [
        f"{', '.join(named)}{more}: the minute bars of these start at the close (16:00 New"
        " York time, 13:00 on an early close) and never at the open (09:30): are they stamped"
        " at their end? A minute bar's time is its first instant (09:30 for 09:30:00-09:30:59);"
        " read so, each of these is a minute late and the session's last, at the close, is"
        " rejected as outside_session: write each bar's start"
    ]


def cut_short(
    minutes: pl.DataFrame, ticks: pl.DataFrame, sessions: Sessions, now: dt.datetime
) -> dict[dt.date, dict[str, str]]:
    """Per session closed by `now`, the symbols whose minute bars (MINUTE_SCHEMA) and ticks
    (TICK_SCHEMA) of its regular hours look cut short (see the module), each with why: `ABC
    2024-12-06: its data ends at 12:00 New York time, 4.0 hours before the close, though
    150 of the session's 390 minutes have trades, 60 of the 60 before it ends`."""
    times = _regular_times(minutes, ticks, sessions, now)
    return {} if times is None else cut_short_in(times)


def late_starts(
    minutes: pl.DataFrame,
    ticks: pl.DataFrame,
    sessions: Sessions,
    now: dt.datetime,
    shown: int = 3,
) -> list[str]:
    """What to say of the sessions whose minute bars (MINUTE_SCHEMA) and ticks (TICK_SCHEMA)
    of a symbol start more than CUT_SHORT after the open though trades follow often (the
    mirror of `cut_short`'s test, at the lesser pace of the session and of the hour after the
    start): a late open (an order imbalance, news, an IPO's first day), or data that starts
    late. Not refused: a late open's first trade is the session's open. At most one line,
    naming `shown` of them."""
    times = _regular_times(minutes, ticks, sessions, now)
    if times is None:
        return []
    spans = silences(times, at_end=False)
    found = spans.filter("silent").sort("day", "symbol")
    if found.is_empty():
        return []
    named = [
        f"{symbol} {day} (from {clock(first)})"
        for symbol, day, first in found.select("symbol", "day", "edge").head(shown).iter_rows()
    ]
    more = f" and {found.height - shown} more" if found.height > shown else ""
    return [
        f"{', '.join(named)}{more}: the data of these sessions starts over"
        f" {CUT_SHORT.total_seconds() / 60:.0f} minutes after the open, though they trade"
        " often after: a late open (an order imbalance, news, an IPO's first day) or data that"
        " starts late; each session is built from its first trade"
    ]


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
    regular = (at >= pl.col("open")) & (at < pl.col("close") + CLOSING_PRINT)
    return times.join(hours, on="day").filter(regular)


def off_the_clock(minutes: pl.DataFrame, ticks: pl.DataFrame, shown: int = 3) -> list[str]:
    """What to say of the symbols whose minute bars (MINUTE_SCHEMA) and ticks (TICK_SCHEMA)
    trade (by volume over the whole data; by rows where there is none) as if regular hours
    (09:30-16:00 New York) were 4 or 5 hours later (naive UTC times read as New York's) or
    earlier (New York times written as UTC): over SHIFTED times as much in the hours the
    moved window adds as in the hours it leaves (for 4 hours later: 16:00-20:00 against
    09:30-13:30; the hours both share say nothing). An earnings day's evening or a gapper's
    morning is not that much. At most one line, naming `shown` of them."""
    parts = [
        frame.select("symbol", pl.col(at).alias("at"), pl.col(weight).alias("weight"))
        for frame, at, weight in ((minutes, "start", "volume"), (ticks, "ts", "size"))
        if frame.height
    ]
    if not parts:
        return []
    local = pl.col("at").dt.convert_time_zone(NEW_YORK)
    minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    weight = pl.when(pl.col("weight").sum().over("symbol") > 0).then("weight").otherwise(1.0)
    rows = pl.concat(parts).with_columns(minute.alias("minute"), weight.alias("w"))
    m, w = pl.col("minute"), pl.col("w")
    # The closing cross, stamped in the close's first minute, is the close's: regular hours
    # are 09:30 to 16:00 inclusive, and a window moved by h hours is the same span moved.
    gained, left = [], []
    for h in _HOURS_OFF:
        if h > 0:  # (later: it adds the evening, leaves the morning)
            adds, leaves = (_CLOSE + 1, _CLOSE + 60 * h), (_OPEN, _OPEN + 60 * h - 1)
        else:  # (earlier: it adds the early morning, leaves the afternoon)
            adds, leaves = (_OPEN + 60 * h, _OPEN - 1), (_CLOSE + 60 * h + 1, _CLOSE)
        gained.append(w.filter(m.is_between(*adds)).sum().alias(f"adds{h}"))
        left.append(w.filter(m.is_between(*leaves)).sum().alias(f"leaves{h}"))
    sums = rows.group_by("symbol").agg(*gained, *left)
    ratios = [
        (pl.col(f"adds{h}") / pl.col(f"leaves{h}").clip(lower_bound=1e-9)).alias(str(h))
        for h in _HOURS_OFF
    ]
    best = sums.select(
        "symbol",
        pl.max_horizontal(ratios).alias("best"),
        pl.concat_list(ratios).list.arg_max().alias("at"),
    )
    named = best.filter(pl.col("best") > SHIFTED).sort("symbol")
    if named.is_empty():
        return []
    said = [
        f"{symbol} (as if at {_window(_HOURS_OFF[at])})"
        for symbol, at in named.select("symbol", "at").head(shown).iter_rows()
    ]
    more = f" and {named.height - shown} more" if named.height > shown else ""
    return [
        f"{', '.join(said)}{more}: the minute bars or ticks of these trade as if regular hours"
        " (09:30-16:00 New York time) were at those hours: are their times off by hours? A"
        " time without an offset is read as New York time, one with an offset as the instant"
        " it says: UTC times need Z (pandas writes them without), New York times none (or"
        " -05:00, -04:00)"
    ]


def outside_hours(starts: pl.Series) -> str | None:
    """Why a minute file whose bars start at `starts` (UTC) gives `replay` and `backfill`
    nothing, for its DataError: it has bars on sessions and none within their regular hours
    (each would be rejected as `outside_session`). A daily file stamped at an hour of its own,
    taken for minute bars by its several times of day, says so; None for a file with a bar in
    regular hours, or none on a session."""
    from monitor.calendar import nyse_sessions

    starts = starts.drop_nulls()
    if starts.is_empty():
        return None
    local = starts.dt.convert_time_zone(NEW_YORK)
    first, last = local.dt.date().min(), local.dt.date().max()
    assert isinstance(first, dt.date) and isinstance(last, dt.date)
    hours = nyse_sessions(first, last).frame.select("session", "open_ts", "close_ts")
    bars = pl.DataFrame({"start": starts, "session": local.dt.date()}).join(hours, on="session")
    start = pl.col("start")
    regular = (start >= pl.col("open_ts")) & (start < pl.col("close_ts"))
    if bars.is_empty() or bars.select(regular.any()).item():
        return None
    times = [f"{t:%H:%M}" for t in local.dt.time().unique().sort().to_list()]
    shown = ", ".join(times[:_TIMES_SHOWN]) + (", ..." if len(times) > _TIMES_SHOWN else "")
    return (
        f"read as minute bars (its times of day, New York time, are {shown}), but none"
        f" of its {bars.height:,} bars on sessions is within their regular hours (from the open"
        " to the close): each would be rejected as outside_session. If it holds daily bars,"
        " write its dates alone (YYYY-MM-DD), or stamp each at midnight or its session's close"
    )


_TIMES_SHOWN = 3  # (the times of day of a file taken for minute bars by them)


def _window(hours: int) -> str:
    """Regular hours moved by `hours`, as New York times: `14:30-21:00`."""
    first, last = _OPEN + 60 * hours, _CLOSE + 60 * hours
    return f"{first // 60:02d}:{first % 60:02d}-{last // 60:02d}:{last % 60:02d}"


SHIFTED = 2  # (times as much volume where regular hours moved by hours add as where they leave)
_HOURS_OFF = (4, 5, -4, -5)  # (New York's UTC offsets, either way)
_OPEN, _CLOSE = 9 * 60 + 30, 16 * 60  # (regular hours, in minutes of New York's day)
