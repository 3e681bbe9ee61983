"""`drawdown`: distance from the running high.

Two variants, each its own episode: `near_high` when the close comes back within
`max_below_high` of the high after being further away, `below_high` when it falls
`min_below_high` or more below it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import RuleContext, day, pct, select_keys
from monitor.core.rules.spec import DrawdownRule

SEVERITY = "notice"


def condition(bars: pl.DataFrame, rule: DrawdownRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition per variant: drawdown >= -max_below_high / drawdown <= -min_below_high."""
    high = m.running_high(rule.lookback)
    frame = bars.with_columns(high.alias("high")).with_columns(
        m.high_date(pl.col("high"), rule.lookback).alias("high_date"),
        m.drawdown(pl.col("high")).alias("drawdown"),
    )
    metrics = [pl.col("drawdown"), pl.col("high"), pl.col("high_date"), pl.col("close")]
    parts = []
    if rule.max_below_high is not None:
        near = frame.with_columns(pl.lit("near_high").alias("variant"))
        parts.append(select_keys(near, pl.col("drawdown") >= -rule.max_below_high, metrics))
    if rule.min_below_high is not None:
        below = frame.with_columns(pl.lit("below_high").alias("variant"))
        parts.append(select_keys(below, pl.col("drawdown") <= -rule.min_below_high, metrics))
    return pl.concat(parts)


def describe(row: dict[str, Any], rule: DrawdownRule, ctx: RuleContext) -> tuple[str, str]:
    """Title and sentence for one firing."""
    name = ctx.name(row["symbol"])
    dd = -row["drawdown"]
    high = f"its high of {row['high']:,.2f} on {day(row['high_date'])}"
    if row["variant"] == "near_high":
        title = f"{name} within {pct(rule.max_below_high)} of its high"
        text = f"{name} closed at {row['close']:,.2f}, {pct(dd)} below {high}."
    else:
        title = f"{name} {pct(dd)} below its high"
        text = f"{name} fell to {row['close']:,.2f}, {pct(dd)} below {high}."
    return title, text
