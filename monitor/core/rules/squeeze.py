"""`squeeze`: a sharp jump on abnormal volume in a heavily shorted name.

Short interest counts from `short_interest_lag` sessions after its settlement date (about when it
is published), so a replay never uses a figure nobody had yet, and up to `short_interest_max_age`
sessions after it: a figure no newer one replaced by then (a symbol the file stopped listing)
is unknown, not a number from months or years before.
"""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import (
    RuleContext,
    fixed_expr,
    moved_expr,
    pct_expr,
    pct_setting,
    reaches,
    select_keys,
    text_expr,
    unit,
)
from monitor.core.rules.spec import SqueezeRule

SEVERITY = "warning"
PER_SYMBOL = True  # a symbol's firings depend on its own bars alone


def condition(bars: pl.DataFrame, rule: SqueezeRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: return >= min_return AND volume ratio >= volume_ratio AND short interest (as
    published by then) >= min_short_interest (or unknown, with unknown_short_interest="fire")."""
    frame = bars.with_columns(
        pl.col("ret1").alias("return"),
        m.volume_ratio(rule.volume_window).alias("volume_ratio"),
        pl.col("volume")
        .shift(1)
        .rolling_mean(rule.volume_window, min_samples=1)
        .over(m.BY)
        .alias("avg_volume"),
    )
    frame = _join_short_interest(frame, ctx, rule)
    si = pl.col("short_interest")
    known = si.is_not_null()
    si_ok = reaches(si, rule.min_short_interest)
    if rule.min_days_to_cover is not None:
        si_ok = si_ok & (pl.col("days_to_cover") >= rule.min_days_to_cover)
    short_ok = pl.when(known).then(si_ok).otherwise(pl.lit(rule.unknown_short_interest == "fire"))
    cond = (
        reaches(pl.col("return"), rule.min_return)
        & reaches(pl.col("volume_ratio"), rule.volume_ratio)
        & short_ok
    )
    return select_keys(
        frame,
        cond,
        [
            pl.col("return"),
            pl.col("volume_ratio"),
            pl.col("short_interest"),
            known.alias("short_interest_known"),
            pl.col("short_interest_date"),
            pl.col("days_to_cover"),
            pl.col("volume"),
            pl.col("close"),
        ],
    )


def blocked(rule: SqueezeRule) -> pl.Expr:
    """What stops a squeeze besides its return: short interest unknown (unless
    `unknown_short_interest = "fire"`) or under the line, days to cover, volume."""
    si, known = pl.col("short_interest"), pl.col("short_interest_known")
    line = pct_setting(rule.min_short_interest)
    reasons = [
        pl.when(~known & pl.lit(rule.unknown_short_interest != "fire")).then(
            pl.lit("short interest unknown")
        ),
        pl.when(known & ~reaches(si, rule.min_short_interest)).then(
            text_expr("short interest ", pct_expr(si), f", needs {line}")
        ),
    ]
    if rule.min_days_to_cover is not None:
        days = pl.col("days_to_cover")
        reasons.append(
            pl.when(known & ~(days >= rule.min_days_to_cover).fill_null(False)).then(
                text_expr(
                    "days to cover ", fixed_expr(days, 1), f", needs {rule.min_days_to_cover}"
                )
            )
        )
    ratio = pl.col("volume_ratio")
    reasons.append(
        pl.when(~reaches(ratio, rule.volume_ratio).fill_null(False)).then(
            text_expr("volume ", fixed_expr(ratio, 1, suffix="x"), f", needs {rule.volume_ratio}x")
        )
    )
    return pl.coalesce(reasons)  # (the first that applies)


def _join_short_interest(frame: pl.DataFrame, ctx: RuleContext, rule: SqueezeRule) -> pl.DataFrame:
    si = ctx.short_interest
    if si is None or si.is_empty():
        return frame.with_columns(
            pl.lit(None, pl.Float64).alias("short_interest"),
            pl.lit(None, pl.Date).alias("short_interest_date"),
            pl.lit(None, pl.Float64).alias("days_to_cover"),
        )
    terms = (pl.col("lag") == rule.short_interest_lag) & (
        pl.col("max_age") == rule.short_interest_max_age
    )
    lagged = si.filter(terms).drop("lag", "max_age")  # (sorted by symbol, then effective)
    # Both sides are sorted on the as-of keys just above; polars cannot check that when `by`
    # groups are given and said so on stderr in every replay with a squeeze rule.
    joined = frame.sort("session").join_asof(
        lagged,
        left_on="session",
        right_on="effective",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
    )
    stale = pl.col("expires").is_not_null() & (pl.col("session") > pl.col("expires"))
    figures = ["short_interest", "short_interest_date", "shares_short"]
    joined = joined.with_columns(pl.when(~stale).then(pl.col(c)).alias(c) for c in figures)
    # A row published with a blank percentage (no float: an ETF, a new listing) is no figure:
    # the short interest is unknown, so is its date (docs/alerts.md), not the blank row's.
    unknown = pl.col("short_interest").is_null()
    joined = joined.with_columns(pl.when(~unknown).then(pl.col("short_interest_date")))
    dtc = pl.col("shares_short") / pl.col("avg_volume")
    return joined.with_columns(dtc.alias("days_to_cover")).sort("symbol", "ts")


def words(rule: SqueezeRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    name, ratio = ctx.name_expr(), fixed_expr(pl.col("volume_ratio"), 1)
    short = (
        pl.when(pl.col("short_interest_known").fill_null(False))
        .then(text_expr("with ", pct_expr(pl.col("short_interest")), " of its float sold short"))
        .otherwise(pl.lit("short interest unknown"))
    )
    title = text_expr(
        "Squeeze? ", name, " ", pct_expr(pl.col("return"), signed=True), " on ", ratio, "x volume"
    )
    text = text_expr(
        name, " ", moved_expr(pl.col("return"), "jumped"), " to ",
        fixed_expr(pl.col("close"), 2, thousands=True), " on ", ratio,
        f"x its {rule.volume_window}-{unit(rule.timeframe)} average volume, ", short, ".",
    )  # fmt: skip
    return title, text
