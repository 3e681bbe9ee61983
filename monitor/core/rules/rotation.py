"""`rotation`: small caps outrunning large caps over `window` periods."""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import (
    RuleContext,
    at_most,
    fixed_expr,
    pct_expr,
    pct_setting,
    periods_in_words,
    reaches,
    select_keys,
    text_expr,
)
from monitor.core.rules.spec import RotationRule

SEVERITY = "notice"
PER_SYMBOL = False  # it compares symbols


def condition(bars: pl.DataFrame, rule: RotationRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: return(small) - return(large) >= min_spread (and, when set, the large-cap
    return is at most `max_large_return`: e.g. 0 for "small caps up while large caps fall")."""
    small = bars.filter(pl.col("symbol") == rule.small)
    large = bars.filter(pl.col("symbol") == rule.large).select(
        "ts", pl.col("close").alias("large_close")
    )
    # Paired by the period's close (a session's, a week's or a minute's: one bar each), and
    # the returns taken over the pairs: a period missing on either side is missing from the
    # pairs, and no window reaches across it (each return over its own bars would reach a
    # period further back than the other's).
    frame = small.join(large, on="ts", how="inner").sort("ts")
    row = pl.int_range(pl.len())
    if rule.timeframe == "1m":  # (a minute's window stays in its session, as a symbol's)
        # A pair's minutes are its periods (a minute without a trade on one side is none):
        # `num` counts them, for what followed and a cooldown.
        reach, num = row - row.min().over("session"), row
    else:  # (nor across a period missing from both, or from either: see metrics.back)
        opens = (pl.col("num") - pl.col("num").shift() != 1).fill_null(True)
        reach, num = row - pl.when(opens).then(row).forward_fill(), pl.col("num")
    frame = frame.with_columns(row.alias("idx"), reach.alias("reach"), num.alias("num"))
    frame = frame.with_columns(
        m.window_return(rule.window).alias("return"),
        (pl.col("large_close") / m.back(pl.col("large_close"), rule.window) - 1.0).alias(
            "large_return"
        ),
    ).with_columns((pl.col("return") - pl.col("large_return")).alias("spread"))
    cond = reaches(pl.col("spread"), rule.min_spread)
    if rule.max_large_return is not None:
        cond = cond & at_most(pl.col("large_return"), rule.max_large_return)
    return select_keys(
        frame,
        cond,
        [
            pl.col("spread"),
            pl.col("return"),
            pl.col("large_return"),
            pl.lit(rule.large).alias("large"),
            pl.col("close"),
            pl.col("large_close"),
        ],
    )


def blocked(rule: RotationRule) -> pl.Expr:
    """What stops a rotation besides its spread: the large caps' return above
    `max_large_return`."""
    if rule.max_large_return is None:
        return pl.lit(None, pl.String)
    large = pl.col("large_return")
    return pl.when(~at_most(large, rule.max_large_return).fill_null(False)).then(
        text_expr(
            f"{rule.large} ",
            pct_expr(large, signed=True),
            f", needs at most {pct_setting(rule.max_large_return)}",
        )
    )


def words(rule: RotationRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    small, large = ctx.name(rule.small), ctx.name(rule.large)
    span = periods_in_words(rule.timeframe, rule.window)
    points = fixed_expr(pl.col("spread") * 100, 1)
    title = text_expr(f"Rotation: {small} beat {large} by ", points, f" points in {span}")
    text = text_expr(
        f"{small} beat {large} by ", points, f" percentage points over {span} (",
        pct_expr(pl.col("return"), signed=True), " against ",
        pct_expr(pl.col("large_return"), signed=True), ").",
    )  # fmt: skip
    return title, text
