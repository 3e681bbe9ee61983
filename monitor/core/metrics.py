"""Rolling metrics as polars expressions over a whole universe of bars at once.

Every expression here expects a frame sorted by (`symbol`, `ts`) with one row per symbol and
period, and computes per symbol (`.over("symbol")`). Returns are fractions.
"""

from __future__ import annotations

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
    """Length of the current run of consecutive periods where `condition` holds (0 when not).

    Needs `idx` (period number within the symbol): the run is `idx` minus the `idx` of the
    latest period where the condition failed (or -1 when it never did)."""
    hit = condition.fill_null(False)
    last_miss = pl.when(~hit).then(pl.col("idx")).forward_fill().over(BY).fill_null(-1)
    return (pl.col("idx") - last_miss).cast(pl.Int32)


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


def prior_larger(values: np.ndarray, starts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each position, the position of the most recent earlier row of the same group with a
    strictly larger value, or -1. `starts[i]` is the first position of `positions[i]`'s group.

    Vectorised over all positions at once, looking back in blocks of lags that grow: most
    answers are found in the first blocks, and only the unresolved rows are carried on."""
    positions = np.asarray(positions, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    found = np.full(len(positions), -1, dtype=np.int64)
    active = np.arange(len(positions))
    lag, block = 1, 16
    while active.size:
        width = max(1, min(block, 4_000_000 // active.size))
        lags = np.arange(lag, lag + width, dtype=np.int64)
        back = positions[active, None] - lags[None, :]
        valid = back >= starts[active, None]
        larger = valid & (values[np.maximum(back, 0)] > values[positions[active], None])
        hit = larger.any(axis=1)
        first = larger.argmax(axis=1)
        found[active[hit]] = back[hit, first[hit]]
        active = active[~hit & valid[:, -1]]
        lag += width
        block *= 2
    return found
