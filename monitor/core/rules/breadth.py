"""`breadth`: the share of the universe up over `window` periods."""

from __future__ import annotations

from typing import Any

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import RuleContext, pct, select_keys, unit
from monitor.core.rules.spec import BreadthRule

SEVERITY = "notice"


def condition(bars: pl.DataFrame, rule: BreadthRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: at least `min_symbols` have a `window` return and `min_share` of them are up.
    The reference series for "what happened next" is an equal-weight index of the universe."""
    per_symbol = bars.with_columns(m.window_return(rule.window).alias("wret"))
    frame = (
        per_symbol.group_by("session")
        .agg(
            pl.col("ts").max(),
            (pl.col("wret") > 0).sum().alias("up"),
            pl.col("wret").is_not_null().sum().alias("counted"),
            pl.col("ret1").mean().fill_null(0.0).alias("mean_ret1"),
        )
        .sort("session")
        .with_columns(
            pl.lit(rule.label).alias("symbol"),
            pl.int_range(pl.len()).alias("idx"),
            (pl.col("up") / pl.col("counted")).alias("share"),
            (1.0 + pl.col("mean_ret1")).cum_prod().alias("ref"),
        )
    )
    cond = (pl.col("counted") >= rule.min_symbols) & (pl.col("share") >= rule.min_share)
    return select_keys(frame, cond, [pl.col("share"), pl.col("up"), pl.col("counted")])


def describe(row: dict[str, Any], rule: BreadthRule, ctx: RuleContext) -> tuple[str, str]:
    """Title and sentence for one firing."""
    w = rule.window
    name = ctx.name(rule.label)
    title = f"Breadth: {pct(row['share'])} of {name} up over {w} {unit(rule.timeframe, w)}"
    text = (
        f"{pct(row['share'])} of {name} ({row['up']:,} of {row['counted']:,}) "
        f"rose over the last {w} {unit(rule.timeframe, w)}."
    )
    return title, text
