"""Short interest as it was known: each figure counts from `lag` sessions after its settlement
date (exchanges publish about eight sessions later), so replay never uses numbers nobody had yet,
and for `max_age` sessions after it (a figure no newer one replaced in time is stale)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from monitor.core.sessions import Sessions

SCHEMA = {
    "symbol": pl.String(),
    "effective": pl.Date(),
    "lag": pl.Int32(),
    "max_age": pl.Int32(),
    "expires": pl.Date(),  # the last session the figure counts (null: past the calendar's end)
    "short_interest": pl.Float64(),
    "short_interest_date": pl.Date(),
    "shares_short": pl.Float64(),
}


def prepare(
    raw: pl.DataFrame, sessions: Sessions, terms: Iterable[tuple[int, int]]
) -> pl.DataFrame:
    """From published rows (symbol, short_interest_date, percent_of_float in percent, optional
    shares_sold_short) to rows keyed by the date each figure became usable, for every
    (lag, max_age) asked. `short_interest` is a fraction of float (GME's 138.4 becomes 1.384);
    blank stays null. A figure settled before the calendar's first session counts from the
    `lag`-th session of the calendar: late rather than early (the sessions between are not
    known); one settled on a day that is no session counts from the `lag`-th session after
    it (lag 0: the first); of figures usable from the same session, the one settled last is
    used."""
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
    # A settlement on a day that is no session (a Saturday, a holiday): the session after it is
    # the first session after the settlement, not the 0th (that is the settlement itself).
    inside = first < len(dates)
    off_session = (
        inside & (settled > dates[0]) & (dates[np.minimum(first, len(dates) - 1)] != settled)
    )

    def session_at(pos: np.ndarray) -> pl.Series:  # (null past the calendar's end)
        found = dates[np.minimum(pos, len(dates) - 1)]
        return pl.Series(np.where(pos < len(dates), found, np.datetime64("NaT"))).cast(pl.Date)

    parts = [
        base.with_columns(
            session_at(first + lag - (off_session & (lag > 0))).alias("effective"),
            pl.lit(lag, pl.Int32).alias("lag"),
            pl.lit(max_age, pl.Int32).alias("max_age"),
            session_at(first + max_age - (off_session & (max_age > 0))).alias("expires"),
        )
        for lag, max_age in sorted(set(terms))
    ]
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    out = pl.concat(parts).filter(pl.col("effective").is_not_null())
    # (of figures usable from the same session, the one settled last is last: the as-of match)
    keys = ["lag", "max_age", "symbol", "effective", "short_interest_date"]
    return out.select(list(SCHEMA)).sort(keys)
