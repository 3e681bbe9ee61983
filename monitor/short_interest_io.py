"""Read a short-interest file as published (symbol, short_interest_date, percent_of_float in
percent; e.g. shared/data/short_interest_us_2020-11_2021-06.csv) without conversion."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from monitor.errors import DataError

REQUIRED = ("symbol", "short_interest_date", "percent_of_float")


def read_short_interest(path: str | Path) -> pl.DataFrame:
    """The file's rows with typed columns; DataError naming file, line and column on bad input."""
    name = str(path)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(name, f"cannot read: {exc}") from None
    cols = {c.lower(): c for c in raw.columns}
    for need in REQUIRED:
        if need not in cols:
            raise DataError(name, f"missing column {need!r}")
    keep = [*REQUIRED, "shares_sold_short"]
    frame = raw.select([pl.col(cols[c]).alias(c) for c in keep if c in cols])
    typed = frame.with_columns(
        pl.col("short_interest_date").str.to_date("%Y-%m-%d", strict=False).alias("_date"),
        pl.col("percent_of_float").cast(pl.Float64, strict=False).alias("_pct"),
    )
    bad_date = typed.with_row_index("row").filter(
        pl.col("_date").is_null() & pl.col("short_interest_date").is_not_null()
    )
    if bad_date.height:
        line = int(bad_date.item(0, "row")) + 2
        raise DataError(name, "not a YYYY-MM-DD date", line=line, column="short_interest_date")
    bad_pct = typed.with_row_index("row").filter(
        pl.col("_pct").is_null() & (pl.col("percent_of_float").str.strip_chars() != "")
    )
    if bad_pct.height:
        line = int(bad_pct.item(0, "row")) + 2
        raise DataError(name, "not a number", line=line, column="percent_of_float")
    out = typed.with_columns(
        pl.col("_date").alias("short_interest_date"), pl.col("_pct").alias("percent_of_float")
    ).drop("_date", "_pct")
    if "shares_sold_short" in out.columns:
        out = out.with_columns(pl.col("shares_sold_short").cast(pl.Float64, strict=False))
    return out
