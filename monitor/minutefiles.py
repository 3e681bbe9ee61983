"""Minute-bar history files (CSV or Parquet) for `feed-replay` and the `replay` feed.

A minute file has a time column and open, high, low, close and, if it likes, volume and symbol
columns. Names are matched as `replay` matches them (`column_key`: case, spaces and `_` aside),
and a UTF-8 byte-order mark before the header is no part of it. The time column is `datetime`,
`timestamp`, `start` or `time`, else `date` or `session`.

Which files are minute bars (`is_minute_file`): those whose time column, the whole of it,
carries times of day, as written and in New York time alike (`monitor.filetimes.carries_times`).
In a `date` or `session` column that takes more than one time of day; in another any time of
day, unless it is one time on several dates (a daily file stamped at midnight or at the close,
in New York time or as written: Alpaca's daily bars, New York's midnight in UTC, are daily), or
each date's session close in New York time (16:00, 13:00 on an early close: daily too). A file
read as minute bars none of whose bars lies in a session's regular hours gives `replay` and
`backfill` nothing: they refuse it, saying it was read as minute bars (`read_minute_files`).
Dates without a time (`2024-07-15`) are daily bars whatever the column's name, the decision
`replay` makes: those files go to the daily reader (`monitor.datafiles`).

Times (`monitor.filetimes`): ISO 8601, the date and time in one cell; with an offset
(`2024-03-08 09:30:00-05:00`, `-0500`, `-05`, `...Z` or `z`) as given, without one in New York
(exchange) time, as US minute files are stamped (the shipped ones carry New York's offset):
`2024-02-20 09:30:00` is the open, 14:30 UTC. A naive time that New York's clocks skip or show
twice (at the daylight-saving changes, at night) is an error: give its offset. So is any other
form: a date with slashes (`11/01/2024`, whose order of month and day is not guessed), epoch
numbers, a time of day whose date is in another column.

The symbol is the one given as `SYMBOL=PATH`, else a `symbol` column's, else the file name's stem
uppercased; with both, only that symbol's rows are read, as `replay` reads a long file.

Cells: one that does not parse (a word where a number belongs) is a `DataError` naming the file,
line and column; blank cells and `null` are missing values (open, high or low: the close; volume:
null); a row of blank cells is skipped. Then `read_minute_files` (feed-replay) rejects rows as
`monitor.datafiles` rejects a daily file's, counted by reason: `missing_time`, `missing_symbol`,
`missing_close`, `bad_price` (NaN, infinite, zero, negative, or MAX_PRICE and up), `bad_bar`
(high below low, open or close outside them, a volume negative or MAX_SIZE and up),
`duplicate` (a (symbol, minute) read before; the first is kept). `read_minutes` (the daemon's
replay feed) leaves that to the engine, which checks and counts the bars as it does a live
feed's.

Tick files (a `price` column, no open, high, low or close: `monitor.tickfiles`) count as minute
files, so that what reads minute files (the daemon's replay feeds, `config check`) takes them:
`read_minutes` gives the minute bars their ticks make, and the replay feed streams the ticks.
The reading of cells (`read_table`, `parse_numbers`, `symbol_values`, `kept_rows`, and
`monitor.filetimes`) is shared with that module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import msgspec
import polars as pl

from monitor.core.model import MINUTE_SCHEMA, Rejection
from monitor.core.sessions import new_york_date
from monitor.csvfiles import csv_failure, csv_header, first_line, refuse_short_rows
from monitor.datafiles import DataSpec, drop_duplicates, reject_bad_bars
from monitor.datalayout import (
    Source,
    Table,
    blank_cell,
    column_key,
    filled,
    refuse_hidden_symbols,
)
from monitor.errors import DataError
from monitor.filetimes import DATE_KEYS, carries_times, parse_times

TIME_KEYS = ("datetime", "timestamp", "start", "time")
PRICES = ("open", "high", "low", "close")
_KEYS = (*TIME_KEYS, *DATE_KEYS, *PRICES, "volume", "symbol")


class LoadedMinutes(msgspec.Struct):
    """Minute bars (MINUTE_SCHEMA, sorted by symbol and start), the rows rejected and the
    counts by reason, as `monitor.datafiles.LoadedBars` has them for daily bars."""

    bars: pl.DataFrame
    rejections: list[Rejection]
    counts: dict[str, int]


def is_minute_file(path: str | Path) -> bool:
    """True when the file's time column carries times of day (see the module's docstring), and
    for a tick file (`monitor.tickfiles`, whose minute bars `read_minutes` gives). Values that
    are not dates at all leave it to the minute reader to say why."""
    from monitor.tickfiles import is_tick_file

    name = str(path)
    if is_tick_file(name):
        return True
    column = time_column(file_header(name))
    return column is not None and carries_times(name, column)


def read_minutes(spec: DataSpec) -> pl.DataFrame:
    """The file's bars as MINUTE_SCHEMA, sorted by symbol and start, bad values and repeated
    minutes included (the daemon's engine rejects and counts those). DataError naming the file,
    line and column for a cell that does not parse or a row without a time.
    Of a tick file, the minute bars its ticks make (`monitor.tickfiles.tick_minutes`)."""
    from monitor.tickfiles import is_tick_file, read_ticks, tick_minutes

    if is_tick_file(spec.path):
        return tick_minutes(read_ticks(spec))
    table, column, work = _parse(spec)
    missing = work.filter(pl.col("start").is_null())
    if missing.height:
        raise table.error(int(missing.item(0, "_row")), column, "no time: a minute bar needs one")
    return _minute_bars(work).sort("symbol", "start")


def read_minute_files(
    specs: Sequence[DataSpec],
    *,
    start: date | None = None,
    end: date | None = None,
    regular_hours: bool = False,
) -> LoadedMinutes:
    """Several files' bars of New York dates from `start` to `end`, bad rows and a (symbol,
    minute) seen again (in file order) rejected and counted. DataError as `read_minutes`, and
    with `regular_hours` (replay and backfill, which take no other) for a file none of whose
    bars on sessions is within their regular hours (`monitor.intraday_checks.outside_hours`).
    Bars only: a tick file's ticks are read by `monitor.tickfiles.read_tick_files`."""
    from monitor.intraday_checks import outside_hours

    rejections: list[Rejection] = []
    counts: dict[str, int] = {}
    sources, frames = [], []
    for number, spec in enumerate(specs):
        table, _, work = _parse(spec)
        day = new_york_date(pl.col("start"))
        if start is not None:
            work = work.filter(day.is_null() | (day >= start))
        if end is not None:
            work = work.filter(day.is_null() | (day <= end))
        source = Source(table.path, table.is_csv)
        times = [(pl.col("start").is_not_null(), "missing_time")]
        work = reject_bad_bars(source, work, rejections, counts, times=times)
        problem = outside_hours(work.get_column("start")) if regular_hours else None
        if problem is not None:
            raise DataError(table.path, problem)
        sources.append(source)
        frames.append(work.with_columns(pl.lit(number, pl.UInt32).alias("_file")))
    bars = pl.concat(frames) if frames else pl.DataFrame(schema=MINUTE_SCHEMA)
    if frames:
        bars = drop_duplicates(sources, bars, rejections, counts, when="start")
    return LoadedMinutes(_minute_bars(bars).sort("symbol", "start"), rejections, counts)


def _minute_bars(work: pl.DataFrame) -> pl.DataFrame:
    return work.select(pl.col(name).cast(dtype) for name, dtype in MINUTE_SCHEMA.items())


# ---- reading --------------------------------------------------------------------------------


def file_header(path: str) -> list[str]:
    """The column names of a Parquet or CSV file (DataError when it cannot be read)."""
    if _is_parquet(path):
        try:
            return list(pl.read_parquet_schema(path))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(path, f"cannot read as Parquet: {first_line(exc)}") from None
    try:  # (the words `run` and `config check` have said of a missing file)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc}") from None
    return csv_header(path)


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def time_column(names: list[str], keys: Sequence[str] = (*TIME_KEYS, *DATE_KEYS)) -> str | None:
    """The first of `names` meaning the first of `keys` found, in their order of preference."""
    found = {column_key(n): n for n in reversed(names)}  # (the first of a name kept)
    return next((found[k] for k in keys if k in found), None)


def read_table(path: str) -> Table:
    """The file as a Table: typed columns for Parquet, text for CSV (as monitor.datafiles reads
    it: a row with more or fewer fields than the header, or not UTF-8, makes a bad file)."""
    if _is_parquet(path):
        try:
            frame = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(path, f"cannot read as Parquet: {first_line(exc)}") from None
        return Table(path, is_csv=False, frame=frame)
    header = csv_header(path)
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise csv_failure(path, len(header), exc) from None
    refuse_short_rows(path, frame)
    return Table(path, is_csv=True, frame=frame)


def _parse(spec: DataSpec) -> tuple[Table, str, pl.DataFrame]:
    """The file read, its time column's name, and a work frame of unchecked bars: `_row` (the
    0-based data row), symbol, start (UTC) and OHLCV, nulls where cells are blank."""
    table = read_table(spec.path)
    path, frame = table.path, table.frame
    cols = columns_by_key(table, _KEYS)
    column = time_column(frame.columns)
    if column is None:
        raise DataError(path, f"no time column (one of {', '.join((*TIME_KEYS, *DATE_KEYS))})")
    missing = [k for k in PRICES if k not in cols]
    if missing:
        raise DataError(path, f"missing column {missing[0]!r}")
    bad: list[tuple[int, int, str, str]] = []  # (row, column position, column, message)
    position = {name: i for i, name in enumerate(frame.columns)}
    start = parse_times(frame.get_column(column), bad, position[column], column)
    values = {}
    for key in (*PRICES, "volume"):
        if key not in cols:
            values[key] = pl.repeat(0.0, frame.height, eager=True)  # (no volume column)
            continue
        name = cols[key]
        values[key] = parse_numbers(frame.get_column(name), bad, position[name], name)
    if bad:
        row, _, name, message = min(bad)
        raise table.error(row, name, message)
    symbol = symbol_values(table, cols, spec)
    if "symbol" not in cols:  # (a long file's symbols under another name: refused)
        used = [cols[k] for k in (*PRICES, "volume") if k in cols]
        refuse_hidden_symbols(table, start, column, used, str(symbol[0]))
    work = pl.DataFrame({"symbol": symbol, "start": start, **values}).with_row_index("_row")
    close = pl.col("close")
    work = work.with_columns(pl.col(k).fill_null(close) for k in ("open", "high", "low"))
    return table, column, kept_rows(table, cols, spec, work)


def columns_by_key(table: Table, keys: Sequence[str]) -> dict[str, str]:
    """The file's column names by `column_key` (the first of a name a reader does not use
    kept). DataError for a file without rows, and for two columns meaning one of `keys`."""
    path, frame = table.path, table.frame
    if frame.height == 0:  # (as monitor.datafiles says it)
        rows = "a header and no rows" if table.is_csv else "no rows"
        raise DataError(path, f"empty file: {rows}")
    cols: dict[str, str] = {}
    for name in frame.columns:
        key = column_key(name)
        if key in cols and key in keys:
            raise DataError(path, f"two columns mean {key!r}: {cols[key]!r}", column=name)
        cols[key] = name
    return cols


def symbol_values(table: Table, cols: dict[str, str], spec: DataSpec) -> pl.Series:
    """Each row's symbol: its `symbol` cell (blank: null), else the one given as SYMBOL=PATH,
    else the file name's stem uppercased."""
    frame = table.frame
    if "symbol" not in cols:
        return pl.repeat(spec.symbol or Path(table.path).stem.upper(), frame.height, eager=True)
    text = frame.get_column(cols["symbol"]).cast(pl.String).str.strip_chars()
    return text.to_frame("s").select(pl.when(pl.col("s") != "").then("s")).to_series()


def kept_rows(
    table: Table, cols: dict[str, str], spec: DataSpec, work: pl.DataFrame
) -> pl.DataFrame:
    """`work` (a row per row of the file, `_row` its number) without the rows whose every cell
    is blank, and, for a `symbol` column and a symbol given as SYMBOL=PATH, only that symbol's
    (a DataError when it has none)."""
    frame = table.frame
    blank = pl.all_horizontal(blank_cell(n, t) for n, t in frame.schema.items())
    work = work.filter(~frame.select(blank).to_series())
    if "symbol" in cols and spec.symbol is not None:
        work = work.filter(pl.col("symbol") == spec.symbol)
        if not work.height:
            raise DataError(table.path, f"symbol {spec.symbol!r} is not in the file")
    return work


def parse_numbers(
    column: pl.Series, bad: list[tuple[int, int, str, str]], position: int, name: str
) -> pl.Series:
    """The column as Float64 (blank cells null); its first cell that is not a number, if any,
    goes to `bad`."""
    if column.dtype.is_numeric() or column.dtype == pl.Null:
        return column.cast(pl.Float64)
    if column.dtype not in (pl.String, pl.Categorical, pl.Boolean):  # (a list, a struct...)
        bad.append((0, position, name, f"holds {column.dtype} values, not numbers"))
        return pl.Series(name, [None] * len(column), dtype=pl.Float64)
    text = column.cast(pl.String).str.strip_chars()
    values = text.cast(pl.Float64, strict=False)
    failed = filled(text) & values.is_null()
    if failed.any():
        row = int(failed.arg_true()[0])
        bad.append((row, position, name, f"cannot parse {str(text[row])[:40]!r} as a number"))
    return values
