"""`fade`: a rally of `rise` within `rise_window` periods that then gives back `drop` from its
peak, within `within` periods of the peak."""

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
    unit,
)
from monitor.core.rules.spec import FadeRule

SEVERITY = "notice"
PER_SYMBOL = True  # a symbol's firings depend on its own bars alone


def condition(bars: pl.DataFrame, rule: FadeRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: the peak close of the last `within` periods was reached by a rise of at least
    `rise` from the low of the `rise_window` periods before it, and the close has just come
    `drop` below it, for the first time from that peak. (`rise` is the rise to the peak: a
    larger rise to a lower close does not count.)"""
    within = rule.within or rule.rise_window
    w = rule.rise_window
    # (periods by `num`: one missing from the history is one of the window's, see derived)
    low_before = pl.col("close").rolling_min_by("num", f"{w + 1}i", min_samples=2).over(m.BY)
    frame = bars.with_columns((pl.col("close") / low_before - 1.0).alias("rise_to_here"))
    frame = m.with_high(frame, within + 1).with_columns(
        pl.col("rise_to_here").gather("high_row").alias("rise"),
        (pl.col("close") / pl.col("high") - 1.0).alias("drawdown"),
    )
    faded = reaches(pl.col("rise"), rule.rise) & at_most(pl.col("drawdown"), -rule.drop)
    # Once per peak: a close that fades, climbs back above the line and fades again from the
    # same peak is the same fade (and one earlier time in the history, not two). So the
    # condition holds on the first period a fade from its peak begins, and on no other.
    after_faded = (pl.col("idx") > 0) & faded.shift(1).fill_null(False)
    frame = frame.with_columns((faded & ~after_faded).alias("began"))  # (then a window of it)
    fades = pl.col("began").cast(pl.Int32).cum_sum().over(m.BY, "high_date")
    return select_keys(
        frame.with_columns(fades.alias("peak_fades")),  # (from this period's peak, so far)
        pl.col("began") & (pl.col("peak_fades") == 1),
        [
            pl.col("rise"),
            pl.col("drawdown"),
            pl.col("high"),  # (the peak)
            pl.col("high_date"),
            pl.col("close"),
            pl.col("peak_fades"),
        ],
    )


def blocked(rule: FadeRule) -> pl.Expr:
    """What stops a fade besides its give-back: no rally of `rise` to the peak, or a fade
    from this peak already begun (once per peak)."""
    rise = pl.col("rise")
    faded = (pl.col("peak_fades") >= 1) | at_most(pl.col("drawdown"), -rule.drop)
    return (
        pl.when(~reaches(rise, rule.rise).fill_null(False))
        .then(
            text_expr(
                "rise to the peak ",
                pct_expr(rise, signed=True),
                f", needs {pct_setting(rule.rise)}",
            )
        )
        .when(faded & ~pl.col("cond"))
        .then(
            text_expr(
                "faded from its ", pl.col("high_date").dt.to_string("%Y-%m-%d"), " peak already"
            )
        )
    )


def words(rule: FadeRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    name, w = ctx.name_expr(), rule.rise_window
    title = text_expr(
        "Fading rally: ", name, " ", pct_expr(pl.col("drawdown"), signed=True), " from its peak"
    )
    text = text_expr(
        name, " gave back ", pct_expr(-pl.col("drawdown")), " from its ", pl.col("high_date"),
        " peak of ", fixed_expr(pl.col("high"), 2, thousands=True), ", after rising ",
        pct_expr(pl.col("rise")), f" within {w} {unit(rule.timeframe, w)}.",
    )  # fmt: skip
    return title, text
