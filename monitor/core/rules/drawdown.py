"""`drawdown`: distance from the running high.

Two variants, each its own episode: `near_high` when the close comes back within
`max_below_high` of the high after being further away, `below_high` when it falls
`min_below_high` or more below it.
"""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import (
    RuleContext,
    at_most,
    fixed_expr,
    pct_expr,
    pct_setting,
    reaches,
    select_keys,
    text_expr,
)
from monitor.core.rules.spec import DrawdownRule

SEVERITY = "notice"
PER_SYMBOL = True  # a symbol's firings depend on its own bars alone


def condition(bars: pl.DataFrame, rule: DrawdownRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition per variant: drawdown >= -max_below_high / drawdown <= -min_below_high."""
    frame = m.with_high(bars, rule.lookback)
    frame = frame.with_columns(m.drawdown(pl.col("high")).alias("drawdown"))
    metrics = [pl.col("drawdown"), pl.col("high"), pl.col("high_date"), pl.col("close")]
    parts = []
    if rule.max_below_high is not None:
        near = frame.with_columns(pl.lit("near_high").alias("variant"))
        parts.append(select_keys(near, reaches(pl.col("drawdown"), -rule.max_below_high), metrics))
    if rule.min_below_high is not None:
        below = frame.with_columns(pl.lit("below_high").alias("variant"))
        parts.append(select_keys(below, at_most(pl.col("drawdown"), -rule.min_below_high), metrics))
    return pl.concat(parts)


def words(rule: DrawdownRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    name, below = ctx.name_expr(), pct_expr(-pl.col("drawdown"))
    close = fixed_expr(pl.col("close"), 2, thousands=True)
    high = text_expr(
        "its high of ", fixed_expr(pl.col("high"), 2, thousands=True), " on ", pl.col("high_date")
    )
    near = pl.col("variant") == "near_high"
    title = (
        pl.when(near)
        .then(text_expr(name, f" within {pct_setting(rule.max_below_high)} of its high"))
        .otherwise(text_expr(name, " ", below, " below its high"))
    )
    verb = pl.when(near).then(pl.lit(" closed at ")).otherwise(pl.lit(" fell to "))
    text = text_expr(name, verb, close, ", ", below, " below ", high, ".")
    return title, text
