"""Rolling metrics as polars expressions over a whole universe of bars at once.

Every expression here expects a frame sorted by (`symbol`, `ts`) with one row per symbol and
period and `idx` numbering each symbol's periods 0, 1, 2, ... (Engine.frame makes it so), and
computes per symbol. Returns are fractions.

Where a window reaches back a fixed number of rows, "same symbol" is a test of `idx` (row i and
row i - n belong to one symbol exactly when `idx >= n`), so the expression runs over the whole
column at once: a `.over("symbol")` hashes every row's symbol, and on a universe of millions of
bars that costs more than the arithmetic.
"""

from __future__ import annotations

import numpy as np
import polars as pl

BY = "symbol"


def back(value: pl.Expr, n: int) -> pl.Expr:
    """`value` `n` periods earlier in the same symbol (null before the symbol's first period)."""
    return pl.when(pl.col("idx") >= n).then(value.shift(n))


def full_window(rolling: pl.Expr, span: int) -> pl.Expr:
    """A rolling expression over the last `span` rows, kept where they are all the symbol's own
    (for windows that need all `span` values anyway)."""
    return pl.when(pl.col("idx") >= span - 1).then(rolling)


def period_return() -> pl.Expr:
    """Close-to-close return of each period."""
    return pl.col("close") / back(pl.col("close"), 1) - 1.0


def window_return(window: int) -> pl.Expr:
    """Close-to-close return over the last `window` periods."""
    return pl.col("close") / back(pl.col("close"), window) - 1.0


def run_length(condition: pl.Expr) -> pl.Expr:
    """Length of the current run of consecutive periods where `condition` holds (0 when not).

    Needs `idx` (period number within the symbol): the run is `idx` minus the `idx` of the
    latest period where the condition failed (or -1 when it never did)."""
    hit, idx = condition.fill_null(False), pl.col("idx")
    # Every symbol's first row is set (its idx, or -1 when the condition holds there), so the
    # forward fill never carries one symbol's miss into the next.
    last_miss = pl.when(~hit).then(idx).when(idx == 0).then(-1).forward_fill()
    return (idx - last_miss).cast(pl.Int32)


def volume_ratio(window: int) -> pl.Expr:
    """Volume over the mean volume of the previous `window` periods (the current one excluded)."""
    trailing = full_window(pl.col("volume").shift(1).rolling_mean(window), window + 1)
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
