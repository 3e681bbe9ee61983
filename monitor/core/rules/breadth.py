"""`breadth`: the share of the universe up over `window` periods."""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import (
    RuleContext,
    fixed_expr,
    pct_expr,
    periods_in_words,
    reaches,
    select_keys,
    short_coverage,
    text_expr,
    unit,
)
from monitor.core.rules.spec import BreadthRule

SEVERITY = "notice"
PER_SYMBOL = False  # it compares symbols


def condition(bars: pl.DataFrame, rule: BreadthRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: at least `min_symbols` have a `window` return and `min_share` of them are up,
    in a period with bars of at least `min_coverage` of the symbols of the periods before (see
    `metrics.coverage`). The reference series for "what happened next" is an equal-weight
    index of the universe."""
    per_symbol = bars.with_columns(m.window_return(rule.window).alias("wret"))
    frame = (
        per_symbol.group_by("ts")  # (the period's close: a session, a week or a minute)
        .agg(
            pl.col("session").first(),
            (pl.col("wret") > 0).sum().alias("up"),
            pl.col("wret").is_not_null().sum().alias("counted"),
            pl.col("ret1").mean().fill_null(0.0).alias("mean_ret1"),
            # (a session's or a week's number in the calendar, the same for every symbol; a
            # minute's is a symbol's own row: the frame's row stands for it, see select_keys)
            *([] if rule.timeframe == "1m" else [pl.col("num").first()]),
            # (a week's, the same for every symbol: flagged in every weekly alert)
            *([pl.col("short_week").first()] if "short_week" in bars.columns else []),
        )
        .sort("ts")
        .pipe(m.with_coverage, bars, rule.timeframe)
        .with_columns(
            pl.lit(rule.label).alias("symbol"),
            pl.int_range(pl.len()).alias("idx"),
            (pl.col("up") / pl.col("counted")).alias("share"),
            (1.0 + pl.col("mean_ret1")).cum_prod().alias("ref"),
        )
    )
    cond = (pl.col("counted") >= rule.min_symbols) & reaches(pl.col("share"), rule.min_share)
    skipped = pl.col("coverage") < rule.min_coverage  # (not evaluated: see firing.firings)
    metrics = [pl.col("share"), pl.col("up"), pl.col("counted"), skipped.alias("skipped")]
    return select_keys(frame, cond & ~skipped, [*metrics, pl.col("coverage")])


def blocked(rule: BreadthRule) -> pl.Expr:
    """What stops breadth besides its share: a period with too few bars in (`min_coverage`),
    too few symbols with a return over the window (`min_symbols`)."""
    counted = pl.col("counted")
    span = periods_in_words(rule.timeframe, rule.window)
    return pl.coalesce(  # (the first that applies)
        short_coverage(rule.min_coverage),
        pl.when(counted < rule.min_symbols).then(
            text_expr(
                fixed_expr(counted, 0, thousands=True),
                f" symbols with a return over {span}, needs {rule.min_symbols}",
            )
        ),
    )


def words(rule: BreadthRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    # (the default label reads as a noun: "of the universe"; a label of your own is as written
    # unless [names] gives it a display name)
    default = "the universe" if rule.label == "universe" else rule.label
    name, share = ctx.names.get(rule.label, default), pct_expr(pl.col("share"))
    w = rule.window
    span = periods_in_words(rule.timeframe, w)
    last = f"the last {unit(rule.timeframe)}" if w == 1 else f"the last {span}"
    title = text_expr("Breadth: ", share, f" of {name} up over {span}")
    text = text_expr(
        share, f" of {name} (", fixed_expr(pl.col("up"), 0, thousands=True), " of ",
        fixed_expr(pl.col("counted"), 0, thousands=True), f") rose over {last}.",
    )  # fmt: skip
    return title, text
