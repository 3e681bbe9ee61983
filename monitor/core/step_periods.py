"""Which closed periods one `Engine.advance` evaluates, and over which bars.

Two questions of a step's new bars against what was evaluated before: which timeframes' last
evaluated period got bars again (`late_periods`: evaluated again, as new), and how the minutes
it closes are taken in (`minute_batches`: a minute at a time, as steps a minute apart take
them, so that a minute rule's memory does not depend on how minutes were batched).

Why apart from `monitor.core.engine`: the engine holds the bars and the watermarks and decides
when to evaluate; these are functions of a step's bars and of the instants evaluated last, and
the engine reads better as what happens when.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from monitor.core.sessions import NEW_YORK, Sessions

NEW_YORK_ZONE = ZoneInfo(NEW_YORK)
MINUTE = dt.timedelta(minutes=1)


def late_periods(
    evaluated: dict[str, dt.datetime],
    minute_bars: pl.DataFrame,
    daily: pl.DataFrame,
    sessions: Sessions,
) -> set[str]:
    """The timeframes whose last evaluated period (`evaluated`, by timeframe) got bars in this
    step: bars of one period come in several batches (a feed's daily bars symbol by symbol, a
    second or a minute apart), and the firings the late ones make are as new as the first
    ones'. Those periods are evaluated again (an alert emitted already is not emitted twice).
    Bars of earlier periods are corrections: stored, they fire nothing."""
    late: set[str] = set()
    minute = evaluated.get("1m")
    if minute is not None and minute_bars.height:
        ends = minute_bars.get_column("start") + MINUTE
        if (ends == minute).any():
            late.add("1m")
    day, week = evaluated.get("1d"), evaluated.get("1w")
    if not daily.height or (day is None and week is None):
        return late
    days = daily.get_column("session")  # (a session closes on its own date)
    if day is not None and (days == exchange_date(day)).any():
        late.add("1d")
    if week is not None:  # (bars of its days, or of a later day: see `Engine.weekly`)
        label = exchange_date(week)
        weeks = sessions.frame.filter(pl.col("session").is_in(days.unique().implode()))
        if (weeks.get_column("week") >= label).any():
            late.add("1w")
    return late


# At most this many minutes of one step are evaluated a minute at a time, the step's last
# ones: a longer backlog's earlier minutes go in at once with the first of them. A minute of
# 2,000 symbols x 780 minutes held costs up to 0.7 s on 2 cores: a step stays near 10 s,
# inside the health check's and systemd's watchdog's 30 s (a daemon restarted mid-step meets
# the same backlog). The cost grows with the minute bars held (a longer `minute_history`,
# more symbols): fewer minutes apart then, so that minutes x bars held stay within
# MINUTE_BARS_A_STEP (see `minutes_apart`).
MINUTES_APART = 15
MINUTE_BARS_A_STEP = MINUTES_APART * 2_000 * 780


def minutes_apart(held: int, most: int = MINUTES_APART) -> int:
    """How many of a step's minutes to evaluate a minute at a time with `held` minute bars
    held: `most`, fewer past MINUTE_BARS_A_STEP, one at least."""
    return max(1, min(most, MINUTE_BARS_A_STEP // max(held, 1)))


def minute_batches(
    bars: pl.DataFrame,
    evaluated: dt.datetime | None,
    watermark: dt.datetime | None,
    most: int = MINUTES_APART,
    held: int = 0,
) -> list[pl.DataFrame]:
    """A step's closed minute bars (sorted by symbol and start) as steps a minute apart take
    them: a batch per minute not evaluated yet, in time order, the first with the bars of the
    minutes before it (corrections of minutes evaluated, late bars of the last one, which
    came with it). A minute is not evaluated yet when it ends after `evaluated` (the last
    minute evaluated) and not before the minute `watermark`: an earlier one fires nothing
    when evaluated alone, and stored with the first batch it leaves the same bars behind
    (each symbol's last `minute_history` of them all). One batch when at most one minute is
    new (the daemon's usual step). At most `most` batches, fewer with many minute bars
    `held` (`minutes_apart`; the engine's held and the step's, an upper bound of the bars an
    evaluation runs over): past them, the earlier new minutes go with the first batch (a
    long backlog's memory is then a batch's, up to its last minutes)."""
    end = pl.col("start") + MINUTE
    new = pl.lit(True)
    if evaluated is not None:
        new &= end > evaluated
    if watermark is not None:
        new &= end >= watermark
    starts = bars.filter(new).get_column("start").unique().sort()
    if starts.len() < 2:
        return [bars]
    starts = starts.tail(minutes_apart(held, most))  # (the earlier go with the first of these)
    first = starts[0]
    later = bars.filter(pl.col("start") > first).partition_by("start", as_dict=True)
    return [bars.filter(pl.col("start") <= first), *(later[(s,)] for s in starts.slice(1))]


def exchange_date(instant: dt.datetime) -> dt.date:
    """The exchange's date of an instant (a period's close: its session's, or its week's)."""
    return instant.astimezone(NEW_YORK_ZONE).date()
