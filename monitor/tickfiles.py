"""Tick history files (CSV or Parquet) for `feed-replay` and the `replay` feed.

A tick file (`is_tick_file`) has a `price` column and no open, high, low or close column (a
file with those is bars: `monitor.minutefiles`), and its time column carries times of day
(`monitor.filetimes.carries_times`: a file of dates alone, or of one time of day on several
dates, is daily bars, and the daily reader says what it lacks).
Names are matched as a minute file's are (`column_key`: case, spaces and `_` aside):

- the time: `ts`, else a minute file's time column (`datetime`, `timestamp`, `start`, `time`,
  `date`, `session`), read as a minute file's times are (`monitor.filetimes`): ISO 8601,
  with an offset (`+hh:mm`, `+hhmm`, `+hh`, `Z`) as given, without one in New York time (one
  New York's clocks skip or show twice is an error), never epoch numbers nor dates with
  slashes;
- `symbol`, else the one given as `SYMBOL=PATH`, else the file name's stem uppercased (with
  both, only that symbol's rows are read);
- `price`; `size` or `volume` (shares; 0 without the column or in a blank cell); `id` (the
  trade id, text; blank: none).

Cells: as in a minute file (the same functions read them), one that does not parse is a
`DataError` naming the file, line and column; blank cells and `null` are missing values; a row
of blank cells is skipped. `read_tick_files` (feed-replay) then rejects rows as a minute file's
are rejected (`monitor.datafiles.reject_bad_bars`, a tick taken for a bar of one price),
counted by reason: `missing_time`, `missing_symbol`, `bad_symbol`, `missing_price`,
`bad_price` (NaN, infinite, zero, negative, or MAX_PRICE and up), `bad_size` (negative, not
finite, or MAX_SIZE and up: `monitor.core.model`), `duplicate` (the same symbol, time, price,
size and id as a row read before; the first is kept).
`read_ticks` (the daemon's replay feed) leaves that to the engine, which checks and counts
ticks as it does a live feed's. Ticks come in time order, in file order among equal times (and
in the order the files were given across files).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import msgspec
import polars as pl

from monitor.core.model import MINUTE_SCHEMA, TICK_SCHEMA, Rejection
from monitor.core.sessions import new_york_date
from monitor.datafiles import DataSpec, drop_duplicates, reject_bad_bars
from monitor.datalayout import Source, Table, column_key, filled
from monitor.errors import DataError
from monitor.filetimes import DATE_KEYS, carries_times, parse_times
from monitor.minutefiles import (
    PRICES,
    TIME_KEYS,
    columns_by_key,
    file_header,
    kept_rows,
    parse_numbers,
    read_table,
    symbol_values,
    time_column,
)

TICK_TIME_KEYS = ("ts", *TIME_KEYS, *DATE_KEYS)  # in order of preference
_KEYS = (*TICK_TIME_KEYS, "symbol", "price", "size", "volume", "id")
# What `reject_bad_bars` calls a row, said of a tick (its only bar check a tick can fail is
# the volume's: its open, high, low and close are its price).
_TICK_REASONS = {"missing_close": "missing_price", "bad_bar": "bad_size"}


class LoadedTicks(msgspec.Struct):
    """Ticks (TICK_SCHEMA, in time order), the rows rejected and the counts by reason, as
    `monitor.minutefiles.LoadedMinutes` has them for minute bars."""

    ticks: pl.DataFrame
    rejections: list[Rejection]
    counts: dict[str, int]


def is_tick_file(path: str | Path) -> bool:
    """True for a file with a price column and no open, high, low or close column, unless its
    time column holds dates without times, or one time of day on different dates, as a daily
    file's midnight stamps (see the module's docstring; as `minutefiles.is_minute_file`)."""
    name = str(path)
    header = file_header(name)
    keys = {column_key(n) for n in header}
    if "price" not in keys or keys & set(PRICES):
        return False
    column = time_column(header, TICK_TIME_KEYS)
    # (no time column: the tick reader says what is missing)
    return column is None or carries_times(name, column)


def read_ticks(spec: DataSpec) -> pl.DataFrame:
    """The file's ticks as TICK_SCHEMA, in time order (file order among equal times), bad
    values and repeated ticks included (the daemon's engine rejects and counts those).
    DataError naming the file, line and column for a cell that does not parse or a row
    without a time."""
    table, column, work = _parse(spec)
    missing = work.filter(pl.col("ts").is_null())
    if missing.height:
        raise table.error(int(missing.item(0, "_row")), column, "no time: a tick needs one")
    return _ticks(work.sort("ts", maintain_order=True))


def read_tick_files(
    specs: Sequence[DataSpec], *, start: date | None = None, end: date | None = None
) -> LoadedTicks:
    """Several files' ticks of New York dates from `start` to `end`, in time order (the order
    of files and rows among equal times); bad rows and a tick read before (the same symbol,
    time, price, size and id) rejected and counted. DataError as `read_ticks`."""
    rejections: list[Rejection] = []
    counts: dict[str, int] = {}
    sources, frames = [], []
    for number, spec in enumerate(specs):
        table, _, work = _parse(spec)
        day = new_york_date(pl.col("ts"))
        if start is not None:
            work = work.filter(day.is_null() | (day >= start))
        if end is not None:
            work = work.filter(day.is_null() | (day <= end))
        source = Source(table.path, table.is_csv)
        work = _reject_bad_ticks(source, work, rejections, counts)
        sources.append(source)
        frames.append(work.with_columns(pl.lit(number, pl.UInt32).alias("_file")))
    if not frames:
        return LoadedTicks(pl.DataFrame(schema=TICK_SCHEMA), rejections, counts)
    ticks = pl.concat(frames).with_columns(
        pl.struct("ts", "price", "size", "id").hash().alias("_tick")
    )
    ticks = drop_duplicates(sources, ticks, rejections, counts, when="_tick")
    return LoadedTicks(_ticks(ticks.sort("ts", "_file", "_row")), rejections, counts)


def tick_minutes(ticks: pl.DataFrame) -> pl.DataFrame:
    """The minute bars (MINUTE_SCHEMA, sorted by symbol and start) of ticks in time order: per
    symbol and minute the first price, the highest, the lowest, the last and the sizes' sum."""
    price = pl.col("price")
    bars = ticks.group_by("symbol", pl.col("ts").dt.truncate("1m").alias("start")).agg(
        price.first().alias("open"),
        price.max().alias("high"),
        price.min().alias("low"),
        price.last().alias("close"),
        pl.col("size").sum().alias("volume"),
    )
    cast = (pl.col(name).cast(dtype) for name, dtype in MINUTE_SCHEMA.items())
    return bars.select(cast).sort("symbol", "start")


def _ticks(work: pl.DataFrame) -> pl.DataFrame:
    return work.select(pl.col(name).cast(dtype) for name, dtype in TICK_SCHEMA.items())


def _reject_bad_ticks(
    source: Source, work: pl.DataFrame, rejections: list[Rejection], counts: dict[str, int]
) -> pl.DataFrame:
    """A tick file's rows checked as a minute file's are (`reject_bad_bars`), each tick a bar
    whose open, high, low and close are its price and whose volume is its size; the reasons
    said of a tick (`_TICK_REASONS`)."""
    price = pl.col("price")
    bars = work.with_columns(open=price, high=price, low=price, close=price, volume="size")
    found: list[Rejection] = []
    found_counts: dict[str, int] = {}
    times = [(pl.col("ts").is_not_null(), "missing_time")]
    kept = reject_bad_bars(source, bars, found, found_counts, times=times)
    for r in found:
        rejections.append(Rejection(_TICK_REASONS.get(r.reason, r.reason), r.symbol, r.raw))
    for reason, n in found_counts.items():
        said = _TICK_REASONS.get(reason, reason)
        counts[said] = counts.get(said, 0) + n
    return kept.select(work.columns)


def _parse(spec: DataSpec) -> tuple[Table, str, pl.DataFrame]:
    """The file read, its time column's name, and a work frame of unchecked ticks: `_row` (the
    0-based data row), symbol, ts (UTC), price, size (0 when blank) and id, nulls where cells
    are blank."""
    table = read_table(spec.path)
    path, frame = table.path, table.frame
    cols = columns_by_key(table, _KEYS)
    if "size" in cols and "volume" in cols:
        raise DataError(path, f"two columns mean 'size': {cols['size']!r}", column=cols["volume"])
    column = time_column(frame.columns, TICK_TIME_KEYS)
    if column is None:
        raise DataError(path, f"no time column (one of {', '.join(TICK_TIME_KEYS)})")
    if "price" not in cols:
        raise DataError(path, "missing column 'price'")
    bad: list[tuple[int, int, str, str]] = []  # (row, column position, column, message)
    position = {name: i for i, name in enumerate(frame.columns)}
    ts = parse_times(frame.get_column(column), bad, position[column], column)
    name = cols["price"]
    price = parse_numbers(frame.get_column(name), bad, position[name], name)
    name = cols.get("size", cols.get("volume", ""))
    if name:
        size = parse_numbers(frame.get_column(name), bad, position[name], name).fill_null(0.0)
    else:
        size = pl.repeat(0.0, frame.height, eager=True)
    if bad:
        row, _, name, message = min(bad)
        raise table.error(row, name, message)
    if "id" in cols:
        text = frame.get_column(cols["id"]).cast(pl.String).str.strip_chars()
        ident = text.to_frame("i").select(pl.when(filled(text)).then("i")).to_series()
    else:
        ident = pl.Series("id", [None] * frame.height, pl.String)
    symbol = symbol_values(table, cols, spec)
    work = pl.DataFrame({"symbol": symbol, "ts": ts, "price": price, "size": size, "id": ident})
    return table, column, kept_rows(table, cols, spec, work.with_row_index("_row"))
