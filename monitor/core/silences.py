"""Whether a symbol's data of a session looks cut short (a download that stopped at noon, a
feed down through the close) or starts late: the silence at one end of its trading, judged at
the pace of that day's own trading.

A session bar built of data cut short would close at noon's price, and a daily rule fire on
it. But a thin small cap that does not trade after 15:20 is not cut short: its close is its
last trade. So a symbol's data of a session is cut short when it ends more than CUT_SHORT
before the close (a closing print in the close's first second, or a provider's bar of the
close's minute, is the close) and a silence that long would be unlikely (below UNLIKELY) for
trades as frequent as its minutes with trades are, over the session and in the hour (PACE)
before its data ends, whichever is less (trading bunches: a news name's busy morning, then a
quiet afternoon).

Why in the core: the bar builder holds back the session bars of such data at the close (the
daemon's feed down through it: `monitor.core.closed_minutes`), and `replay` and `backfill`
refuse them in files (`monitor.intraday_checks`); both judge by this one test, each over the
data it has (the bar builder over the regular-hours minutes it keeps: a provider's bar of the
minute after the close, which it takes as post-market, does not reach the close there).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from monitor.core.sessions import NEW_YORK

CUT_SHORT = dt.timedelta(minutes=30)
UNLIKELY = 1e-6  # (the chance of a silence at the day's pace below which it is a cut)
PACE = dt.timedelta(hours=1)  # (the pace of trading before the data ends: over this)


def cut_short_in(times: pl.DataFrame) -> dict[dt.date, dict[str, str]]:
    """Per session (`day`) of `times` (see `silences`), the symbols whose data looks cut short,
    each with why: `ABC 2024-12-06: its data ends at 12:00 New York time, 4.0 hours before
    the close, though 150 of the session's 390 minutes have trades, 60 of the 60 before it
    ends`."""
    found: dict[dt.date, dict[str, str]] = {}
    spans = silences(times, at_end=True).filter("silent").sort("day", "symbol")
    for row in spans.iter_rows(named=True):
        found.setdefault(row["day"], {})[row["symbol"]] = (
            f"{row['symbol']} {row['day']}: {_why(row)}"
        )
    return found


def silences(times: pl.DataFrame, *, at_end: bool) -> pl.DataFrame:
    """Per symbol and session of `times`: where its data ends (`at_end`: the last
    bar's end or tick) or starts (its first), `edge`; the minutes with trades, `active`, of
    the session's `length`; those within PACE of the edge, `near`, of the `span` minutes they
    are of; the minutes from the edge to the close (or from the open to it), `gap`; and
    `silent`, whether a gap of more than CUT_SHORT is unlikely (below UNLIKELY) at the lesser
    pace of the session and near the edge: the chance of no trade in `gap` minutes when a
    share of the minutes have trades is (1 - share) ** gap. (Trading bunches: a news name's
    busy morning, then a quiet afternoon, is judged at the afternoon's pace.)"""
    minute = pl.col("at").dt.truncate("1m")
    edge, opens, closes = pl.col("edge"), pl.col("open"), pl.col("close")
    if at_end:
        ends = pl.col("end").max()
        near = pl.col("at") >= pl.max_horizontal(edge - PACE, opens)
        span, gap = _minutes_between("open", "edge"), _minutes_between("edge", "close")
    else:
        ends = pl.col("at").min()
        near = pl.col("at") < edge + PACE
        span, gap = _minutes_between("edge", "close"), _minutes_between("open", "edge")
    spans = (
        times.with_columns(ends.over("symbol", "day").alias("edge"))
        .group_by("symbol", "day")
        .agg(
            edge.first(),
            minute.n_unique().alias("active"),
            minute.filter(near).n_unique().alias("near"),
            opens.first(),
            closes.first(),
        )
        .with_columns(
            (closes - opens).dt.total_minutes().alias("length"),
            span.clip(1.0, PACE.total_seconds() / 60).alias("span"),
            gap.alias("gap"),
        )
    )
    share = pl.min_horizontal(
        pl.col("active") / pl.col("length"), pl.col("near") / pl.col("span")
    ).clip(0.0, 1.0)
    short = CUT_SHORT.total_seconds() / 60
    silent = (pl.col("gap") > short) & ((1.0 - share).pow(pl.col("gap")) < UNLIKELY)
    return spans.with_columns(silent.alias("silent"))


def _minutes_between(earlier: str, later: str) -> pl.Expr:
    return (pl.col(later) - pl.col(earlier)).dt.total_seconds(fractional=True) / 60


def _why(row: dict[str, object]) -> str:
    """Why a symbol's data of a session is cut short (`silences`' row of it)."""
    last = row["edge"]
    assert isinstance(last, dt.datetime)
    gap = _span(dt.timedelta(minutes=float(row["gap"])))  # type: ignore[arg-type]
    span = round(float(row["span"]))  # type: ignore[arg-type]
    pace = (
        f"though {row['active']} of the session's {row['length']} minutes have trades,"
        f" {min(int(row['near']), span)} of the {span} before it ends"  # type: ignore[call-overload]
    )
    return f"its data ends at {clock(last)}, {gap} before the close, {pace}"


def clock(instant: dt.datetime) -> str:
    return f"{instant.astimezone(ZoneInfo(NEW_YORK)):%H:%M} New York time"


def _span(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"
