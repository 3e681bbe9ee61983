""" "What happened next": for each firing, the earlier episodes of the same rule on the same
symbol and the forward returns that followed them.

Only history the alert's own period could have known is used: an earlier firing counts for a
horizon of `h` periods only when its `h` periods had passed by the firing being described.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

GROUP = ["symbol", "variant"]


def attach(firings: pl.DataFrame, horizons: Sequence[int]) -> pl.DataFrame:
    """Add `prior_occurrences`, `prior_dates` (list of dates) and per horizon `n_{h}`,
    `mean_{h}`, `median_{h}`, `up_{h}` (share positive), `min_{h}`, `max_{h}` to `firings`
    (which must carry GROUP, `idx`, `session` and the `fwd_{h}` columns)."""
    prior = firings.select(
        *GROUP,
        pl.col("idx").alias("p_idx"),
        pl.col("session").alias("p_session"),
        *[pl.col(f"fwd_{h}").alias(f"p_fwd_{h}") for h in horizons],
    )
    pairs = (
        firings.select(*GROUP, "idx").join(prior, on=GROUP).filter(pl.col("p_idx") < pl.col("idx"))
    )
    aggs: list[pl.Expr] = [
        pl.len().alias("prior_occurrences"),
        pl.col("p_session").sort().alias("prior_dates"),
    ]
    for h in horizons:
        known = pl.col(f"p_fwd_{h}").filter(pl.col("p_idx") + h <= pl.col("idx"))
        aggs += [
            known.count().alias(f"n_{h}"),
            known.mean().alias(f"mean_{h}"),
            known.median().alias(f"median_{h}"),
            (known > 0).mean().alias(f"up_{h}"),
            known.min().alias(f"min_{h}"),
            known.max().alias(f"max_{h}"),
        ]
    stats = pairs.group_by(*GROUP, "idx").agg(aggs)
    out = firings.join(stats, on=[*GROUP, "idx"], how="left")
    return out.with_columns(
        pl.col("prior_occurrences").fill_null(0),
        pl.col("prior_dates").fill_null(pl.lit([], dtype=pl.List(pl.Date))),
        *[pl.col(f"n_{h}").fill_null(0) for h in horizons],
    )
