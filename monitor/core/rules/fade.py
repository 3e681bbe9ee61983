"""`fade`: a rally of `rise` within `rise_window` periods that then gives back `drop` from its
peak, within `within` periods of the peak."""

from __future__ import annotations

from typing import Any

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import RuleContext, day, pct, select_keys, unit
from monitor.core.rules.spec import FadeRule

SEVERITY = "notice"


def condition(bars: pl.DataFrame, rule: FadeRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: the peak close of the last `within` periods was reached by a rise of at least
    `rise` from the low of the `rise_window` periods before it, and the close is `drop` below it."""
    within = rule.within or rule.rise_window
    w = rule.rise_window
    low_before = pl.col("close").rolling_min(w + 1, min_samples=2).over(m.BY)
    frame = bars.with_columns((pl.col("close") / low_before - 1.0).alias("rise_to_here"))
    frame = frame.with_columns(
        pl.col("close").rolling_max(within + 1, min_samples=1).over(m.BY).alias("peak"),
        pl.col("rise_to_here").rolling_max(within + 1, min_samples=1).over(m.BY).alias("rise"),
    ).with_columns(
        pl.when(pl.col("close") >= pl.col("peak"))
        .then(pl.col("session"))
        .forward_fill()
        .over(m.BY)
        .alias("peak_date"),
        (pl.col("close") / pl.col("peak") - 1.0).alias("drawdown"),
    )
    cond = (pl.col("rise") >= rule.rise) & (pl.col("drawdown") <= -rule.drop)
    return select_keys(
        frame,
        cond,
        [
            pl.col("rise"),
            pl.col("drawdown"),
            pl.col("peak").alias("high"),
            pl.col("peak_date").alias("high_date"),
            pl.col("close"),
        ],
    )


def describe(row: dict[str, Any], rule: FadeRule, ctx: RuleContext) -> tuple[str, str]:
    """Title and sentence for one firing."""
    name = ctx.name(row["symbol"])
    w = rule.rise_window
    title = f"Fading rally: {name} {pct(row['drawdown'], signed=True)} from its peak"
    text = (
        f"{name} gave back {pct(-row['drawdown'])} from its {day(row['high_date'])} peak of "
        f"{row['high']:,.2f}, after rising {pct(row['rise'])} within {w} {unit(rule.timeframe, w)}."
    )
    return title, text
