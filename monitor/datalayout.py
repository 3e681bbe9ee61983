"""A history file as a table: which column plays which part, and its cells parsed into bars.

`monitor.datafiles` reads a file into a `Table` (all strings for CSV, typed columns for Parquet)
and hands it to `parse_bars`, which tells the layout (single, long or wide; see
`monitor.datafiles`) from the header, parses the dates and numbers (a cell that does not parse
raises `DataError` naming its line and column) and gives a work frame of unchecked bars.

Why apart from `monitor.datafiles`: that module is what callers use (the specs, reading several
files into one set of bars, the cache, rejecting bad rows and duplicates); this one knows the
layouts and the syntax of cells, and changes when another kind of file is taken. `Source` and
`Table` are here because parsing names failures by them; `datafiles` names rejected rows by them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import msgspec
import polars as pl

from monitor.core.symbols import MAX_SYMBOL_CHARS, symbol_problem
from monitor.csvfiles import comment_hint, csv_lines, separator_hint
from monitor.errors import DataError

DATE_KEYS = ("date", "session", "datetime", "timestamp")  # in order of preference
_FIELD_KEYS = ("open", "high", "low", "close", "volume", "adjclose", "symbol")
_DATE_RE = r"^(\d{4}-\d{1,2}-\d{1,2})(?:[T ].*)?$"
ISO_DATE = "YYYY-MM-DD (or YYYY/MM/DD)"  # the syntax of dates and times read, as said
ISO_TIME = "ISO 8601, YYYY-MM-DD HH:MM[:SS][offset]"
# A minute or tick file's time column may also have these names (`monitor.minutefiles`,
# `monitor.tickfiles`): a daily file's error says so.
_TIME_NAMES = ("time", "start", "ts")


class Source(msgspec.Struct):
    """Where a file's rows are: enough to name a row once the frame is gone."""

    path: str
    is_csv: bool

    def where(self, rows: Sequence[int]) -> list[str]:
        """`path:line` (CSV) or `path:row n` (Parquet) for 0-based data rows."""
        if not self.is_csv:
            return [f"{self.path}:row {r + 1}" for r in rows]
        lines = csv_lines(self.path, rows)
        return [f"{self.path}:{lines[r]}" for r in rows]

    def error(self, row: int, column: str, message: str) -> DataError:
        """A DataError at a 0-based data row and an original column name."""
        if self.is_csv:
            return DataError(
                self.path, message, line=csv_lines(self.path, [row])[row], column=column
            )
        return DataError(self.path, f"row {row + 1}: {message}", column=column)


class Table(Source):
    """A file as read: all strings for CSV, typed columns for Parquet."""

    frame: pl.DataFrame


# ---- layout ---------------------------------------------------------------------------------


def shown_symbol(name: str) -> str:
    """A symbol as a message shows it: one `symbol_problem` rejects with its control
    characters escaped (a terminal would run them) and cut at MAX_SYMBOL_CHARS."""
    if symbol_problem(name) is None:
        return name
    escaped = name.encode("unicode_escape").decode("ascii")
    return escaped[:MAX_SYMBOL_CHARS] + ("..." if len(escaped) > MAX_SYMBOL_CHARS else "")


# Other names of a column, by its key: yfinance's long files name the symbol `Ticker`.
_ALIASES = {"ticker": "symbol"}


@functools.cache  # (a universe file has tens of thousands of columns, each looked at often)
def column_key(name: str) -> str:
    """A column's name as the readers match it: case, spaces and `_` aside, and an alias as
    the name it stands for (`Ticker` is `symbol`)."""
    key = name.strip().lower().replace(" ", "").replace("_", "")
    return _ALIASES.get(key, key)


def refuse_hidden_symbols(
    table: Table, keys: pl.Series, key_column: str, used: Sequence[str], one: str
) -> None:
    """A DataError for a file read as one symbol's (`one`: no symbol column) whose `keys`
    (each row's date or minute, read from `key_column`) repeat while a column of text the
    reader does not use (`used` and `key_column` are those it does) holds another value on a
    repeat: a long file's symbols under a
    name not read (`Stock`, `Name`), whose rows would be taken for `one`'s, each repeat
    rejected as a duplicate. It names the column, the first such row, and what to do.
    Columns of numbers are not looked at (a vendor's corrected row differs in them)."""
    repeated = keys.is_not_null() & keys.is_duplicated()
    if not repeated.any():
        return
    for name, column in table.frame.to_dict().items():
        if name in used or name == key_column or column.dtype not in (pl.String, pl.Categorical):
            continue
        text = column.cast(pl.String).str.strip_chars()
        words = filled(text) & text.cast(pl.Float64, strict=False).is_null()
        if not (words & repeated).any():
            continue
        rows = pl.DataFrame({"key": keys, "text": text}).with_row_index("_row").filter(repeated)
        other = pl.col("text").ne_missing(pl.col("text").first().over("key"))
        varying = rows.filter(other)
        if varying.height:
            row = int(varying.item(0, "_row"))
            key = str(table.frame.get_column(key_column)[row]).strip()[:40]
            message = (
                f"read as one symbol's ({one}: no symbol column), but {key} repeats with"
                f" another {name!r} ({str(text[row])[:40]!r}): is {name!r} the symbol? Name it"
                " symbol (or ticker)"
            )
            raise table.error(row, name, message)


class _Layout(msgspec.Struct, frozen=True):
    """Which original column plays which part; `tickers` is set for a wide file only."""

    date: str
    fields: dict[str, str]
    tickers: list[str]


def _layout(
    path: str, names: list[str], adjusted: bool, first_cells: Sequence[object] = ()
) -> _Layout:
    """`adjusted`: the adjusted close is read (only of a file with that column: a file
    without one is read as it is); `first_cells`: the first column's first values (for a
    hint when there is no date)."""
    found: dict[str, str] = {}
    for name in names:
        key = column_key(name)
        if key in DATE_KEYS or key in _FIELD_KEYS:
            if key in found:
                raise DataError(path, f"two columns mean {key!r}: {found[key]!r}", column=name)
            found[key] = name
    date_col = next((found[k] for k in DATE_KEYS if k in found), None)
    if date_col is None:
        raise DataError(path, f"missing date column {_missing_date(names, first_cells)}")
    others = [n for n in names if column_key(n) not in DATE_KEYS]
    fields = {k: v for k, v in found.items() if k in _FIELD_KEYS}
    is_wide = not {"close", "adjclose", "symbol"} & fields.keys()
    if is_wide and not all(column_key(n) in _FIELD_KEYS for n in others):
        return _Layout(date_col, {}, sorted(others, key=str.strip))
    if not adjusted and "close" not in fields:
        hint = f" ({fields['adjclose']!r} is read with --adjusted)" if "adjclose" in fields else ""
        raise DataError(path, f"missing close column{hint}")
    return _Layout(date_col, fields, [])


def _missing_date(names: list[str], first_cells: Sequence[object]) -> str:
    """Which columns a date may be in, and what the file may be instead: a file not separated
    by commas, a header of several rows (yfinance's `Price`, then `Ticker` and `Datetime` rows),
    or one whose minute or tick time column holds dates alone or one time on every date."""
    said = "(date, session, datetime or timestamp)"
    if comment_hint(names):
        return f"{said}: {comment_hint(names)}"
    if separator_hint(names):
        return f"{said}: {separator_hint(names)}"
    cells = [str(c).strip() for c in first_cells[:2]]
    if len(cells) == 2 and cells[0].lower() == "ticker":
        return (
            f"{said}: the header is three rows ({names[0]!r}, {cells[0]!r}, {cells[1]!r}), as"
            f" yfinance writes it; keep one, with the first column named {cells[1] or 'Date'!r}"
        )
    times = [n for n in names if column_key(n) in _TIME_NAMES]
    if times:
        return (
            f"{said}: {times[0]!r} holds dates alone, or one time of day on every date (or each"
            " session's close), as a daily file's dates: name it date"
        )
    return (
        "(date, session, datetime or timestamp; for minute bars and ticks also time, start or"
        f" ts: a date and time in one cell, {ISO_TIME}; epoch numbers are not read as times)"
    )


def cell_problem(cell: object, kind: str) -> str:
    """Why `cell` (text) is no date (`kind` "a date") or time ("a time") of the ISO 8601 forms
    read, for a DataError: its common look-alikes named (a date with the year last, whose order
    of month and day is not guessed; epoch numbers; a time of day alone, its date in another
    column)."""
    text = str(cell).strip()
    why = ""
    if re.match(r"\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b", text):
        why = " (the year last: whether the month or the day comes first is not guessed)"
    elif re.fullmatch(r"[+-]?\d{9,}(?:\.\d*)?", text):
        why = f" (epoch numbers are not read as {kind[2:]}s)"
    elif re.fullmatch(r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?", text) and kind == "a time":
        why = " (a time of day alone: the date and the time must be in one column)"
    syntax = f"dates are ISO 8601, {ISO_DATE}" if kind == "a date" else f"times are {ISO_TIME}"
    return f"cannot parse {text[:40]!r} as {kind}{why}: {syntax}"


# ---- parsing --------------------------------------------------------------------------------


# Words a cell holds for "no value": Yahoo's `null`, and `N/A` and Excel's `#N/A` (any case)
BLANK_WORDS = ["null", "n/a", "#n/a"]


def _is_blank(text: pl.Series) -> pl.Series:
    return text.is_null() | (text == "") | text.str.to_lowercase().is_in(BLANK_WORDS)


def _floats(table: Table, name: str, column: pl.Series) -> tuple[pl.Series, int | None]:
    """The column as Float64, and the first row whose non-blank text is not a number."""
    if column.dtype.is_numeric() or column.dtype == pl.Null:
        return column.cast(pl.Float64), None
    if column.dtype != pl.String:
        raise DataError(table.path, f"has type {column.dtype}, expected numbers", column=name)
    values = column.cast(pl.Float64, strict=False)
    failed = values.is_null() & column.is_not_null()
    if not failed.any():
        return values, None
    text = column.str.strip_chars()
    values = values.zip_with(~failed, text.cast(pl.Float64, strict=False))
    bad = values.is_null() & ~_is_blank(text)
    return values, (bad.arg_true()[0] if bad.any() else None)


def iso_dates(text: pl.Series) -> pl.Series:
    """Cells with a date written year first with slashes (`2024/11/01`, `2024/11/01 09:30`,
    as some exporters write it: no order to guess) as ISO's dashes; the others as they are."""
    if not text.str.contains("/", literal=True).any():  # (a tick file's millions: no regex)
        return text
    return text.str.replace(r"^(\d{4})/(\d{1,2})/(\d{1,2})($|[T ])", "$1-$2-$3$4")


def _dates(table: Table, name: str, column: pl.Series) -> tuple[pl.Series, int | None]:
    """The column as Date (a time part ignored), and the first row that is not a date."""
    if column.dtype == pl.Date or column.dtype == pl.Null:
        return column.cast(pl.Date), None
    if isinstance(column.dtype, pl.Datetime):
        return column.dt.date(), None
    if column.dtype != pl.String:
        raise DataError(table.path, f"has type {column.dtype}, expected dates", column=name)
    text = iso_dates(column.str.strip_chars())
    values = text.str.extract(_DATE_RE, 1).str.to_date("%Y-%m-%d", strict=False)
    bad = values.is_null() & ~_is_blank(text)
    return values, (bad.arg_true()[0] if bad.any() else None)


def _raise_first(table: Table, bad: list[tuple[int, int, str, str]]) -> None:
    """Raise for the earliest (row, column position) cell that did not parse, if any."""
    if not bad:
        return
    row, _, name, kind = min(bad)
    cell = table.frame[name][row]
    if kind == "a date":
        raise table.error(row, name, cell_problem(cell, kind))
    raise table.error(row, name, f"cannot parse {str(cell)[:40]!r} as {kind}")


def parse_bars(
    table: Table, given: str | None, adjusted: bool, start: date | None, end: date | None
) -> tuple[pl.DataFrame, bool, bool, int]:
    """Work frame (`_row`, symbol, session, OHLCV); is it wide, sorted and unique; unsorted.
    `given`: the symbol given for the file on the command line, if any."""
    frame = table.frame
    first = frame.get_column(frame.columns[0]).head(2).to_list()
    layout = _layout(table.path, frame.columns, adjusted, first)
    session, bad_row = _dates(table, layout.date, table.frame[layout.date])
    bad = [] if bad_row is None else [(bad_row, 0, layout.date, "a date")]
    if layout.tickers:
        return _wide_bars(table, layout, given, session, bad, start, end)
    work, unsorted = _row_bars(table, layout, given, adjusted, session, bad, start, end)
    return work, False, False, unsorted


def _in_range(session: pl.Expr, start: date | None, end: date | None) -> pl.Expr:
    keep = pl.lit(True)
    if start is not None:
        keep = keep & (session >= start)
    if end is not None:
        keep = keep & (session <= end)
    return session.is_null() | keep


def _row_bars(
    table: Table,
    layout: _Layout,
    given: str | None,
    adjusted: bool,
    session: pl.Series,
    bad: list[tuple[int, int, str, str]],
    start: date | None,
    end: date | None,
) -> tuple[pl.DataFrame, int]:
    frame = table.frame
    position = {name: i for i, name in enumerate(frame.columns)}
    values: dict[str, pl.Series] = {}
    for key in ("open", "high", "low", "close", "volume", "adjclose"):
        name = layout.fields.get(key)
        if name is None:
            values[key] = pl.Series(key, [None] * frame.height, pl.Float64)
            continue
        values[key], bad_row = _floats(table, name, frame[name])
        if bad_row is not None:
            bad.append((bad_row, position[name], name, "a number"))
    _raise_first(table, bad)
    if "symbol" in layout.fields:
        text = frame[layout.fields["symbol"]].cast(pl.String).str.strip_chars()
        symbol = text.to_frame("s").select(pl.when(pl.col("s") != "").then("s")).to_series()
        if given is not None and not (symbol == given).any():
            raise DataError(table.path, f"symbol {given!r} is not in the file")
    else:
        one = given or Path(table.path).stem.upper()
        refuse_hidden_symbols(table, session, layout.date, list(layout.fields.values()), one)
        symbol = pl.Series([one] * frame.height)
    work = pl.DataFrame({"symbol": symbol.cast(pl.String), "session": session, **values})
    work = work.with_row_index("_row")
    if adjusted:
        factor = pl.col("adjclose") / pl.col("close")
        work = work.with_columns(
            *[(pl.col(k) * factor).alias(k) for k in ("open", "high", "low")],
            pl.col("adjclose").alias("close"),
        )
    work = work.with_columns(pl.col(k).fill_null(pl.col("close")) for k in ("open", "high", "low"))
    blank = pl.all_horizontal(blank_cell(n, t) for n, t in frame.schema.items())
    work = work.filter(~frame.select(blank).to_series())
    if "symbol" in layout.fields and given is not None:
        work = work.filter(pl.col("symbol") == given)
    work = work.filter(_in_range(pl.col("session"), start, end))
    earlier = pl.col("session") < pl.col("session").shift().over("symbol")
    unsorted = int(work.select(earlier.fill_null(False).sum()).item())
    return work.drop("adjclose"), unsorted


def blank_cell(name: str, dtype: pl.DataType) -> pl.Expr:
    """A cell with nothing in it: null, or text of only spaces or a BLANK_WORDS word (of a
    column of any type: a Parquet file's lists or durations, unused here, included)."""
    if not isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
        return pl.col(name).is_null()
    stripped = pl.col(name).cast(pl.String).str.strip_chars()
    return stripped.is_null() | (stripped == "") | stripped.str.to_lowercase().is_in(BLANK_WORDS)


def filled(text: pl.Series) -> pl.Series:
    """Which cells of a text column hold something (not blank, not `null`)."""
    return text.to_frame("t").select(~blank_cell("t", pl.String())).to_series()


def _wide_bars(
    table: Table,
    layout: _Layout,
    given: str | None,
    session: pl.Series,
    bad: list[tuple[int, int, str, str]],
    start: date | None,
    end: date | None,
) -> tuple[pl.DataFrame, bool, bool, int]:
    tickers = layout.tickers
    if given is not None:
        tickers = [t for t in tickers if t.strip() == given]
        if not tickers:
            raise DataError(table.path, f"symbol {given!r} is not a column of the file")
    frame = table.frame
    unnamed = [t for t in tickers if not t.strip()]
    for name in unnamed:  # (a trailing comma's empty column is no symbol; one with closes is)
        if frame[name].null_count() < frame.height:
            where = frame.columns.index(name) + 1
            raise DataError(
                table.path,
                f"column {where} has closes but no name: a wide file's names are symbols",
            )
    tickers = [t for t in tickers if t.strip()]
    for name in tickers:
        problem = symbol_problem(name.strip())
        if problem is not None:
            where = frame.columns.index(name) + 1
            raise DataError(table.path, f"column {where}: its name, a symbol, {problem}")
    if not table.is_csv:
        columns = []
        for i, name in enumerate(tickers):
            column, bad_row = _floats(table, name, frame[name])
            if bad_row is not None:
                bad.append((bad_row, i + 1, name, "a number"))
            columns.append(column)
        frame = pl.DataFrame(columns)
    _raise_first(table, bad)
    # Selecting 17,000 columns by expression is slow; unpivot picks them by name instead.
    dated = frame.with_columns(session.alias("_session")).with_row_index("_row")
    if start is not None or end is not None:
        dated = dated.filter(_in_range(pl.col("_session"), start, end))
    sessions = dated["_session"]
    unsorted = int((sessions < sessions.shift()).fill_null(False).sum())
    unique = not sessions.drop_nulls().is_duplicated().any()
    if unsorted:
        dated = dated.sort("_session", maintain_order=True, nulls_last=True)
    # Blank cells (no bar) stay as null closes until `monitor.datafiles.reject_bad_bars` filters
    # once for both.
    long = dated.unpivot(
        on=tickers, index=["_row", "_session"], variable_name="symbol", value_name="close"
    )
    if long["close"].dtype == pl.String:
        values, bad_row = _floats(table, "", long["close"])
        if bad_row is not None:
            row, name = long["_row"][bad_row], long["symbol"][bad_row]
            raise table.error(row, name, f"cannot parse {long['close'][bad_row]!r} as a number")
        long = long.with_columns(values)
    work = long.rename({"_session": "session"})
    if any(t != t.strip() for t in tickers):
        work = work.with_columns(pl.col("symbol").str.strip_chars())
    unique = unique and len({t.strip() for t in tickers}) == len(tickers)
    return work, True, unique, unsorted
