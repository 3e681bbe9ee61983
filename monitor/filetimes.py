"""Times in minute and tick files (`monitor.minutefiles`, `monitor.tickfiles`): their syntax,
their reading into UTC instants (`parse_times`), and whether a file's time column holds minute
bars' or ticks' times of day or a daily file's dates (`carries_times`).

Syntax: ISO 8601, the date and the time in one cell: `YYYY-MM-DD HH:MM[:SS[.f]][offset]`, `T`
or a space between them. The offset is `+hh:mm`, `+hhmm`, `+hh` (as PostgreSQL prints it;
`-` alike) or `Z` (`z`): such a time is the instant it says. A time without one is New York
(exchange) time, as US minute files are stamped: `2024-02-20 09:30:00` is the open, 14:30 UTC;
one that New York's clocks skip or show twice (at the daylight-saving changes, at night) is an
error: give its offset. Any other cell is an error naming it, and why for the common
look-alikes: a date with slashes (`11/01/2024`: whether the month or the day comes first is
not guessed), epoch numbers, a time of day alone (its date in another column). A Parquet
column of datetimes is read as it is (naive ones in New York time); one of dates, as midnight.

Times of day (`carries_times`) are judged on the whole column, as written and in New York
time: a column holds minute bars' or ticks' times when it has more than one time of day, or
one time on one date (a file of one minute), seen both ways. A `date` or `session` column
needs more than one (`date 00:00:00` on every row is a daily file's). So one time on several
dates is a daily file's, stamped at midnight or at the close, and so is a New York midnight
written in UTC (Alpaca's daily bars: 05:00Z in winter, 04:00Z in summer). So is a column
whose every date has one time, midnight or that session's close in New York time (a daily
file stamped at each session's real close: 16:00, and 13:00 on an early close; the engine
stamps its own so), as written or in UTC (`_at_closes`). Dates without a time
are daily bars whatever the column's name; the first rows show it, and no more is read (a wide
daily file's rows are long). Values that are no dates count as times in a time column (the
minute or tick reader says why they do not parse) and as dates in a `date` or `session` column
(the daily reader says).
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re

import polars as pl

from monitor.core.sessions import NEW_YORK
from monitor.csvfiles import walked_column
from monitor.datalayout import cell_problem, column_key, filled, iso_dates

DATE_KEYS = ("date", "session")  # (a minute file's time column when its values have times)
# A cell read: its date, then (after `T` or a space) a time of day and an offset, if any.
_OFFSET = r"[+-]\d{2}(?::?\d{2})?|[Zz]"
_CELL = (
    r"^(?P<date>\d{4}-\d{1,2}-\d{1,2})"
    rf"(?:[T ](?P<time>\d{{1,2}}:\d{{2}}(?::\d{{2}}(?:\.\d+)?)?)(?P<offset>{_OFFSET})?)?$"
)
_DATE_ONLY = re.compile(r"\d{4}([-/])\d{1,2}\1\d{1,2}")
_PEEKED = 5  # rows looked at for dates without a time
_WIDE = 1000  # columns of a CSV file whose time column is read line by line
_HEAD = 1000  # first values of a time column looked at before the rest
# At most this many times of day may be a daily file's stamped at each session's close: the
# close (16:00), an early close (13:00) and midnight.
_CLOSE_TIMES = 3


def parse_times(
    column: pl.Series, bad: list[tuple[int, int, str, str]], position: int, name: str
) -> pl.Series:
    """The column as UTC datetimes (blank cells null): with an offset as given, naive in New
    York time. Its first cell that is not a time, or no single New York time, goes to `bad`."""
    utc = pl.Datetime("us", "UTC")
    if isinstance(column.dtype, pl.Datetime) and column.dtype.time_zone is not None:
        return column.dt.convert_time_zone("UTC").cast(utc)
    if column.dtype == pl.Date:  # (dates, no times: not a minute file; the engine says so)
        return column.cast(utc)
    if not isinstance(column.dtype, pl.Datetime) and column.dtype not in (pl.String, pl.Null):
        bad.append((0, position, name, f"holds {column.dtype} values, not times"))
        return pl.Series(name, [None] * len(column), dtype=utc)
    text = iso_dates(column.cast(pl.String).str.strip_chars())
    if isinstance(column.dtype, pl.Datetime):
        aware = pl.repeat(False, len(column), eager=True)
        wall = column.cast(pl.Datetime("us"))
    else:
        aware, wall = _walls(text, bad, position, name)
    local = wall.dt.replace_time_zone(NEW_YORK, ambiguous="null", non_existent="null")
    skipped = ~aware & wall.is_not_null() & local.is_null()
    if skipped.any():
        row = int(skipped.arg_true()[0])
        twice = wall.slice(row, 1).dt.replace_time_zone(
            NEW_YORK, ambiguous="earliest", non_existent="null"
        )
        why = (
            "shown twice when New York's clocks went back"
            if twice.is_not_null().all()
            else "skipped when New York's clocks went forward"
        )
        cell = str(text[row])[:40]
        message = f"{cell!r} is no New York time ({why}): write it with its UTC offset"
        bad.append((row, position, name, message))
    return wall.dt.replace_time_zone("UTC").zip_with(aware, local.dt.convert_time_zone("UTC"))


def _walls(
    text: pl.Series, bad: list[tuple[int, int, str, str]], position: int, name: str
) -> tuple[pl.Series, pl.Series]:
    """Which cells of a text column have an offset, and each cell's wall time: UTC's for
    those, as written for the others (null where blank). The first filled cell that is no
    time of the syntax read goes to `bad`, saying why."""
    parts = text.str.extract_groups(_CELL)
    read = parts.struct.field("date").is_not_null()
    aware = parts.struct.field("offset").is_not_null()
    wall = pl.Series(name, [None] * len(text), dtype=pl.Datetime("us"))
    for rows, zone in (((read & aware).arg_true(), "UTC"), ((read & ~aware).arg_true(), None)):
        if len(rows):  # (UTC's wall time for times with an offset)
            try:
                parsed = text.gather(rows).str.to_datetime(
                    time_zone=zone, strict=False, time_unit="us"
                )
            except pl.exceptions.ComputeError:  # (no format fits any: the first is named)
                continue
            wall = wall.scatter(rows, parsed.dt.replace_time_zone(None))
    failed = filled(text) & wall.is_null()
    if failed.any():
        row = int(failed.arg_true()[0])
        bad.append((row, position, name, cell_problem(text[row], "a time")))
    return aware, wall


def carries_times(path: str, column: str) -> bool:
    """Whether the file's time column holds minute bars' or ticks' times of day rather than a
    daily file's dates (see the module's docstring): the whole column is read, alone."""
    by_date = column_key(column) in DATE_KEYS
    header, peeked = _peek(path, column)
    first = [v for v in (v.strip() for v in peeked) if v]
    if first and all(_DATE_ONLY.fullmatch(v) for v in first):
        return False  # (dates alone: a wide daily file is read no further)
    values = _whole_column(path, column, header)
    if values is None:  # (the reader that takes the file says why it cannot)
        return not by_date
    if values.dtype == pl.Date:  # (Parquet's dates)
        return False
    # Times of day in the first rows, both ways, more than a daily file stamped at each
    # session's close has, are minute bars' and ticks': they show them at once (a tick file's
    # millions of times are not looked at each).
    head = _views(values.head(_HEAD), by_date)
    if head and all(times > _CLOSE_TIMES for _, times in head):
        return True
    views = _views(values, by_date)
    if views is None:  # (no dates: the reader says why)
        return not by_date
    if any(_is_daily(dates, times, by_date) for dates, times in views if times):
        return False
    return not (min(times for _, times in views) <= _CLOSE_TIMES and _at_closes(values))


def _views(values: pl.Series, by_date: bool) -> list[tuple[int, int]] | None:
    """The distinct dates and times of day of a time column's values, as written and, for
    values with an offset or a zone, in New York time (not when those written are a daily
    file's already); None for values that are not dates (`_CELL`'s) or datetimes."""
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        instants = values.drop_nulls()
        views = [_counts(instants)]  # (naive: New York's wall times, as written)
        if dtype.time_zone is not None:  # (as written in its zone; in New York)
            views.append(_counts(instants.dt.convert_time_zone(NEW_YORK)))
        return views
    if dtype not in (pl.String, pl.Null):
        return None
    text = iso_dates(values.cast(pl.String).unique().str.strip_chars())  # (once each)
    text = text.filter(filled(text)).unique()
    parts = text.str.extract_groups(_CELL).struct.unnest()
    if not text.len() or parts.get_column("date").null_count():
        return None
    views = [_written_counts(parts)]
    if parts.get_column("offset").is_not_null().any() and not _is_daily(*views[0], by_date):
        instants = parse_times(text, [], 0, "").drop_nulls()
        views.append(_counts(instants.dt.convert_time_zone(NEW_YORK)))
    return views


def _counts(instants: pl.Series) -> tuple[int, int]:
    """The distinct dates and times of day of datetimes, in their zone (naive: as they are)."""
    return instants.dt.date().n_unique(), instants.dt.time().n_unique()


def _written_counts(parts: pl.DataFrame) -> tuple[int, int]:
    """The distinct dates and times of day of cells as written (`_CELL`'s parts): `9:30`,
    `09:30` and `09:30:00.000` are one time; a date alone is midnight."""
    time = (
        pl.col("time")
        .fill_null("00:00")
        .str.replace(r"^(\d):", "0$1:")
        .str.replace(r"^(\d\d:\d\d)$", "$1:00")
        .str.replace(r"\.0*$", "")
    )
    counts = parts.select(pl.col("date").n_unique(), time.n_unique())
    return int(counts.item(0, 0)), int(counts.item(0, 1))


def _is_daily(dates: int, times: int, by_date: bool) -> bool:
    """Whether `dates` distinct dates and `times` distinct times of day are a daily file's:
    one time of day on several dates, or on any in a `date` or `session` column."""
    return times == 1 and (by_date or dates > 1)


def _at_closes(values: pl.Series) -> bool:
    """Whether every date of a time column has one time of day, in New York time, and it is
    midnight or that session's close (16:00, 13:00 on an early close; a day that is no
    session, 16:00): a daily file stamped at each session's real close."""
    from monitor.calendar import nyse_sessions

    text = values if isinstance(values.dtype, pl.Datetime) else values.cast(pl.String)
    instants = parse_times(text.unique(), [], 0, "").drop_nulls()
    if instants.is_empty():
        return False
    local = instants.dt.convert_time_zone(NEW_YORK)
    stamps = pl.DataFrame({"day": local.dt.date(), "time": local.dt.time()}).unique()
    first, last = stamps.get_column("day").min(), stamps.get_column("day").max()
    if stamps.get_column("day").is_duplicated().any() or first == last:
        return False
    assert isinstance(first, dt.date) and isinstance(last, dt.date)
    closes = nyse_sessions(first, last).frame.select(
        pl.col("session").alias("day"),
        pl.col("close_ts").dt.convert_time_zone(NEW_YORK).dt.time().alias("close"),
    )
    found = stamps.join(closes, on="day", how="left")
    close = pl.col("close").fill_null(dt.time(16))
    at_close = (pl.col("time") == close) | (pl.col("time") == dt.time())
    return bool(found.select(at_close.all()).item())


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def _whole_column(path: str, column: str, header: list[str]) -> pl.Series | None:
    """A column of the file, all of it (text for CSV; `header`, its names); None when it
    cannot be read so. A wide CSV file's is read line by line (`walked_column`)."""
    try:
        if _is_parquet(path):
            frame = pl.scan_parquet(path).select(column).collect()
        elif len(header) >= _WIDE and (walked := walked_column(path, header.index(column))):
            return pl.Series(column, walked, pl.String)
        else:
            frame = pl.read_csv(path, columns=[column], infer_schema=False)
    except (OSError, pl.exceptions.PolarsError):
        return None
    return frame.get_column(column)


def _peek(path: str, column: str, rows: int = _PEEKED) -> tuple[list[str], list[str]]:
    """A CSV file's header (none for Parquet) and the first `rows` values of a column as text,
    read line by line (polars sets up every column to read a few rows: a tenth of a second
    for a wide file's 17,000); no values when they cannot be read so."""
    failures = (OSError, UnicodeDecodeError, csv.Error, StopIteration, ValueError)
    try:
        if _is_parquet(path):
            frame = pl.scan_parquet(path).select(column).head(rows).collect()
            return [], frame.get_column(column).cast(pl.String).drop_nulls().to_list()
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = csv.reader(f)
            header = next(lines)
            at = header.index(column)
            return header, [row[at] for row in itertools.islice(lines, rows) if len(row) > at]
    except (*failures, pl.exceptions.PolarsError):
        return [], []
