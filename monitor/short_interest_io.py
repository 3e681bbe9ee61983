"""Read a short-interest file as published (symbol, short_interest_date, percent_of_float in
percent; e.g. shared/data/short_interest_us_2020-11_2021-06.csv) without conversion.

As for the bar files (`monitor.datafiles`), a malformed cell fails the file with a DataError
naming the file, the line (as an editor counts it, quoted fields spanning lines included) and
the column: a date that is no YYYY-MM-DD, a percentage that is not a number. A row that is well
formed but unusable is left out and counted, and the file's other figures are used: an empty
symbol (`missing_symbol`) or date (`missing_date`), a symbol as the bar files refuse it
(`bad_symbol`: a control character, past 64 characters), a percentage that is not finite or is
negative (`bad_short_interest`: a vendor's file of ~9,900 symbols has a few, from a negative
public float), a repeat of an earlier row's symbol, settlement date and figures (`duplicate`:
the first is kept). A file of only such rows is an error, and so is a repeat of a symbol and
settlement date with other figures (which is right cannot be told). An empty percentage is no
figure (the rule's `unknown_short_interest` decides). Headers are matched as the bar files'
are (case, spaces and underscores aside: `Short Interest Date`; `Ticker` is `symbol`), and
symbols without surrounding spaces."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import polars as pl

from monitor.core.model import Rejection
from monitor.core.symbols import symbol_problem
from monitor.csvfiles import comment_hint, csv_failure, csv_header, csv_lines
from monitor.datalayout import column_key, shown_symbol
from monitor.errors import DataError

REQUIRED = ("symbol", "short_interest_date", "percent_of_float")
_WANTED = (*REQUIRED, "shares_sold_short")
# Figures enough that none above 1% means fractions: a real market's file has many above.
FRACTION_LOOK_ROWS = 20


class ShortInterestFile(NamedTuple):
    """The usable figures, and the rows left out (reason, symbol and `path:line` each)."""

    figures: pl.DataFrame
    rejected: list[Rejection]

    def said(self) -> list[str]:
        """What a command says of the file: the rows left out, and `suspect`."""
        lines = [rejected_line(self.rejected)] if self.rejected else []
        suspect = self.suspect()
        return [*lines, suspect] if suspect else lines

    def figured(self) -> set[str]:
        """The symbols with a figure (a blank percentage is none)."""
        given = self.figures.filter(pl.col("percent_of_float").is_not_null())
        return set(given.get_column("symbol").unique().to_list())

    def coverage(self, known: set[str]) -> str:
        """What a command says of the symbols the figures are of, and how many of `known`
        (the data's): `figures of 14 symbols, settled 2020-11-30 to 2021-06-30; 14 of them in
        the data`."""
        figured = self.figured()
        if not figured:
            return "no figures (every percent_of_float is blank)"
        dates = self.figures.filter(pl.col("percent_of_float").is_not_null()).get_column(
            "short_interest_date"
        )
        symbols = "1 symbol" if len(figured) == 1 else f"{len(figured):,} symbols"
        first, last = str(dates.min()), str(dates.max())
        settled = f", settled {first}" + (f" to {last}" if last != first else "")
        inside = len(figured & known)
        return f"figures of {symbols}{settled}; {inside:,} of them in the data"

    def suspect(self) -> str | None:
        """Figures that look like fractions: a file converted to the rules' fractions would
        let no squeeze fire, and say nothing."""
        pct = self.figures.get_column("percent_of_float").drop_nulls()
        top = pct.max() if pct.len() >= FRACTION_LOOK_ROWS else None
        if not isinstance(top, float) or top > 1:
            return None
        return (
            f"every percent_of_float is at most 1 (the largest {top}): the column is a"
            " percentage of the float (138.4 for 138.4%), not a fraction"
        )


def read_short_interest(path: str | Path) -> ShortInterestFile:
    """The file's usable rows with typed columns, and the rows left out; DataError naming file,
    line and column for a malformed cell, or when no row is usable."""
    name = str(path)
    header = csv_header(name, parquet=False)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise csv_failure(name, len(header), exc) from None
    keys = {column_key(n): n for n in _WANTED}
    cols: dict[str, str] = {}
    for column in raw.columns:
        want = keys.get(column_key(column))
        if want is not None and want in cols:
            both = f"{cols[want]!r} and {column!r}"
            raise DataError(name, f"two columns for {want!r}: {both} (keep one)")
        if want is not None:
            cols[want] = column
    for need in REQUIRED:
        if need not in cols:
            hint = f" ({comment_hint(header)})" if comment_hint(header) else ""
            raise DataError(name, f"missing column {need!r}{hint}")
    if raw.height == 0:
        raise DataError(name, "empty file: a header and no rows")
    frame = raw.select(pl.col(cols[c]).alias(c) for c in _WANTED if c in cols)
    frame = frame.with_columns(pl.col("symbol").str.strip_chars())
    typed = frame.with_columns(
        pl.col("short_interest_date").str.to_date("%Y-%m-%d", strict=False).alias("_date"),
        pl.col("percent_of_float").cast(pl.Float64, strict=False).alias("_pct"),
    ).with_row_index("_row")

    def empty(column: str) -> pl.Expr:
        return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")

    malformed = [
        (
            ~empty("short_interest_date") & pl.col("_date").is_null(),
            "short_interest_date",
            "not a YYYY-MM-DD date",
        ),
        (~empty("percent_of_float") & pl.col("_pct").is_null(), "percent_of_float", "not a number"),
    ]
    for bad, column, message in malformed:
        _fail_at(name, typed.filter(bad), cols[column], message)
    odd = [x for x in typed.get_column("symbol").drop_nulls().unique() if symbol_problem(x)]
    unusable = (
        pl.when(empty("symbol"))
        .then(pl.lit("missing_symbol"))
        .when(pl.col("symbol").is_in(odd))
        .then(pl.lit("bad_symbol"))
        .when(empty("short_interest_date"))
        .then(pl.lit("missing_date"))
        .when(~pl.col("_pct").is_finite() | (pl.col("_pct") < 0))
        .then(pl.lit("bad_short_interest"))
    )
    typed = typed.with_columns(unusable.alias("_why"))
    left_out = typed.filter(pl.col("_why").is_not_null())
    if left_out.height == typed.height:
        first = str(left_out.get_column("_why")[0])
        column, message = _SAID[first]
        _fail_at(name, left_out, cols[column], f"{message} (no row of the file is usable)")
    typed = _repeats(name, typed, cols)
    left_out = typed.filter(pl.col("_why").is_not_null())
    lines = csv_lines(name, left_out.get_column("_row").to_list())
    rejected = [
        Rejection(str(why), symbol or None, f"{name}:{lines[row]}")
        for row, symbol, why in left_out.select("_row", "symbol", "_why").iter_rows()
    ]
    out = typed.filter(pl.col("_why").is_null()).with_columns(
        pl.col("_date").alias("short_interest_date"), pl.col("_pct").alias("percent_of_float")
    )
    out = out.drop("_date", "_pct", "_row", "_why")
    if "shares_sold_short" in out.columns:
        out = out.with_columns(pl.col("shares_sold_short").cast(pl.Float64, strict=False))
    return ShortInterestFile(out, rejected)


def _repeats(name: str, typed: pl.DataFrame, cols: dict[str, str]) -> pl.DataFrame:
    """`typed` with the usable rows that repeat an earlier one's symbol and settlement date
    and its figures (percent_of_float, shares_sold_short) marked `duplicate`: the first is
    kept. A repeat with other figures is a DataError at its line: which one is right cannot
    be told (the last one read used to win, silently)."""
    key = ["symbol", "_date"]
    figures = ["_pct", *(["shares_sold_short"] if "shares_sold_short" in cols else [])]
    rows = typed.filter(pl.col("_why").is_null()).with_columns(
        pl.col("_row").first().over(key).alias("_first"),
        pl.col("percent_of_float").first().over(key).alias("_said"),
        pl.any_horizontal(pl.col(f).ne_missing(pl.col(f).first().over(key)) for f in figures).alias(
            "_other"
        ),
    )
    repeated = rows.filter(pl.col("_row") != pl.col("_first"))
    if repeated.is_empty():
        return typed
    conflicts = repeated.filter("_other")
    if conflicts.height:
        row = conflicts.row(0, named=True)
        first = int(row["_first"])
        message = (
            f"{shown_symbol(row['symbol'])} {row['_date']} is given again with other figures"
            f" (line {csv_lines(name, [first])[first]}: {row['_said']!r}): which is right"
            " cannot be told; keep one"
        )
        _fail_at(name, conflicts, cols["percent_of_float"], message)
    again = pl.col("_row").is_in(repeated.get_column("_row").implode())
    why = pl.when(again).then(pl.lit("duplicate")).otherwise("_why")
    return typed.with_columns(why.alias("_why"))


# What the first of a file's unusable rows says, when it has no other.
_SAID = {
    "missing_symbol": ("symbol", "empty"),
    "bad_symbol": ("symbol", "a control or formatting character, or past 64 characters"),
    "missing_date": ("short_interest_date", "empty"),
    "bad_short_interest": ("percent_of_float", "not a finite percentage of 0 or more"),
}


def _fail_at(name: str, rows: pl.DataFrame, column: str, message: str) -> None:
    """DataError at the first of `rows` (none: nothing to say)."""
    if rows.height:
        row = int(rows.get_column("_row")[0])
        line = csv_lines(name, [row])[row]
        raise DataError(name, message, line=line, column=column)


def rejected_line(rejected: list[Rejection], shown: int = 5) -> str:
    """What a command says of the rows left out: `2 rows left out (bad_short_interest=2):
    si.csv:75975 SFUN (bad_short_interest), si.csv:77220 VLRS (bad_short_interest)`."""
    counts: dict[str, int] = {}
    for r in rejected:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    listed = ", ".join(
        f"{r.raw}{f' {shown_symbol(r.symbol)}' if r.symbol else ''} ({r.reason})"
        for r in rejected[:shown]
    )
    more = f", and {len(rejected) - shown} more" if len(rejected) > shown else ""
    rows = "row" if len(rejected) == 1 else "rows"
    kept = (
        "; of rows with the same symbol, date and figures, the first is kept"
        if "duplicate" in counts
        else ""
    )
    return f"{len(rejected)} {rows} left out ({summary}): {listed}{more}{kept}"
