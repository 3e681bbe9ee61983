"""Exchange sessions and trading weeks, from an exchange-calendars calendar passed in.

A *session* is an exchange date (America/New_York) with an open and a close instant in UTC; early
closes and holidays come from the calendar. A *trading week* is the sessions of one calendar week
(Monday to Friday), labelled by its last session; a week with fewer than five sessions is a normal
week, flagged `short`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from monitor.core.model import TS

NEW_YORK = "America/New_York"
TABLE_SCHEMA: dict[str, pl.DataType] = {"session": pl.Date(), "open_ts": TS, "close_ts": TS}


class Sessions:
    """Session dates, open/close instants and week labels of one exchange calendar.

    `calendar` is an `exchange_calendars.ExchangeCalendar` (e.g. XNYS); it is read once here.
    """

    def __init__(self, calendar: Any) -> None:
        sched = calendar.schedule
        sessions: list[dt.date] = [d.date() for d in sched.index]
        opens: list[dt.datetime] = [ts.to_pydatetime() for ts in sched["open"]]
        closes: list[dt.datetime] = [ts.to_pydatetime() for ts in sched["close"]]
        frame = pl.DataFrame(
            {"session": sessions, "open_ts": opens, "close_ts": closes},
            schema=TABLE_SCHEMA,
        )
        self._load(str(getattr(calendar, "name", "XNYS")), frame)

    @classmethod
    def from_table(cls, name: str, table: pl.DataFrame) -> Sessions:
        """Sessions from a `table` (TABLE_SCHEMA) saved from another Sessions' `frame`."""
        self = cls.__new__(cls)
        self._load(name, table.select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA))  # type: ignore[arg-type]
        return self

    def _load(self, name: str, frame: pl.DataFrame) -> None:
        sessions: list[dt.date] = frame.get_column("session").to_list()
        opens: list[dt.datetime] = frame.get_column("open_ts").to_list()
        closes: list[dt.datetime] = frame.get_column("close_ts").to_list()
        self.name: str = name
        self.frame: pl.DataFrame = with_weeks(frame)
        self.first: dt.date = sessions[0]
        self.last: dt.date = sessions[-1]
        self._index = {d: i for i, d in enumerate(sessions)}
        self._closes: dict[dt.date, dt.datetime] = dict(zip(sessions, closes, strict=True))
        self._opens: dict[dt.date, dt.datetime] = dict(zip(sessions, opens, strict=True))
        self._dates: list[dt.date] = sessions
        self._day0 = (sessions[0] - dt.date(1970, 1, 1)).days  # polars' day number of the first
        self._close_by_day: pl.Series | None = None
        self._number_by_day: pl.Series | None = None
        self._week_by_day: pl.Series | None = None

    def is_session(self, day: dt.date) -> bool:
        """True when `day` is a trading session."""
        return day in self._index

    def close_of(self, day: dt.date) -> dt.datetime:
        """The session's close instant (UTC); early closes included."""
        return self._closes[day]

    def close_of_expr(self, session: pl.Expr) -> pl.Expr:
        """`close_of` over a column of dates, as `ts` (null for a day that is not a session):
        a look-up by day number in a table over every calendar day of the range, cheaper than
        a hash or a join over millions of bars."""
        if self._close_by_day is None:
            self._close_by_day = self._by_day(self.frame.get_column("close_ts"))
        day = session.cast(pl.Int32) - self._day0
        inside = (day >= 0) & (day < len(self._close_by_day))
        return pl.lit(self._close_by_day).gather(pl.when(inside).then(day)).alias("ts")

    def number_expr(self, session: pl.Expr) -> pl.Expr:
        """The number of each session of a column of dates in the calendar (consecutive
        sessions, consecutive numbers; null for a day that is no session), by the same look-up
        as `close_of_expr`; every date must lie within the calendar's range."""
        if self._number_by_day is None:
            count = self.frame.height
            self._number_by_day = self._by_day(pl.Series("n", range(count), dtype=pl.Int32))
        day = session.cast(pl.Int32) - self._day0
        return pl.lit(self._number_by_day).gather(day).alias("number")

    def week_number_expr(self, session: pl.Expr) -> pl.Expr:
        """The number of the trading week of each session of a column of dates (consecutive
        weeks, consecutive numbers: a week's label, its last session, gives its week's), by the
        same look-up as `number_expr`; every date must lie within the calendar's range."""
        if self._week_by_day is None:
            weeks = self.frame.get_column("week").rank("dense").cast(pl.Int32)
            self._week_by_day = self._by_day(weeks)
        day = session.cast(pl.Int32) - self._day0
        return pl.lit(self._week_by_day).gather(day).alias("week_number")

    def _by_day(self, values: pl.Series) -> pl.Series:
        """`values` (one per session) in a table by day number from the first session: null
        on the days between sessions."""
        days = self.frame.get_column("session").cast(pl.Int32) - self._day0
        table = pl.Series(values.name, [None], dtype=values.dtype)
        table = table.extend_constant(None, int(days.max()))  # type: ignore[arg-type]
        return table.scatter(days.to_numpy(), values)

    def open_of(self, day: dt.date) -> dt.datetime:
        """The session's open instant (UTC)."""
        return self._opens[day]

    def is_open(self, now: dt.datetime) -> bool:
        """True during a session's regular hours (open <= now < close)."""
        day = now.astimezone(dt.UTC).date()
        for d in (day, day - dt.timedelta(days=1)):
            if d in self._opens and self._opens[d] <= now < self._closes[d]:
                return True
        return False

    def covers(self, day: dt.date) -> bool:
        """True when `day` lies within the calendar's range."""
        return self.first <= day <= self.last

    def shift(self, day: dt.date, sessions: int) -> dt.date | None:
        """The session `sessions` after `day` (the first session on or after `day` when it is not
        one), or None past the calendar's end."""
        import bisect

        i = bisect.bisect_left(self._dates, day)
        j = i + sessions
        if j < 0 or j >= len(self._dates):
            return None
        return self._dates[j]

    def on_or_before(self, day: dt.date) -> dt.date | None:
        """The latest session on or before `day` (None: none in the calendar)."""
        import bisect

        i = bisect.bisect_right(self._dates, day) - 1
        return self._dates[i] if i >= 0 else None

    def last_closed(self, now: dt.datetime) -> dt.date | None:
        """The latest session whose close is at or before `now`."""
        import bisect

        i = bisect.bisect_right(self._dates, now.astimezone(dt.UTC).date()) - 1
        while i >= 0:
            day = self._dates[i]
            if self._closes[day] <= now:
                return day
            i -= 1
        return None

    def between(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        """Session rows with `first <= session <= last`."""
        return self.frame.filter(pl.col("session").is_between(first, last))


def new_york_date(instant: pl.Expr) -> pl.Expr:
    """The New York date of UTC instants, at any hour (a file's rows may lie outside what the
    bar builder takes: `minute_date` is cheaper within it)."""
    return instant.dt.convert_time_zone(NEW_YORK).dt.date()


def minute_date(start: pl.Expr) -> pl.Expr:
    """The New York date of minute bars starting at `start` (UTC), for minutes between 04:00
    and 20:00 New York (all the bar builder accepts, extended hours included). New York is four
    or five hours behind UTC, and in that window five hours back lands on the New York date
    either way: ten times cheaper than converting to the zone, on a million and a half bars
    every minute."""
    return (start - pl.duration(hours=5)).dt.date()


def with_weeks(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `week` (the label: last session of the calendar week), `week_sessions` and `short_week`
    to a frame with a `session` date column holding every session of the range."""
    week_key = pl.col("session").dt.truncate("1w")  # Monday of the ISO week
    return frame.with_columns(
        pl.col("session").max().over(week_key).alias("week"),
        pl.len().over(week_key).cast(pl.Int32).alias("week_sessions"),
    ).with_columns((pl.col("week_sessions") < 5).alias("short_week"))
