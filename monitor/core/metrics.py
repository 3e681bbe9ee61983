"""Rolling metrics as polars expressions over a whole universe of bars at once.

Every expression here expects a frame sorted by (`symbol`, `ts`) with one row per symbol and
period, and computes per symbol (`.over("symbol")`). Returns are fractions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

BY = "symbol"


def period_return() -> pl.Expr:
    """Close-to-close return of each period."""
    return pl.col("close") / pl.col("close").shift(1).over(BY) - 1.0


def window_return(window: int) -> pl.Expr:
    """Close-to-close return over the last `window` periods."""
    return pl.col("close") / pl.col("close").shift(window).over(BY) - 1.0


def run_length(condition: pl.Expr) -> pl.Expr:
    """Length of the current run of consecutive periods where `condition` holds (0 when not)."""
    hit = condition.fill_null(False)
    breaks = (~hit).cast(pl.Int32).cum_sum().over(BY)
    return hit.cast(pl.Int32).cum_sum().over(BY, breaks)


def volume_ratio(window: int) -> pl.Expr:
    """Volume over the mean volume of the previous `window` periods (the current one excluded)."""
    trailing = pl.col("volume").shift(1).rolling_mean(window, min_samples=window).over(BY)
    return pl.when(trailing > 0).then(pl.col("volume") / trailing)


def running_high(lookback: int | None = None) -> pl.Expr:
    """The highest close so far (or over the last `lookback` periods, the current included)."""
    if lookback is None:
        return pl.col("close").cum_max().over(BY)
    return pl.col("close").rolling_max(lookback, min_samples=1).over(BY)


def high_date(high: pl.Expr, lookback: int | None = None) -> pl.Expr:
    """The session on which the running high of `high` was set."""
    at_high = pl.when(pl.col("close") >= high).then(pl.col("session"))
    if lookback is None:
        return at_high.forward_fill().over(BY)
    return at_high.forward_fill(limit=lookback - 1).over(BY)


def drawdown(high: pl.Expr) -> pl.Expr:
    """Close relative to the running high: -0.073 is 7.3% below it."""
    return pl.col("close") / high - 1.0


def prior_larger(values: np.ndarray, starts: np.ndarray, positions: Sequence[int]) -> list[int]:
    """For each row position, the position of the most recent earlier row of the same symbol
    with a strictly larger value, or -1. `starts[p]` is the first position of p's symbol.

    Only called for the rows that fire, so a backwards scan per row stays cheap.
    """
    out: list[int] = []
    for p in positions:
        s = int(starts[p])
        earlier = np.flatnonzero(values[s:p] > values[p])
        out.append(s + int(earlier[-1]) if earlier.size else -1)
    return out
