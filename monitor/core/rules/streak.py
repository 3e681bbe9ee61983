"""`streak`: `count` consecutive periods each up more than `min_return`; fires once per run."""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import (
    RuleContext,
    above,
    fixed_expr,
    pct_expr,
    pct_setting,
    select_keys,
    text_expr,
    unit,
    unit_expr,
)
from monitor.core.rules.spec import StreakRule

SEVERITY = "notice"
PER_SYMBOL = True  # a symbol's firings depend on its own bars alone


def condition(bars: pl.DataFrame, rule: StreakRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: the run of periods above `min_return` is at least `count` long.

    `min_period_return` (the smallest of the last `count` returns) is only wanted where the
    condition holds, so it is only computed there: a rolling minimum over every row of a
    universe's history costs several times as much."""
    up = bars.select(above(pl.col("ret1"), rule.min_return)).to_series()
    frame = bars.with_columns(m.run_lengths(up, bars.get_column("reach")).alias("streak"))
    holds = frame.select(pl.col("streak") >= rule.count).to_series()
    total = m.trailing_return(frame.get_column("close"), holds, rule.count)
    lowest = m.trailing_min(frame.get_column("ret1"), holds, rule.count)
    return select_keys(
        frame,
        pl.lit(holds),
        [
            pl.col("streak"),
            pl.lit(total).alias("return"),
            pl.lit(lowest).alias("min_period_return"),
            pl.col("close"),
        ],
    )


def words(rule: StreakRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    name, n = ctx.name_expr(), pl.col("streak").cast(pl.Int64)
    u = unit_expr(rule.timeframe, n)
    count, least = n.cast(pl.String), pct_setting(rule.min_return)
    gain = pct_expr(pl.col("return"), signed=True)
    close = fixed_expr(pl.col("close"), 2, thousands=True)
    if rule.count == 1:  # (a run reaches `count` when it fires: a streak of one period)
        period = f"the {unit(rule.timeframe)}"
        title = text_expr(name, f": up more than {least} in {period}")
        text = text_expr(name, f" rose more than {least} in {period} (", gain, ")")
    else:
        title = text_expr(name, ": ", count, " straight ", u, f" up more than {least}")
        text = text_expr(
            name, f" rose more than {least} in each of ", count, " ", u, " (", gain, " in all)"
        )
    return title, text_expr(text, ", closing at ", close, ".")
