"""Minute bars and ticks of the files `replay`, `backfill` and their like are given: which of
the files are minute or tick files (the others are daily), read and checked as a whole
(`read_intraday`): bars and ticks from the future refused, and warnings of the data as a whole
(`monitor.intraday_checks`) said on stderr.

Why apart from `monitor.replay_command`: `backfill` reads its files the same way, and the
command module reads better as the command.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

    import polars as pl

    from monitor.core.model import Rejection
    from monitor.datafiles import DataSpec


class IntradayRead(NamedTuple):
    """Minute bars and ticks read from their files, with what the reading rejected."""

    minutes: pl.DataFrame
    ticks: pl.DataFrame
    counts: dict[str, int]
    rejections: list[Rejection]
    unlisted: int = 0  # (rejected rows counted but not in `rejections`: from the future)


def read_intraday(
    specs: Sequence[DataSpec], *, end: dt.date | None
) -> tuple[list[DataSpec], IntradayRead | None]:
    """The daily files of `specs`, and the minute bars and ticks of the others (None: there
    are none) up to `end`, told apart as the daemon's replay feed tells them
    (`monitor.minutefiles.is_minute_file`): by their columns, and whether their time column
    carries times of day. DataError as the readers'."""
    import polars as pl

    from monitor.core.model import Rejection
    from monitor.minutefiles import is_minute_file, read_minute_files
    from monitor.tickfiles import is_tick_file, read_tick_files

    ticks, minutes, daily = [], [], []
    for spec in specs:
        if is_tick_file(spec.path):
            ticks.append(spec)
        elif is_minute_file(spec.path):
            minutes.append(spec)
        else:
            daily.append(spec)
    if not (ticks or minutes):
        return daily, None
    bars = read_minute_files(minutes, end=end, regular_hours=True)
    trades = read_tick_files(ticks, end=end)
    counts = Counter(bars.counts) + Counter(trades.counts)
    rejections = [*bars.rejections, *trades.rejections]
    # Bars of minutes not over yet and ticks still to come (a typo's year 2200, a clock an
    # hour off) are refused, as the engine refuses them from a feed: `future_bar`, `future_tick`.
    now = dt.datetime.now(dt.UTC)
    kept, unlisted = [], 0
    for frame, at, reason in (
        (bars.bars, pl.col("start") + dt.timedelta(minutes=1), "future_bar"),
        (trades.ticks, pl.col("ts"), "future_tick"),
    ):
        future = frame.filter(at > now)
        kept.append(frame.filter(at <= now) if future.height else frame)
        if future.height:
            counts[reason] += future.height
            rejections += [
                Rejection(reason, symbol, f"{time:%Y-%m-%d %H:%M:%S} UTC")
                for symbol, time in future.select("symbol", at).head(_LISTED).iter_rows()
            ]  # (a file of millions of rows a century late is counted, not listed)
            unlisted += max(0, future.height - _LISTED)
    from monitor.intraday_checks import warnings_of

    for line in warnings_of(kept[0], kept[1], now):  # (times hours off, sessions that start late)
        print(f"market-monitor: warning: {line}", file=sys.stderr)
    return daily, IntradayRead(kept[0], kept[1], dict(counts), rejections, unlisted)


_LISTED = 5  # (rows from the future listed: `first_rejected` names five in all)
