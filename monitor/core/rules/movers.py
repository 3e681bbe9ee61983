"""`movers`: the `top` biggest gainers over `window` periods (or since a date)."""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import (
    RuleContext,
    above,
    day,
    pct_expr,
    periods_in_words,
    reaches,
    select_keys,
    short_coverage,
    text_expr,
)
from monitor.core.rules.spec import MoversRule

SEVERITY = "info"
RANK_DIGITS = 9  # returns are ranked to a billionth (TOLERANCE)
PER_SYMBOL = False  # it compares symbols


def condition(bars: pl.DataFrame, rule: MoversRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: among the top `top` returns of the period (its bars closing at the same `ts`:
    a session, a week or a minute) and at least `min_return`, in a
    period with bars of at least `min_coverage` of the symbols of the periods before (see
    `metrics.coverage`)."""
    if rule.since is not None:
        base = pl.col("close").filter(pl.col("session") <= rule.since).last().over(m.BY)
        ret = (pl.col("close") / base - 1.0).alias("return")
        frame = bars.with_columns(ret).with_columns(
            pl.when(pl.col("session") > rule.since).then(pl.col("return")).alias("return")
        )
    else:
        # Over each symbol's last bars, missing sessions or not (`idx`, not `reach`): a symbol
        # left out of the ranking for a gap in its bars would put the next one in its place.
        window = m.window_return(rule.window or 5).alias("return")
        frame = bars.with_columns(pl.col("idx").alias("reach")).with_columns(window)
    # Equal returns share a rank (and all fire): "1, 1, 3". Equal give or take float noise:
    # +10% from other prices differs in the last bits (see TOLERANCE).
    rank = pl.col("return").round(RANK_DIGITS).rank("min", descending=True).over("ts")
    frame = frame.with_columns(rank.alias("rank")).pipe(m.with_coverage, bars, rule.timeframe)
    ret = pl.col("return")
    # A gainer is up: a flat or falling symbol is no mover, whatever `min_return` says.
    cond = (pl.col("rank") <= rule.top) & reaches(ret, rule.min_return) & above(ret, 0.0)
    skipped = pl.col("coverage") < rule.min_coverage  # (not evaluated: see firing.firings)
    metrics = [pl.col("return"), pl.col("rank"), pl.col("close"), skipped.alias("skipped")]
    return select_keys(frame, cond & ~skipped, [*metrics, pl.col("coverage")])


def blocked(rule: MoversRule) -> pl.Expr:
    """What stops a mover besides its return: a period with too few bars in (`min_coverage`),
    a return that is no gain, a rank outside the `top`."""
    ret, rank = pl.col("return"), pl.col("rank")
    return pl.coalesce(  # (the first that applies)
        short_coverage(rule.min_coverage),
        pl.when(~above(ret, 0.0).fill_null(False)).then(pl.lit("not up")),
        pl.when(rank > rule.top).then(
            text_expr("ranked #", rank.cast(pl.String), f", needs the top {rule.top}")
        ),
    )


def words(rule: MoversRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    name, rank = ctx.name_expr(), pl.col("rank").cast(pl.String)
    if rule.since is not None:
        span = f"since {day(rule.since)}"
    else:
        span = f"over {periods_in_words(rule.timeframe, rule.window or 5)}"
    gain = pct_expr(pl.col("return"), signed=True)
    title = text_expr("Top mover #", rank, ": ", name, " ", gain)
    text = text_expr(name, " is the #", rank, f" gainer {span}: ", gain, ".")
    return title, text
