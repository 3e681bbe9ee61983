""" "What happened next": for each firing, the earlier episodes of the same rule on the same
symbol and the forward returns that followed them.

Only history the alert's own period could have known is used: an earlier firing counts for a
horizon of `h` periods only when its `h` periods had passed by the firing being described.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

GROUP = ["symbol", "variant"]


def attach(firings: pl.DataFrame, horizons: Sequence[int]) -> pl.DataFrame:
    """Add `prior_occurrences`, `prior_dates` (list of dates) and per horizon `n_{h}`,
    `mean_{h}`, `median_{h}`, `up_{h}` (share positive), `min_{h}`, `max_{h}` to `firings`.

    `firings` carries GROUP, `idx` (period number), `session` and the `fwd_{h}` columns, each
    (symbol, variant) group contiguous and in `idx` order, as `monitor.core.firing` makes them.
    Then the earlier firings of a row are the rows above it in its group, and those known for
    horizon `h` (`idx` at most the row's minus `h`) a prefix of them, found by binary search:
    counts are differences of running counts, and the other statistics are over the head of
    the group's list. No pairs of firings are formed.
    """
    if firings.is_empty():
        return firings.with_columns(_empty_stats(horizons))
    new_group = pl.any_horizontal(pl.col(k) != pl.col(k).shift() for k in GROUP).fill_null(True)
    work = firings.with_columns(new_group.cum_sum().alias("_g"))
    group = work.get_column("_g").to_numpy().astype(np.int64)
    idx = work.get_column("idx").to_numpy().astype(np.int64)
    # (group, idx) as one sorted key: the known prefix of a row is a binary search away.
    keys = group * (1 << 32) + idx
    start = np.searchsorted(keys, group << 32, side="left")
    rows = np.arange(len(keys))
    columns: list[pl.Expr | pl.Series] = [
        pl.Series("prior_occurrences", rows - start, dtype=pl.UInt32),
        pl.col("session").implode().over("_g").list.head(pl.lit(rows - start)).alias("prior_dates"),
    ]
    heads: list[pl.Expr] = []
    for h in horizons:
        known = np.maximum(np.searchsorted(keys, keys - h, side="right") - start, 0)
        fwd = work.get_column(f"fwd_{h}")
        # Counts over a prefix are differences of running counts; the values need the list.
        columns += [
            _prefix_count(fwd.is_not_null(), start, known).alias(f"_n{h}"),
            _prefix_count((fwd > 0).fill_null(False), start, known).alias(f"_u{h}"),
        ]
        heads.append(
            pl.col(f"fwd_{h}").implode().over("_g").list.head(pl.lit(known)).alias(f"_v{h}")
        )
    # The heads first, then the statistics over them: each list is built once.
    work = work.with_columns(*columns, *heads)
    stats = [e for h in horizons for e in _stats(h)]
    return work.with_columns(stats).drop("_g", *[f"_{p}{h}" for h in horizons for p in "vnu"])


def _prefix_count(flags: pl.Series, start: np.ndarray, known: np.ndarray) -> pl.Series:
    """Per row, how many of the `known` first rows of its group (which begins at `start`) have
    their flag set."""
    running = np.concatenate([[0], np.cumsum(flags.to_numpy(), dtype=np.int64)])
    return pl.Series(running[start + known] - running[start], dtype=pl.UInt32)


def _stats(h: int) -> list[pl.Expr]:
    """The statistics of horizon `h`: `_v{h}` the known values, `_n{h}` and `_u{h}` how many
    are known and positive."""
    values = pl.col(f"_v{h}")
    n = pl.col(f"_n{h}")
    some = n > 0
    return [
        n.alias(f"n_{h}"),
        pl.when(some).then(values.list.sum() / n).alias(f"mean_{h}"),
        pl.when(some).then(values.list.median()).alias(f"median_{h}"),
        pl.when(some).then(pl.col(f"_u{h}") / n).alias(f"up_{h}"),
        pl.when(some).then(values.list.min()).alias(f"min_{h}"),
        pl.when(some).then(values.list.max()).alias(f"max_{h}"),
    ]


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
