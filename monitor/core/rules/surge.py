"""`surge`: a `window`-period gain of at least `min_return`, with the largest-since date."""

from __future__ import annotations

import polars as pl

from monitor.core import metrics as m
from monitor.core.model import ISO_UTC
from monitor.core.rules.context import (
    RuleContext,
    moved_expr,
    pct_expr,
    periods_in_words,
    reaches,
    select_keys,
    text_expr,
    unit,
)
from monitor.core.rules.spec import SurgeRule
from monitor.core.sessions import NEW_YORK

SEVERITY = "warning"
PER_SYMBOL = True  # a symbol's firings depend on its own bars alone
LARGEST_SINCE_OF = "return"  # the engine fills `largest_since` from this column's history


def condition(bars: pl.DataFrame, rule: SurgeRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: the `window`-period return is at least `min_return`."""
    ret = m.window_return(rule.window)
    frame = bars.with_columns(ret.alias("return"))
    return select_keys(
        frame, reaches(pl.col("return"), rule.min_return), [pl.col("return"), pl.col("close")]
    )


def words(rule: SurgeRule, ctx: RuleContext) -> tuple[pl.Expr, pl.Expr]:
    """Title and sentence of every firing, as string expressions over the firing frame."""
    name, w = ctx.name_expr(), rule.window
    since, first = pl.col("largest_since"), pl.col("history_start")
    one = "one" if w == 1 else str(w)
    span, period = f"{one}-{unit(rule.timeframe)}", f" in {periods_in_words(rule.timeframe, w)}"
    signed = pct_expr(pl.col("return"), signed=True)  # (formatted once for both)
    title = text_expr(name, " ", signed, period)
    if rule.timeframe == "1m":  # (the minute too, New York time: "since 2024-12-02 10:42")
        at = pl.col("largest_since_ts").str.to_datetime(ISO_UTC, time_zone="UTC")
        since = text_expr(since, " ", at.dt.convert_time_zone(NEW_YORK).dt.strftime("%H:%M"))
    on_record = (
        pl.when(first.is_not_null()).then(text_expr(" (since ", first, ")")).otherwise(pl.lit(""))
    )
    # (a fall, when `min_return` is negative: the largest return, not gain)
    gain = pl.when(pl.col("return") < 0).then(pl.lit("return")).otherwise(pl.lit("gain"))
    tail = (
        pl.when(since.is_not_null())
        .then(text_expr(f", its largest {span} ", gain, " since ", since))
        .otherwise(text_expr(f", its largest {span} ", gain, " on record", on_record))
    )
    text = text_expr(name, " ", moved_expr(pl.col("return")), period, tail, ".")
    return title, text
