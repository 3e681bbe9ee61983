"""Short interest as it was known: each figure counts from `lag` sessions after its settlement
date (exchanges publish about eight sessions later), so replay never uses numbers nobody had yet."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from monitor.core.sessions import Sessions

SCHEMA = {
    "symbol": pl.String(),
    "effective": pl.Date(),
    "lag": pl.Int32(),
    "short_interest": pl.Float64(),
    "short_interest_date": pl.Date(),
    "shares_short": pl.Float64(),
}


def prepare(raw: pl.DataFrame, sessions: Sessions, lags: Iterable[int]) -> pl.DataFrame:
    """From published rows (symbol, short_interest_date, percent_of_float in percent, optional
    shares_sold_short) to rows keyed by the date each figure became usable, for every lag asked.
    `short_interest` is a fraction of float (GME's 138.4 becomes 1.384); blank stays null."""
    shares = (
        pl.col("shares_sold_short").cast(pl.Float64)
        if "shares_sold_short" in raw.columns
        else pl.lit(None, pl.Float64)
    )
    base = raw.select(
        pl.col("symbol").cast(pl.String),
        pl.col("short_interest_date").cast(pl.Date),
        (pl.col("percent_of_float").cast(pl.Float64) / 100.0).alias("short_interest"),
        shares.alias("shares_short"),
    ).filter(pl.col("symbol").is_not_null() & pl.col("short_interest_date").is_not_null())
    dates = sessions.frame.get_column("session").to_numpy()
    settled = base.get_column("short_interest_date").to_numpy()
    first = np.searchsorted(dates, settled, side="left")
    parts = []
    for lag in sorted(set(lags)):
        pos = first + lag
        ok = pos < len(dates)
        effective = np.where(ok, dates[np.minimum(pos, len(dates) - 1)], np.datetime64("NaT"))
        parts.append(
            base.with_columns(
                pl.Series("effective", effective).cast(pl.Date), pl.lit(lag, pl.Int32).alias("lag")
            )
        )
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    out = pl.concat(parts).filter(pl.col("effective").is_not_null())
    return out.select(list(SCHEMA)).sort("lag", "symbol", "effective")
