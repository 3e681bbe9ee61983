"""Rolling metrics as polars expressions over a whole universe of bars at once.

Every expression here expects a frame sorted by (`symbol`, `ts`) with one row per symbol and
period, `idx` numbering each symbol's rows 0, 1, 2, ... and `reach` how far back from each a
window may go (for sessions and weeks, the symbol's consecutive ones: not across one missing
from its history; for minutes the minute's number in its session: see `back`; Engine.frame
makes them so), and computes per symbol. Returns are fractions.

Where a window reaches back a fixed number of rows, "same symbol" is a test of `reach` (row i
and row i - n belong to one symbol, with no gap between, exactly when `reach >= n`), so the
expression runs over the whole
column at once: a `.over("symbol")` hashes every row's symbol, and on a universe of millions of
bars that costs more than the arithmetic.
"""

from __future__ import annotations

import numpy as np
import polars as pl

BY = "symbol"


def back(value: pl.Expr, n: int) -> pl.Expr:
    """`value` `n` periods earlier in the same symbol (null before the symbol's first period,
    across a session or week missing from its history, and for minutes before the session's
    first: `reach`, the periods a window may reach back over, counts the symbol's consecutive
    sessions or weeks, and the minute's number in its session for minutes; see
    `bar_history.derived`). So a daily `ret1` is null on the first session after a gap."""
    return pl.when(pl.col("reach") >= n).then(value.shift(n))


def full_window(rolling: pl.Expr, span: int) -> pl.Expr:
    """A rolling expression over the last `span` rows, kept where they are all the symbol's own
    (and, for minutes, of one session: see `back`); for windows that need all `span` values."""
    return pl.when(pl.col("reach") >= span - 1).then(rolling)


def period_return() -> pl.Expr:
    """Close-to-close return of each period."""
    return pl.col("close") / back(pl.col("close"), 1) - 1.0


def window_return(window: int) -> pl.Expr:
    """Close-to-close return over the last `window` periods."""
    return pl.col("close") / back(pl.col("close"), window) - 1.0


COVERAGE_PERIODS = 5  # a period's bars are counted against the most of this many before it


def coverage(bars: pl.DataFrame) -> pl.DataFrame:
    """Per period (`session`, `coverage`): how many symbols have a bar, over the most that had
    one in any of the `COVERAGE_PERIODS` periods before (1.0 for the first). A cross-section of
    a session whose bars are still coming in (a feed's daily bars, symbol by symbol), or of a
    period with a hole in the data, is not the universe's: rules comparing symbols wait until
    enough of them are in (see `with_coverage`). Against the period before alone, a second
    period as thin as the first would count as whole; against the most of a week of them, a
    universe that shrinks for good is compared with itself again after a week."""
    counts = bars.group_by("session").agg(pl.len().alias("n")).sort("session")
    before = pl.col("n").shift(1).rolling_max(COVERAGE_PERIODS, min_samples=1)
    share = pl.col("n") / before
    return counts.select("session", share.fill_null(1.0).alias("coverage"))


def with_coverage(frame: pl.DataFrame, bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """`frame` (rows of the periods of `bars`) with the `coverage` of its period. Minute bars
    close together, and a quiet minute has few: 1.0 throughout, nothing counted."""
    if timeframe == "1m":
        return frame.with_columns(pl.lit(1.0).alias("coverage"))
    return frame.join(coverage(bars), on="session", how="left", maintain_order="left")


def run_lengths(hit: pl.Series, idx: pl.Series) -> pl.Series:
    """Per row, the length of the current run of consecutive periods of its symbol where `hit`
    holds (0 where it does not); `idx` is the row number within the symbol (a run starts
    afresh where it is 0: pass `reach`, and a minute's run stays in its session). A null `hit`
    is a miss.

    The run is the row's position less that of the latest miss, found by a running maximum
    (numpy: polars has no running maximum that resets per symbol without a window). Every
    symbol's first row sets a mark, itself when it misses or the row before when it hits, so
    a run never reaches back into the previous symbol."""
    hits = hit.fill_null(False).to_numpy()
    rows = np.arange(len(hits), dtype=np.int32)
    marks = rows.copy()  # (few arrays, filled in place: fresh pages cost more than the sums)
    marks[hits] = -1
    first = hits & (idx.to_numpy() == 0)
    marks[first] = rows[first] - 1
    np.maximum.accumulate(marks, out=marks)
    np.subtract(rows, marks, out=marks)
    return pl.Series(marks)


GATHERED_SPAN = 64  # (trailing_min: past it, a rolling minimum costs less than the gathers)


def trailing_min(values: pl.Series, where: pl.Series, span: int) -> pl.Series:
    """The minimum of the last `span` values (the row's included) at rows where `where` holds,
    null elsewhere; those rows must have `span` values of their own symbol (as where a run
    of at least `span` periods holds). Gathered at those rows only, or, for a long span
    (up to 100,000 periods: one gather per period would take seconds a step), a rolling
    minimum over every row."""
    rows = where.fill_null(False).arg_true()
    if rows.is_empty():
        return _at_rows(values, rows, values.clear(), len(where))
    if span > GATHERED_SPAN:
        rolled = values.rolling_min(span, min_samples=1).gather(rows)
        return _at_rows(values, rows, rolled, len(where))
    lowest = pl.select(pl.min_horizontal([values.gather(rows - k) for k in range(span)]))
    return _at_rows(values, rows, lowest.to_series(), len(where))


def trailing_return(close: pl.Series, where: pl.Series, span: int) -> pl.Series:
    """`window_return(span)` at rows where `where` holds, null elsewhere; those rows must have
    `span` earlier periods of their own symbol. Computed at those rows only."""
    rows = where.fill_null(False).arg_true()
    value = close.gather(rows) / close.gather(rows - span) - 1.0
    return _at_rows(close, rows, value, len(where))


def _at_rows(like: pl.Series, rows: pl.Series, values: pl.Series, length: int) -> pl.Series:
    """A column of `length` nulls (named and typed as `like`) with `values` at `rows`."""
    if not length:
        return like.clear()
    out = pl.Series(like.name, [None], dtype=like.dtype).extend_constant(None, length - 1)
    return out.scatter(rows, values)


def volume_ratio(window: int) -> pl.Expr:
    """Volume over the mean volume of the previous `window` periods (the current one excluded)."""
    trailing = full_window(pl.col("volume").shift(1).rolling_mean(window), window + 1)
    return pl.when(trailing > 0).then(pl.col("volume") / trailing)


def with_high(frame: pl.DataFrame, lookback: int | None = None) -> pl.DataFrame:
    """`frame` with `high`, the highest close so far (or of the last `lookback` periods, the
    current included, counted by `num`: see `bar_history.derived`), `high_row`, the frame's
    row where it was set (the latest of equal closes), and `high_date`, that row's session.

    Over a lookback the high's row is the rolling maximum of a key that orders rows by close,
    then by row: the dense rank of the close times the frame's height, plus the row. (The
    latest row whose close was a high *when it was set* is not it: a larger close may since
    have left the window, leaving a high set by a close that was not one.)"""
    height = frame.height
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    if lookback is None:  # (a symbol's first row is its own high: the fill stays within it)
        at = pl.when(pl.col("close") >= pl.col("close").cum_max().over(BY)).then(row)
        frame = frame.with_columns(at.forward_fill().alias("high_row"))
    else:  # (the last `lookback` periods by `num`: a period missing from the history is one)
        key = pl.col("close").rank("dense").cast(pl.Int64) * height + row
        frame = frame.with_columns(key.alias("high_row"))
        latest = pl.col("high_row").rolling_max_by("num", f"{lookback}i").over(BY)
        frame = frame.with_columns(latest % height)
    return frame.with_columns(
        pl.col("close").gather("high_row").alias("high"),
        pl.col("session").gather("high_row").alias("high_date"),
    )


def drawdown(high: pl.Expr) -> pl.Expr:
    """Close relative to the running high: -0.073 is 7.3% below it."""
    return pl.col("close") / high - 1.0


def prior_larger(
    values: pl.Series,
    starts: np.ndarray,
    positions: np.ndarray,
    block: int = 8,
    margin: float = 0.0,
) -> np.ndarray:
    """For each position, the position of the most recent earlier row of the same group with a
    value larger by more than `margin` (float noise: two equal returns computed from different
    prices differ in their last bits), or -1. `starts[i]` is the first position of
    `positions[i]`'s group. A missing value (null or NaN) is never larger, and a missing target
    finds nothing.

    Only rows above the smallest target can be an answer (for a surge, the rows where the
    return is past the rule's threshold: a few percent of a universe's history), so the search
    runs over those alone, with the bounds moved to their positions: the column itself is
    neither copied nor converted."""
    positions = np.asarray(positions, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    found = np.full(len(positions), -1, dtype=np.int64)
    if not len(positions):
        return found
    target = values.gather(positions).cast(pl.Float64).to_numpy() + margin  # (null: NaN)
    asked = np.flatnonzero(~np.isnan(target))
    if not asked.size:
        return found
    larger = (values > target[asked].min()) & values.is_not_nan()  # (NaN: above all in polars)
    rows = larger.fill_null(False).arg_true().to_numpy().astype(np.int64)
    if not rows.size:
        return found
    first = np.searchsorted(rows, starts[asked], side="left")
    last = np.searchsorted(rows, positions[asked], side="left") - 1  # before the position
    candidates = values.gather(rows).cast(pl.Float64).to_numpy()
    hit = _latest_larger(candidates, first, last, target[asked], block)
    found[asked] = np.where(hit >= 0, rows[np.maximum(hit, 0)], -1)
    return found


def _latest_larger(
    values: np.ndarray, starts: np.ndarray, last: np.ndarray, target: np.ndarray, block: int
) -> np.ndarray:
    """Per query, the latest row in [starts, last] with a value above its target, or -1 (an
    empty range when last < starts).

    Vectorised over all queries at once, in three moves of at most `block` rows or a few table
    look-ups each, however far back the answer lies: (1) the rows up to `last` in its block of
    `block` rows; (2) the nearest earlier block whose maximum is larger, found by halving jumps
    over a table of block maxima (the maximum of 1, 2, 4, ... blocks from each); (3) the latest
    larger row in that block. A block holding a range's first row may also hold rows before it:
    rows before `starts` never count. `block` is a power of two."""
    found = _latest_in_block(values, np.maximum(last, 0) // block, block, starts, last, target)
    # Whole blocks left to search: those after the range's first block and before last's.
    todo = np.flatnonzero((found < 0) & ((last // block) * block > starts))
    if not todo.size:
        return found
    maxima = _block_maxima(values, block)
    table = [maxima]  # table[k][b]: the maximum of blocks b .. b + 2**k - 1
    span = int((last[todo] // block - starts[todo] // block).max())
    while 1 << len(table) <= span:
        k = len(table)
        table.append(np.maximum(table[-1][: -(1 << (k - 1))], table[-1][1 << (k - 1) :]))
    v, lo = target[todo], starts[todo] // block
    cur = last[todo] // block - 1
    for k in reversed(range(len(table))):  # skip 2**k blocks whenever none of them is larger
        first = cur - (1 << k) + 1
        skip = (first >= lo) & (table[k][np.maximum(first, 0)] <= v)
        cur = np.where(skip, cur - (1 << k), cur)
    hit = (cur >= lo) & (maxima[np.maximum(cur, 0)] > v)
    rows = todo[hit]
    found[rows] = _latest_in_block(values, cur[hit], block, starts[rows], last[rows], v[hit])
    return found


def _block_maxima(values: np.ndarray, block: int) -> np.ndarray:
    """The maximum of each run of `block` rows (a power of two), the last run possibly short:
    halving pairwise maxima, about twice as fast as a reduction along a short axis."""
    whole = len(values) // block * block
    folded = values[:whole].reshape(-1, block)
    while folded.shape[1] > 1:
        half = folded.shape[1] // 2
        folded = np.fmax(folded[:, :half], folded[:, half:])  # (NaN: ignored)
    maxima = folded[:, 0]
    if whole < len(values):
        maxima = np.append(maxima, np.fmax.reduce(values[whole:]))
    # (A block of NaN only has nothing larger in it; a fresh array, never `values` itself.)
    return np.where(np.isnan(maxima), -np.inf, maxima)


def _latest_in_block(
    values: np.ndarray,
    blocks: np.ndarray,
    size: int,
    starts: np.ndarray,
    last: np.ndarray,
    target: np.ndarray,
) -> np.ndarray:
    """Per query, the latest row of its block in [starts, last] with a value above its
    target, or -1. Blocks are gathered whole, as rows of a (blocks, size) view."""
    whole = len(values) // size
    if whole:
        gathered = values[: whole * size].reshape(-1, size)[np.minimum(blocks, whole - 1)]
    else:
        gathered = np.empty((len(blocks), size))
    if whole * size < len(values):  # the short last block, padded with -inf
        tail = np.full(size, -np.inf)
        tail[: len(values) - whole * size] = values[whole * size :]
        gathered[blocks == whole] = tail
    column = np.arange(size)[None, :]
    first, latest = starts - blocks * size, last - blocks * size  # bounds within the block
    larger = (column >= first[:, None]) & (column <= latest[:, None])
    larger &= gathered > target[:, None]
    at = size - 1 - larger[:, ::-1].argmax(axis=1)
    hit = larger[np.arange(len(at)), at]
    return np.where(hit, blocks * size + at, -1)
