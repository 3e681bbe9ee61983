"""Daily-bar history files (CSV and Parquet) for the `replay` and `backfill` commands.

A file is one of three layouts, told apart by its header. Names are matched without regard to
case, spaces or `_` (`Adj Close`, `adj_close` and `ADJCLOSE` are one name):

- **single**: a date column and a close column, no symbol column. The symbol is the one given
  as `SYMBOL=PATH`, else the file name's stem uppercased (`crbu_close.csv` -> `CRBU_CLOSE`).
  A date repeated with another word in a column of text is refused: a long file's symbols
  under a name not read (`monitor.datalayout.refuse_hidden_symbols`).
- **long**: the same plus a `symbol` column (or `ticker`, yfinance's name); one row per symbol
  and session.
- **wide**: a date column and one close column per symbol, and no symbol, close or adjusted-close
  column. A blank cell is simply no bar. A ticker that reads like a field (Opendoor is `OPEN`) is
  still a ticker, unless every column besides the date is one of open/high/low/volume. But a
  column named the way fields are written (`Volume`, `Price`, `Adjusted Close`; `Open`, `High`
  or `Low` other than in capitals) is no ticker: the file is refused as missing its close.

The date column is `date`, `session`, `datetime` or `timestamp`, in that order of preference; a
date is `YYYY-MM-DD` (one with slashes, `11/01/2024`, is refused: the order of month and day is
not guessed), a time part is ignored and the date taken as written
(`2024-02-20 04:00:00-05:00` -> 2024-02-20).
A blank open, high or low is the close; a missing volume is null (0 is kept). With
`adjusted=True` the adjusted close replaces the close and open/high/low are scaled by adj/close;
volume is left as published. A file without an adjusted close column (an index pays no
dividends; a file may be adjusted already) is read as it is, and a note says so. For long
and wide files, `SYMBOL=PATH` keeps that symbol only.

Bad files raise `DataError` (file, and line and column where they apply; for Parquet the message
gives the 1-based row); a CSV row with more or fewer fields than the header makes a bad file.
Bad rows are values: a `Rejection` with raw `"<path>:<line>"`, counted by reason
(`missing_date`, `missing_symbol`, `missing_close`, `bad_price`, `bad_bar`, `duplicate`).
Out-of-order dates are sorted and counted under `unsorted`; the word `null` (Yahoo's marker) and
blank cells are missing values; a row whose every cell is blank is skipped like a blank line.
Accepted bars within the 1e-6 tolerance have high and low widened to cover open and close.

Here: reading files, checking rows, duplicates and the cache; telling a file's layout from its
header and parsing its cells: `monitor.datalayout`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from datetime import date

import msgspec
import polars as pl

from monitor.calendar import EARLIEST
from monitor.core.model import DAILY_SCHEMA, MAX_PRICE, MAX_SIZE, Rejection
from monitor.core.symbols import symbol_problem
from monitor.csvfiles import csv_failure, csv_header, first_line, refuse_short_rows
from monitor.datalayout import DATE_KEYS, Source, Table, column_key, parse_bars
from monitor.errors import DataError

_REL_TOL = 1e-6


class DataSpec(msgspec.Struct, frozen=True):
    """One history file to read, and the symbol given for it on the command line, if any."""

    path: str
    symbol: str | None = None


class LoadedBars(msgspec.Struct):
    """Bars (DAILY_SCHEMA, sorted by symbol and session), rejected rows, and counts by reason.
    `close_only`: per row of `bars` (a Boolean Series aligned with it), whether the bar came
    from a file of closes only (a wide file, or one without open, high, low and volume
    columns: open, high and low are the close, volume null). `notes`: what a command says of
    how files were read (a file without an adjusted close read with `adjusted`)."""

    bars: pl.DataFrame
    rejections: list[Rejection]
    counts: dict[str, int]
    close_only: pl.Series
    notes: list[str] = msgspec.field(default_factory=list)


def parse_data_arg(arg: str) -> DataSpec:
    """`"^RUT=path.csv"` -> symbol `^RUT`; `"path.csv"` -> no symbol.

    Split on the first `=` only when the part before it has no `/` (so `./a=b.csv` is a path).
    """
    left, sep, right = arg.partition("=")
    if not sep or "/" in left:
        if not arg:
            raise DataError(arg, "empty data file argument")
        return DataSpec(arg)
    if not left.strip() or not right:
        raise DataError(arg, "expected SYMBOL=PATH or PATH")
    return DataSpec(right, left.strip())


def read_daily(
    spec: DataSpec, *, adjusted: bool = False, start: date | None = None, end: date | None = None
) -> LoadedBars:
    """Read one history file into daily bars; dates outside [start, end] are dropped."""
    return read_many([spec], adjusted=adjusted, start=start, end=end)


def read_many(
    specs: Sequence[DataSpec],
    *,
    adjusted: bool = False,
    start: date | None = None,
    end: date | None = None,
    cache: bool = False,
) -> LoadedBars:
    """Read several files into one set of bars; a (symbol, session) seen again is a duplicate.
    `cache`: take a large file as read before from the cache, and keep it there when it is not
    (monitor.datacache)."""
    read = _read_cached if cache else _read_file
    files = [read(spec, adjusted, start, end) for spec in specs]
    rejections: list[Rejection] = []
    counts: dict[str, int] = {}
    for file in files:
        rejections += file.rejections
        for reason, n in file.counts.items():
            counts[reason] = counts.get(reason, 0) + n
    frames = [
        f.frame.with_columns(pl.lit(i, pl.UInt32).alias("_file")) for i, f in enumerate(files)
    ]
    bars = pl.concat(frames) if frames else _empty_work()
    if not (len(files) == 1 and files[0].sorted_unique):
        bars = drop_duplicates([f.source for f in files], bars, rejections, counts)
    close_only = _close_only_rows(bars, [f.closes for f in files])
    bars = bars.select(pl.col(name).cast(dtype) for name, dtype in DAILY_SCHEMA.items())
    notes = [note for f in files for note in f.notes]
    return LoadedBars(bars, rejections, counts, close_only, notes)


def _close_only_rows(bars: pl.DataFrame, close_only: list[bool]) -> pl.Series:
    """Which rows of `bars` (a work frame of `read_many`) come from a file of closes only, by
    their `_file` and each file's `close_only`: a constant when none or all do, the common cases."""
    if len(set(close_only)) < 2:
        return pl.repeat(any(close_only), bars.height, dtype=pl.Boolean, eager=True).alias(
            "close_only"
        )
    numbers = [i for i, flag in enumerate(close_only) if flag]
    return bars.get_column("_file").is_in(numbers).alias("close_only")


# ---- reading --------------------------------------------------------------------------------


class _FileBars(msgspec.Struct):
    """What one file gave: its accepted rows as a work frame (`_row`, symbol, session, OHLCV),
    whether they are sorted and unique by (symbol, session), the rows rejected and the counts.
    `close_only`: a wide file's (open, high and low are the close, volume is null);
    `closes`: a file of closes only, wide or not (no open, high, low or volume column);
    `notes`: see `LoadedBars`."""

    source: Source
    frame: pl.DataFrame
    close_only: bool
    sorted_unique: bool
    rejections: list[Rejection]
    counts: dict[str, int]
    closes: bool = False
    notes: list[str] = msgspec.field(default_factory=list)


class _CacheInfo(msgspec.Struct):
    """What a cache entry keeps beside the frame (the frame only `_row`, symbol, session and
    close when `close_only`)."""

    is_csv: bool
    close_only: bool
    sorted_unique: bool
    rejections: list[Rejection]
    counts: dict[str, int]
    closes: bool = False
    notes: list[str] = msgspec.field(default_factory=list)


def _read_file(spec: DataSpec, adjusted: bool, start: date | None, end: date | None) -> _FileBars:
    table = _read_table(spec.path)
    fields = {column_key(n) for n in table.frame.columns}
    notes = []
    if adjusted and "adjclose" not in fields:  # (read as it is: said, not refused)
        adjusted = False
        notes.append(f"{table.path}: {UNADJUSTED}")
    _check_close_column(table.path, table.frame.columns, spec.symbol)
    frame, is_wide, sorted_unique, unsorted = parse_bars(table, spec.symbol, adjusted, start, end)
    rejections: list[Rejection] = []
    counts = {"unsorted": unsorted} if unsorted else {}
    frame = _reject_bad(table, frame, rejections, counts, close_only=is_wide)
    frame = frame.select(pl.col(n).cast(t) for n, t in _WORK_SCHEMA.items())  # (as cached)
    source = Source(table.path, table.is_csv)
    closes = is_wide or not fields & {"open", "high", "low", "volume"}
    return _FileBars(source, frame, is_wide, sorted_unique, rejections, counts, closes, notes)


UNADJUSTED = (
    "--adjusted, but it has no adjusted close column (Adj Close): its closes are read as they"
    " are (an index pays no dividends; a file may be adjusted already)"
)


def _read_cached(spec: DataSpec, adjusted: bool, start: date | None, end: date | None) -> _FileBars:
    """`_read_file` through the cache."""
    from monitor import datacache

    options = {
        "symbol": spec.symbol,
        "adjusted": str(adjusted),
        "start": str(start),
        "end": str(end),
    }
    entry = datacache.entry_for(spec.path, options)
    found = datacache.load(entry) if entry is not None else None
    if found is not None:
        frame, text = found
        with contextlib.suppress(msgspec.DecodeError, pl.exceptions.PolarsError):
            info = msgspec.json.decode(text, type=_CacheInfo)
            # (rows rejected as after the day they were read: that day may have come since)
            if not info.counts.get("date_out_of_range"):
                if info.close_only:
                    frame = _close_only(frame)
                cast = (pl.col(n).cast(t, strict=True) for n, t in _WORK_SCHEMA.items())
                return _FileBars(
                    Source(spec.path, info.is_csv),
                    frame.select(cast),
                    info.close_only,
                    info.sorted_unique,
                    info.rejections,
                    info.counts,
                    info.closes,
                    info.notes,
                )
    read = _read_file(spec, adjusted, start, end)
    if entry is not None and not read.counts.get("date_out_of_range"):
        kept = (
            read.frame.select("_row", "symbol", "session", "close")
            if read.close_only
            else read.frame
        )
        info = _CacheInfo(
            read.source.is_csv,
            read.close_only,
            read.sorted_unique,
            read.rejections,
            read.counts,
            read.closes,
            read.notes,
        )
        datacache.save(entry, kept, msgspec.json.encode(info).decode())
    return read


def _read_table(path: str) -> Table:
    if path.lower().endswith((".parquet", ".pq")):
        try:
            frame = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(path, f"cannot read as Parquet: {first_line(exc)}") from exc
        if frame.height == 0:
            raise DataError(path, "empty file: no rows")
        return Table(path, is_csv=False, frame=frame)
    header = csv_header(path)
    # Numbers parsed as numbers first: on a universe file that is about a third cheaper than
    # text, and it is the common case. Anything else in a number column (a word, `null`,
    # stray spaces) fails the whole read, and the text read below finds and names the cell.
    text = {n: pl.String for n in header if column_key(n) in DATE_KEYS or column_key(n) == "symbol"}
    schema = {n: text.get(n, pl.Float64) for n in header}
    typed: pl.DataFrame | None = None
    if len(schema) == len(header):  # (a repeated name: the text read reports it)
        with contextlib.suppress(pl.exceptions.PolarsError):
            typed = pl.read_csv(path, schema=schema)
    if typed is not None:
        frame = typed
    else:
        try:
            frame = pl.read_csv(path, infer_schema=False)
        except pl.exceptions.PolarsError as exc:
            raise csv_failure(path, len(header), exc) from exc
    if frame.height == 0:
        raise DataError(path, "empty file: a header and no rows")
    refuse_short_rows(path, frame)
    return Table(path, is_csv=True, frame=frame)


# Names that are not symbols, in a file without a close column: a price field (OPEN, HIGH and
# LOW in capitals excepted: Opendoor and Lowe's are tickers) or another name for the close.
_NOT_SYMBOLS = frozenset({"open", "high", "low", "volume", "price", "adjclose", "adjustedclose"})
_TICKER_LIKE = frozenset({"open", "high", "low"})


def _check_close_column(path: str, names: list[str], given: str | None) -> None:
    """A file with a date column and no close, adjusted close or symbol column must be a wide
    one (a close column per symbol): refuse one with a column that is no symbol (`Price`,
    `Volume`), or without the symbol given as SYMBOL=PATH, saying that the close is missing."""
    keys = [column_key(n) for n in names]
    present = set(keys)
    if {"close", "adjclose", "symbol"} & present or not set(DATE_KEYS) & present:
        return
    fields = [
        n
        for n, k in zip(names, keys, strict=True)
        if k in _NOT_SYMBOLS and not (k in _TICKER_LIKE and n.strip().isupper())
    ]
    symbols = [n.strip() for n, k in zip(names, keys, strict=True) if k not in DATE_KEYS]
    if not fields and (given is None or given in symbols):
        return  # a wide file of closes
    found = ", ".join(repr(n) for n in names[:8])
    if len(names) > 8:
        found += f", ... ({len(names)} columns)"
    if not fields:
        message = f"symbol {given!r} is not a column of the file, and it has no close column"
        raise DataError(path, f"{message} (the columns are {found})")
    message = f"missing close column: the columns are {found}"
    price = next((n for n in fields if column_key(n) == "price"), None)
    if price is not None:
        message += f" (rename {price!r} to close)"
    elif len(symbols) > len(fields):  # (other columns, taken for symbols before)
        message += f" ({fields[0]!r} is not a symbol: not a wide file of closes)"
    raise DataError(path, message)


# ---- validation -----------------------------------------------------------------------------


_WORK_SCHEMA: dict[str, pl.DataType] = {"_row": pl.UInt32(), **DAILY_SCHEMA}


def _empty_work() -> pl.DataFrame:
    return pl.DataFrame(schema={**_WORK_SCHEMA, "_file": pl.UInt32})


def _reject_bad(
    table: Table,
    work: pl.DataFrame,
    rejections: list[Rejection],
    counts: dict[str, int],
    *,
    close_only: bool,
) -> pl.DataFrame:
    """A daily file's rows checked (`reject_bad_bars`): a session date, of the calendar's."""
    session = pl.col("session")
    times = [
        (session.is_not_null(), "missing_date"),
        (session.is_between(EARLIEST, latest_session()), "date_out_of_range"),
    ]
    return reject_bad_bars(table, work, rejections, counts, times=times, close_only=close_only)


def reject_bad_bars(
    source: Source,
    work: pl.DataFrame,
    rejections: list[Rejection],
    counts: dict[str, int],
    *,
    times: Sequence[tuple[pl.Expr, str]],
    close_only: bool = False,
) -> pl.DataFrame:
    """Drop rows with no time, symbol or close, bad prices or inconsistent bars; record them.
    `times`: what the time column must be, in order, each with the reason of a row it is not
    (a daily file's date, a minute file's start). Accepted bars have high and low widened to
    cover open and close (within _REL_TOL).

    `close_only` (a wide file): `work` has only a close; it becomes open, high and low too,
    and a row without one is a blank cell, no bar: dropped, not counted.
    """
    o, h, lo, c, v = (pl.col(k) for k in ("open", "high", "low", "close", "volume"))
    prices = [c] if close_only else [o, h, lo, c]
    good_price = pl.all_horizontal((x.is_finite() & (x > 0) & (x < MAX_PRICE)) for x in prices)
    up, down = 1 + _REL_TOL, 1 - _REL_TOL
    consistent = (h >= lo * down) & pl.all_horizontal(
        (x <= h * up) & (x >= lo * down) for x in (o, c)
    )
    good_volume = v.is_null() | (v.is_finite() & (v >= 0) & (v < MAX_SIZE))
    ok = pl.all_horizontal(good for good, _ in times) & pl.col("symbol").is_not_null()
    ok = ok & good_price
    # (a long file's symbols, looked at once each; a wide file's were, as its column names)
    unusable = [] if close_only else unusable_symbols(work)
    if unusable:
        ok = ok & ~pl.col("symbol").is_in(unusable)
    if not close_only:
        ok = ok & consistent & good_volume
    mask = work.select(ok.fill_null(False)).to_series()
    blank = work.select(c.is_null()).to_series() if close_only else None
    if not mask.all():
        bad_rows = ~mask if blank is None else ~mask & ~blank
        cases = [
            *((~good, why) for good, why in times),
            (pl.col("symbol").is_null(), "missing_symbol"),
            (pl.col("symbol").is_in(unusable), "bad_symbol"),
            (c.is_null(), "missing_close"),
            (~good_price, "bad_price"),
        ]
        reason: pl.Expr = pl.lit("bad_bar")  # (the first case a row is in, else this)
        for case, why in reversed(cases):
            reason = pl.when(case).then(pl.lit(why)).otherwise(reason)
        bad = work.filter(bad_rows).select("_row", "symbol", reason.alias("reason"))
        places = source.where(bad["_row"].to_list())
        for symbol, why, raw in zip(bad["symbol"], bad["reason"], places, strict=True):
            rejections.append(Rejection(why, symbol, raw))
            counts[why] = counts.get(why, 0) + 1
        work = work.filter(mask)
    if close_only:
        return _close_only(work)
    return work.with_columns(
        pl.max_horizontal(o, h, c).alias("high"), pl.min_horizontal(o, lo, c).alias("low")
    )


def unusable_symbols(work: pl.DataFrame) -> list[str]:
    """The symbols of `work` that cannot be one (`symbol_problem`): rejected as `bad_symbol`."""
    symbols = work.get_column("symbol").unique().drop_nulls().to_list()
    return [s for s in symbols if symbol_problem(s) is not None]


def latest_session() -> date:
    """The last date a bar of history can have: today, give or take the time zones (a later
    one, a typo's 2200 or 9999, would be taken for a session of a calendar built to it)."""
    return dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)


def _close_only(work: pl.DataFrame) -> pl.DataFrame:
    """Bars of a wide file: open, high and low are the close, and there is no volume."""
    c = pl.col("close")
    return work.with_columns(open=c, high=c, low=c, volume=pl.lit(None, pl.Float64))


def drop_duplicates(
    sources: list[Source],
    bars: pl.DataFrame,
    rejections: list[Rejection],
    counts: dict[str, int],
    when: str = "session",
) -> pl.DataFrame:
    """Sort by (symbol, `when`), keeping file order among equals; reject the later repeats
    (`bars` has `_file`, the index of its row's source, and `_row`)."""
    bars = bars.sort("symbol", when, maintain_order=True)
    same = (pl.col("symbol") == pl.col("symbol").shift()) & (pl.col(when) == pl.col(when).shift())
    mask = bars.select(same.fill_null(False)).to_series()
    if not mask.any():
        return bars
    repeats = bars.filter(mask)
    for number, source in enumerate(sources):
        mine = repeats.filter(pl.col("_file") == number)
        for symbol, raw in zip(mine["symbol"], source.where(mine["_row"].to_list()), strict=True):
            rejections.append(Rejection("duplicate", symbol, raw))
            counts["duplicate"] = counts.get("duplicate", 0) + 1
    return bars.filter(~mask)
