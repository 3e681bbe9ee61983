"""Checks of minute and tick data as a whole, before it is replayed or stored: sessions that
look cut short (`cut_short`), and times that look off by hours (`off_the_clock`).

Sessions cut short: a download that stopped at noon. A session bar built of such minutes
would close at noon's price, and a daily rule fire on it (or `backfill` store it). But a thin
small cap that does not trade after 15:20 is not cut short: its close is its last trade. So a
symbol's data of a session is judged by the pace of that day's own trading: cut short when it
ends more than CUT_SHORT before the close (a closing print in the close's first second, or a
provider's bar of the close's minute, is the close) and a silence that long would be unlikely
(below UNLIKELY) for trades as frequent as its minutes with trades are, over the session and
in the hour before its data ends, whichever is less (trading bunches: a news name's busy
morning, then a quiet afternoon). A stock that trades every minute and stops at noon is cut
short; one with ten trades in the day and none after 14:00 is not. A stock halted at noon
looks the same as a download stopped there, and is refused too (its rejection says why, and
the session is named missing from its history). A late start is not judged: small caps often
open late (an order imbalance, news), and their first trade is then the session's open; a
download is cut at its end.

Times off by hours: a file of naive UTC times (what pandas writes) is read as New York time,
and its times of day are then 4 or 5 hours late (New York times written with `Z`, as many
hours early): what lies in regular hours is the wrong part of the day. A US stock trades most
in regular hours: a symbol that trades over twice as much in regular hours moved 4 or 5
hours either way is named, with what to do (an earnings day's evening or a small cap's busy
pre-market is not that much).

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
UNLIKELY = 1e-6  # (the chance of a silence at the day's pace below which it is a cut)
PACE = dt.timedelta(hours=1)  # (the pace of trading before the data ends: over this)
_MINUTE = dt.timedelta(minutes=1)


def cut_short(
    minutes: pl.DataFrame, ticks: pl.DataFrame, sessions: Sessions, now: dt.datetime
) -> dict[dt.date, dict[str, str]]:
    """Per session closed by `now`, the symbols whose minute bars (MINUTE_SCHEMA) and ticks
    (TICK_SCHEMA) of its regular hours look cut short (see the module), each with why: `ABC
    2024-12-06: its data ends at 12:00 New York time, 4.0 hours before the close, though
    150 of the session's 390 minutes have trades, 60 of the 60 before it ends`."""
    times = _regular_times(minutes, ticks, sessions, now)
    if times is None:
        return {}
    minute = pl.col("at").dt.truncate("1m")
    last = pl.col("end").max().over("symbol", "day")
    recent = pl.col("at") >= pl.max_horizontal(pl.col("last") - PACE, pl.col("open"))
    spans = (
        times.with_columns(last.alias("last"))
        .group_by("symbol", "day")
        .agg(
            pl.col("last").first(),
            minute.n_unique().alias("active"),
            minute.filter(recent).n_unique().alias("lately"),
            pl.col("open").first(),
            pl.col("close").first(),
        )
        .with_columns(
            (pl.col("close") - pl.col("open")).dt.total_minutes().alias("length"),
            _minutes_between("open", "last").clip(1.0, PACE.total_seconds() / 60).alias("span"),
            _minutes_between("last", "close").alias("ends"),
        )
    )
    # The chance of no trade in `ends` minutes when a share of the minutes have trades:
    # (1 - share) ** ends, at the lesser pace of the session's and of the hour before the data
    # ends (trading bunches: a busy morning, then a quiet afternoon).
    share = pl.min_horizontal(
        pl.col("active") / pl.col("length"), pl.col("lately") / pl.col("span")
    ).clip(0.0, 1.0)
    short = CUT_SHORT.total_seconds() / 60
    silent = (pl.col("ends") > short) & ((1.0 - share).pow(pl.col("ends")) < UNLIKELY)
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


def _minutes_between(earlier: str, later: str) -> pl.Expr:
    return (pl.col(later) - pl.col(earlier)).dt.total_seconds(fractional=True) / 60


def _why(row: dict[str, object]) -> str:
    """Why a symbol's data of a session is cut short (`cut_short`'s row of it)."""
    last = row["last"]
    assert isinstance(last, dt.datetime)
    gap = _span(dt.timedelta(minutes=float(row["ends"])))  # type: ignore[arg-type]
    pace = (
        f"though {row['active']} of the session's {row['length']} minutes have trades,"
        f" {row['lately']} of the {round(float(row['span']))} before it ends"  # type: ignore[arg-type]
    )
    return f"its data ends at {_clock(last)}, {gap} before the close, {pace}"


def _clock(instant: dt.datetime) -> str:
    return f"{instant.astimezone(ZoneInfo(NEW_YORK)):%H:%M} New York time"


def _span(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"


def off_the_clock(minutes: pl.DataFrame, ticks: pl.DataFrame, shown: int = 3) -> list[str]:
    """What to say of the symbols whose minute bars (MINUTE_SCHEMA) and ticks (TICK_SCHEMA)
    have over SHIFTED times the volume (over the whole data; rows where there is none) in
    regular hours (09:30-16:00 New York) moved 4 or 5 hours later (naive UTC times read as New
    York's) or earlier (New York times written as UTC) as in regular hours: their times are
    likely off by hours. An earnings day's evening or a gapper's morning is not that much.
    At most one line, naming `shown` of them."""
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
    # (the closing cross, stamped in the close's first minute, is the close's)
    m, w = pl.col("minute"), pl.col("w")
    windows = [
        w.filter(m.is_between(_OPEN + 60 * h, _CLOSE + 60 * h)).sum().alias(str(h))
        for h in _HOURS_OFF
    ]
    rows = pl.concat(parts).with_columns(minute.alias("minute"), weight.alias("w"))
    sums = rows.group_by("symbol").agg(*windows)
    off = [str(h) for h in _HOURS_OFF if h]
    best = sums.with_columns(
        pl.max_horizontal(off).alias("best"),
        pl.concat_list(off).list.arg_max().alias("at"),
    )
    named = best.filter(pl.col("best") > SHIFTED * pl.col("0")).sort("symbol")
    if named.is_empty():
        return []
    said = [
        f"{symbol} ({_window(_HOURS_OFF[1:][at])})"
        for symbol, at in named.select("symbol", "at").head(shown).iter_rows()
    ]
    more = f" and {named.height - shown} more" if named.height > shown else ""
    return [
        f"{', '.join(said)}{more}: the minute bars or ticks of these trade over {SHIFTED:g}"
        " times as much in those hours (New York time) as in regular hours (09:30-16:00): are"
        " their times off by hours? A time without an offset is read as New York time, one"
        " with an offset as the instant it says: UTC times need Z (pandas writes them"
        " without), New York times none (or -05:00, -04:00)"
    ]


def _window(hours: int) -> str:
    """Regular hours moved by `hours`, as New York times: `14:30-21:00`."""
    first, last = _OPEN + 60 * hours, _CLOSE + 60 * hours
    return f"{first // 60:02d}:{first % 60:02d}-{last // 60:02d}:{last % 60:02d}"


SHIFTED = 2  # (times as much volume in regular hours moved by hours: times look off)
_HOURS_OFF = (0, 4, 5, -4, -5)  # (regular hours, then moved by New York's UTC offsets)
_OPEN, _CLOSE = 9 * 60 + 30, 16 * 60  # (regular hours, in minutes of New York's day)
