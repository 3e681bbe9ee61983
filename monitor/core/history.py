""" "What happened next": for each firing, the earlier episodes of the same rule on the same
symbol and the forward returns that followed them.

Only history the alert's own period could have known is used: an earlier firing counts for a
horizon of `h` periods only when its `h` periods had passed by the firing being described.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

GROUP = ["symbol", "variant"]


def attach(firings: pl.DataFrame, horizons: Sequence[int]) -> pl.DataFrame:
    """Add `prior_occurrences`, `prior_dates` (list of dates) and per horizon `n_{h}`,
    `mean_{h}`, `median_{h}`, `up_{h}` (share positive), `min_{h}`, `max_{h}` to `firings`.

    `firings` carries GROUP, `num` (period number: consecutive periods, consecutive numbers),
    `session` and the `fwd_{h}` columns, each (symbol, variant) group contiguous and in `num`
    order, as `monitor.core.firing` makes them. Then the earlier firings of a row are the rows
    above it in its group, and those known for horizon `h` (`num` at most the row's minus `h`)
    a prefix of them, found by binary search.
    Counts over a prefix are differences of running counts over the column; its sum (in the
    group's order, as over a list), extremes and median are the group's running ones at the
    prefix's last row. No list of values per firing (for a symbol with thousands of firings,
    millions of values each) and no pairs of firings.
    """
    if firings.is_empty():
        return firings.with_columns(_empty_stats(horizons))
    new_group = pl.any_horizontal(pl.col(k) != pl.col(k).shift() for k in GROUP).fill_null(True)
    work = firings.with_columns(new_group.cum_sum().alias("_g"))
    group = work.get_column("_g").to_numpy().astype(np.int64)
    num = work.get_column("num").to_numpy().astype(np.int64)
    # (group, num) as one sorted key: the known prefix of a row is a binary search away.
    keys = group * (1 << 32) + num
    start = np.searchsorted(keys, group << 32, side="left")
    rows = np.arange(len(keys))
    longest = int(np.bincount(group).max())  # (a median window as long as any group: expanding)
    # Every horizon's running values (a missing value skipped, as by a list's statistics,
    # and the last one carried over).
    running = _running_values(work, horizons, rows - start, longest)
    columns = [pl.Series("prior_occurrences", rows - start, dtype=pl.UInt32)]
    for h in horizons:
        fwd = work.get_column(f"fwd_{h}")
        known = np.maximum(np.searchsorted(keys, keys - h, side="right") - start, 0)
        n = _prefix_count(fwd.is_not_null(), start, known)
        up = _prefix_count((fwd > 0).fill_null(False), start, known)
        at = running.select(f"{stat}_{h}" for stat in _RUNNING)[
            pl.Series(start + np.maximum(known - 1, 0))
        ]
        some = pl.lit(n > 0)
        columns += (
            at.with_columns(n=n, up=up)
            .select(
                pl.col("n").alias(f"n_{h}"),
                pl.when(some).then(pl.col(f"sum_{h}") / pl.col("n")).alias(f"mean_{h}"),
                pl.when(some).then(f"median_{h}"),
                pl.when(some).then(pl.col("up") / pl.col("n")).alias(f"up_{h}"),
                pl.when(some).then(f"min_{h}"),
                pl.when(some).then(f"max_{h}"),
            )
            .get_columns()
        )
    dates = pl.col("session").implode().over("_g").list.head(pl.lit(rows - start))
    return work.with_columns(columns[0], dates.alias("prior_dates"), *columns[1:]).drop("_g")


# The running statistics of a group's forward returns (see `attach`).
_RUNNING: dict[str, Callable[[pl.Expr, int], pl.Expr]] = {
    "sum": lambda v, _: v.cum_sum().forward_fill().over("_g"),
    "min": lambda v, _: v.cum_min().forward_fill().over("_g"),
    "max": lambda v, _: v.cum_max().forward_fill().over("_g"),
    "median": lambda v, longest: (
        v.rolling_median(window_size=longest, min_samples=1).forward_fill().over("_g")
    ),
}


SCANNED = 256  # (groups up to this long: running sums and extremes by `_scanned`)


def _running_values(
    work: pl.DataFrame, horizons: Sequence[int], position: np.ndarray, longest: int
) -> pl.DataFrame:
    """Per horizon `h` and statistic of _RUNNING, its running value over the row's group
    (`{stat}_{h}`). Sums and extremes are scanned a position of the groups at a time
    (`_scanned`) where no group is longer than SCANNED and no value is NaN (it would be taken
    for a missing one): a third of the time polars takes per group (`over`) over a universe's
    thousands of short groups. Else, and for the medians, polars per group."""
    forward = [work.get_column(f"fwd_{h}") for h in horizons]
    scan = bool(horizons) and longest <= SCANNED and not any(f.is_nan().any() for f in forward)
    left = {k: v for k, v in _RUNNING.items() if not (scan and k in _SCANNED)}
    running = work.select(
        _running(pl.col(f"fwd_{h}"), longest).alias(f"{stat}_{h}")
        for h in horizons
        for stat, _running in left.items()
    )
    if scan:
        for stat, values in zip(_SCANNED, _scanned(forward, position), strict=True):
            running = running.with_columns(
                pl.Series(f"{stat}_{h}", values[:, i], nan_to_null=True)
                for i, h in enumerate(horizons)
            )
    return running


_SCANNED = ("sum", "min", "max")


def _scanned(forward: list[pl.Series], position: np.ndarray) -> list[np.ndarray]:
    """The running sum, minimum and maximum of each of `forward` (a column each) over the row's
    group (`position`: the row's in its group, whose rows are contiguous and in order), a
    missing value skipped and the last value carried over (NaN until the first): for each
    position, the rows there from the row before them, all groups at once. The sum adds in the
    group's order, as polars' running sum does."""
    values = np.column_stack([f.cast(pl.Float64).fill_null(np.nan).to_numpy() for f in forward])
    total, low, high = values.copy(), values.copy(), values.copy()
    order = np.argsort(position, kind="stable")
    ends = np.cumsum(np.bincount(position))
    for begin, end in itertools.pairwise(ends):
        at = order[begin:end]
        before = at - 1
        value, so_far = values[at], total[before]
        missing = np.isnan(value)
        total[at] = np.where(missing, so_far, np.where(np.isnan(so_far), value, so_far + value))
        low[at] = np.fmin(low[before], value)
        high[at] = np.fmax(high[before], value)
    return [total, low, high]


def _prefix_count(flags: pl.Series, start: np.ndarray, known: np.ndarray) -> pl.Series:
    """Per row, how many of the `known` first rows of its group (which begins at `start`) have
    their flag set."""
    running = np.concatenate([[0], np.cumsum(flags.to_numpy(), dtype=np.int64)])
    return pl.Series(running[start + known] - running[start], dtype=pl.UInt32)


def _empty_stats(horizons: Sequence[int]) -> list[pl.Expr]:
    columns = [
        pl.lit(0, pl.UInt32).alias("prior_occurrences"),
        pl.lit([], pl.List(pl.Date)).alias("prior_dates"),
    ]
    for h in horizons:
        columns.append(pl.lit(0, pl.UInt32).alias(f"n_{h}"))
        columns += [
            pl.lit(None, pl.Float64).alias(f"{s}_{h}")
            for s in ("mean", "median", "up", "min", "max")
        ]
    return columns
