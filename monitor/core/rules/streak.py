"""`streak`: `count` consecutive periods each up more than `min_return`; fires once per run."""

from __future__ import annotations

from typing import Any

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import RuleContext, pct, select_keys, unit
from monitor.core.rules.spec import StreakRule

SEVERITY = "notice"


def condition(bars: pl.DataFrame, rule: StreakRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: the run of periods above `min_return` is at least `count` long."""
    run = m.run_length(pl.col("ret1") > rule.min_return)
    frame = bars.with_columns(run.alias("streak"))
    total = pl.col("close") / pl.col("close").shift(rule.count).over(m.BY) - 1.0
    return select_keys(
        frame,
        pl.col("streak") >= rule.count,
        [
            pl.col("streak"),
            total.alias("return"),
            pl.col("ret1").rolling_min(rule.count).over(m.BY).alias("min_period_return"),
            pl.col("close"),
        ],
    )


def describe(row: dict[str, Any], rule: StreakRule, ctx: RuleContext) -> tuple[str, str]:
    """Title and sentence for one firing."""
    name = ctx.name(row["symbol"])
    n = int(row["streak"])
    u = unit(rule.timeframe, n)
    title = f"{name}: {n} straight {u} up more than {pct(rule.min_return)}"
    text = (
        f"{name} rose more than {pct(rule.min_return)} in each of {n} {u} "
        f"({pct(row['return'], signed=True)} in all), closing at {row['close']:,.2f}."
    )
    return title, text
