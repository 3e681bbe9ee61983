"""`surge`: a `window`-period gain of at least `min_return`, with the largest-since date."""

from __future__ import annotations

from typing import Any

import polars as pl

from monitor.core import metrics as m
from monitor.core.rules.context import RuleContext, day, pct, select_keys, unit
from monitor.core.rules.spec import SurgeRule

SEVERITY = "warning"
LARGEST_SINCE_OF = "return"  # the engine fills `largest_since` from this column's history


def condition(bars: pl.DataFrame, rule: SurgeRule, ctx: RuleContext) -> pl.DataFrame:
    """Condition: the `window`-period return is at least `min_return`."""
    ret = m.window_return(rule.window)
    frame = bars.with_columns(ret.alias("return"))
    return select_keys(
        frame, pl.col("return") >= rule.min_return, [pl.col("return"), pl.col("close")]
    )


def describe(row: dict[str, Any], rule: SurgeRule, ctx: RuleContext) -> tuple[str, str]:
    """Title and sentence for one firing."""
    name = ctx.name(row["symbol"])
    w = rule.window
    span = f"{w}-{unit(rule.timeframe)}"
    title = f"{name} {pct(row['return'], signed=True)} in {w} {unit(rule.timeframe, w)}"
    since = row.get("largest_since")
    if since:
        tail = f", its largest {span} gain since {day(since)}"
    else:
        first = row.get("history_start")
        tail = f", its largest {span} gain on record" + (f" (since {day(first)})" if first else "")
    text = f"{name} rose {pct(row['return'])} in {w} {unit(rule.timeframe, w)}{tail}."
    return title, text
