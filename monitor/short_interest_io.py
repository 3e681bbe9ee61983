"""Read a short-interest file as published (symbol, short_interest_date, percent_of_float in
percent; e.g. shared/data/short_interest_us_2020-11_2021-06.csv) without conversion.

A cell that cannot be used is a DataError naming the file, the line (as an editor counts it,
quoted fields spanning lines included) and the column, as for the bar files
(`monitor.csvfiles`): a date that is no YYYY-MM-DD, a percentage that is not a number, not
finite or negative, an empty symbol or date. An empty percentage is no figure (the rule's
`unknown_short_interest` decides). Headers are matched as the bar files' are (case and
surrounding spaces aside)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from monitor.csvfiles import csv_failure, csv_header, csv_lines
from monitor.errors import DataError

REQUIRED = ("symbol", "short_interest_date", "percent_of_float")


def read_short_interest(path: str | Path) -> pl.DataFrame:
    """The file's rows with typed columns; DataError naming file, line and column on bad input."""
    name = str(path)
    header = csv_header(name)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise csv_failure(name, len(header), exc) from None
    cols = {c.strip().lower(): c for c in raw.columns}
    for need in REQUIRED:
        if need not in cols:
            raise DataError(name, f"missing column {need!r}")
    keep = [*REQUIRED, "shares_sold_short"]
    frame = raw.select([pl.col(cols[c]).alias(c) for c in keep if c in cols])
    typed = frame.with_columns(
        pl.col("short_interest_date").str.to_date("%Y-%m-%d", strict=False).alias("_date"),
        pl.col("percent_of_float").cast(pl.Float64, strict=False).alias("_pct"),
    ).with_row_index("_row")
    blank = pl.col("percent_of_float").is_null() | (
        pl.col("percent_of_float").str.strip_chars() == ""
    )
    problems = [
        (
            pl.col("symbol").is_null() | (pl.col("symbol").str.strip_chars() == ""),
            "symbol",
            "empty",
        ),
        (pl.col("_date").is_null(), "short_interest_date", "not a YYYY-MM-DD date"),
        (
            ~blank & ~(pl.col("_pct").is_finite() & (pl.col("_pct") >= 0)).fill_null(False),
            "percent_of_float",
            "not a finite percentage of 0 or more",
        ),
    ]
    for bad, column, message in problems:
        rows = typed.filter(bad).get_column("_row")
        if rows.len():
            row = int(rows[0])
            line = csv_lines(name, [row])[row]
            raise DataError(name, message, line=line, column=cols[column])
    out = typed.with_columns(
        pl.col("_date").alias("short_interest_date"), pl.col("_pct").alias("percent_of_float")
    ).drop("_date", "_pct", "_row")
    if "shares_sold_short" in out.columns:
        out = out.with_columns(pl.col("shares_sold_short").cast(pl.Float64, strict=False))
    return out
