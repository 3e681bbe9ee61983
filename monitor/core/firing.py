"""From bars to firings: one rule's condition, its episodes, cooldown, largest-since and history.

A *firing* is the period in which a rule's condition turns true (an episode starts): a condition
already true at the start of the loaded history is not an onset and does not fire.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from monitor.core import history
from monitor.core.metrics import prior_larger
from monitor.core.progress import Progress, latest, rows
from monitor.core.rules import FAMILIES
from monitor.core.rules.context import RuleContext
from monitor.core.rules.spec import RotationRule, Rule, kind_of


def rule_frame(bars: pl.DataFrame, rule: Rule) -> pl.DataFrame:
    """The bars a rule watches: its symbols, or the whole universe."""
    if isinstance(rule, RotationRule):
        return bars.filter(pl.col("symbol").is_in([rule.small, rule.large]))
    if rule.universe:
        return bars.filter(~pl.col("symbol").is_in(rule.exclude)) if rule.exclude else bars
    return bars.filter(pl.col("symbol").is_in(rule.symbols))


def firings(
    bars: pl.DataFrame,
    rule: Rule,
    ctx: RuleContext,
    after: dt.datetime | None,
    progress: list[Progress] | None = None,
) -> pl.DataFrame:
    """Every firing of `rule` with `ts > after` (all when None), with metrics and history.

    `bars` carries symbol, session, ts, OHLCV, `idx` (period number within the symbol) and `ret1`,
    sorted by symbol and ts. When `progress` is a list, how close the rule is on each symbol at
    the last period is appended to it.
    """
    family = FAMILIES[kind_of(rule)]
    frame = rule_frame(bars, rule)
    if frame.is_empty():
        return pl.DataFrame()
    cond = family.condition(frame, rule, ctx).sort("symbol", "variant", "ts")
    if progress is not None:
        progress.extend(rows(latest(cond), rule))
    cond = cond.with_columns(
        (pl.col("cond") & ~pl.col("cond").shift(1).over(history.GROUP).fill_null(True)).alias(
            "fire"
        ),
        pl.col("session").first().over(history.GROUP).alias("history_start"),
    )
    cond = history.forward_returns(cond, rule.horizons)
    fired = cond.filter(pl.col("fire"))
    if rule.cooldown:
        fired = _cooldown(fired, rule.cooldown)
    if hasattr(family, "LARGEST_SINCE_OF"):
        fired = _largest_since(cond, fired, family.LARGEST_SINCE_OF, after)
    fired = history.attach(fired, rule.horizons)
    if after is not None:
        fired = fired.filter(pl.col("ts") > after)
    return fired.sort("ts", "symbol", "variant")


def _cooldown(fired: pl.DataFrame, periods: int) -> pl.DataFrame:
    """Drop firings within `periods` of the previous kept firing of the same symbol/variant."""
    keep: list[bool] = []
    last: dict[tuple[str, str], int] = {}
    for sym, var, idx in fired.select("symbol", "variant", "idx").iter_rows():
        key = (sym, var)
        ok = key not in last or idx - last[key] > periods
        if ok:
            last[key] = idx
        keep.append(ok)
    return fired.filter(pl.Series(keep, dtype=pl.Boolean))


def _largest_since(
    cond: pl.DataFrame, fired: pl.DataFrame, column: str, after: dt.datetime | None
) -> pl.DataFrame:
    """Add `largest_since`: the session of the most recent earlier period of the same symbol whose
    `column` was larger than at the firing (null when it is the largest in the loaded history)."""
    cond = cond.with_row_index("pos")
    starts = cond.select(pl.col("pos").first().over(history.GROUP)).to_series().to_numpy()
    values = cond.get_column(column).fill_null(-np.inf).to_numpy()
    wanted = fired.join(
        cond.select(*history.GROUP, "idx", "pos"), on=[*history.GROUP, "idx"], how="left"
    )
    if after is not None:
        wanted = wanted.filter(pl.col("ts") > after)
    positions = wanted.get_column("pos").to_list()
    found = prior_larger(values, starts, positions)
    sessions = cond.get_column("session")
    since = [sessions[p] if p >= 0 else None for p in found]
    marks = wanted.select(*history.GROUP, "idx").with_columns(
        pl.Series("largest_since", since, dtype=pl.Date)
    )
    return fired.join(marks, on=[*history.GROUP, "idx"], how="left")
