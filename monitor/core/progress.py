"""How close each rule is to firing: per rule and symbol, the current value, the threshold and
the progress (1.0 = the condition holds), from the last closed period.

"streak 3 of 5", "return 9.8% of 10%", "spread 7.1 of 5 points": one row per (rule, symbol,
variant), for /api/state, the metrics and the live view. Made in polars: `measured` takes each
symbol's last row of a condition frame (one piece of a universe at a time), `records` puts a
rule's pieces together and makes them rows.

A symbol whose last period is older than the latest the rule evaluated (it missed a session:
no bar came, a halt) is `stale`: the gap has ended what it had (a window or a streak does not
reach across it), so it does not hold, whatever it read on its last period.

One number cannot say everything a rule asks: a squeeze's return may be past its line while
its short interest is unknown, a mover's gain past `min_return` outside the top N. So a row that
does not hold never reads 1.0 (at most `SHORT_OF_FIRING`), and where the rule's family knows
what else stands in the way (its `blocked`), the row says it in words.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import polars as pl

from monitor.core.rules import FAMILIES
from monitor.core.rules.spec import (
    BreadthRule,
    DrawdownRule,
    FadeRule,
    MoversRule,
    RotationRule,
    Rule,
    SqueezeRule,
    StreakRule,
    SurgeRule,
    kind_of,
)

SHORT_OF_FIRING = 0.99  # the most a row that does not hold reads: a full bar is for holding


class Progress(msgspec.Struct, frozen=True):
    """One rule on one symbol: `value` against `threshold` (same unit), `progress` in [0, 1]
    (1.0 when it holds, at most SHORT_OF_FIRING when not), on the symbol's last period
    (`session`); `stale` when that is older than the rule's latest (then it does not hold);
    `blocked`, what else keeps a row that does not hold from firing, in words."""

    rule: str
    kind: str
    symbol: str
    variant: str
    session: str
    value: float | None
    threshold: float
    unit: str  # "periods" (a streak's) or "fraction"
    progress: float
    holds: bool
    stale: bool = False
    blocked: str | None = None


def measure(rule: Rule) -> tuple[str, float, str]:
    """(column of the condition frame, threshold, unit) that says how close `rule` is."""
    if isinstance(rule, StreakRule):
        return "streak", float(rule.count), "periods"
    if isinstance(rule, SurgeRule | SqueezeRule):
        return "return", rule.min_return, "fraction"
    if isinstance(rule, MoversRule):
        return "return", rule.min_return, "fraction"
    if isinstance(rule, RotationRule):
        return "spread", rule.min_spread, "fraction"
    if isinstance(rule, BreadthRule):
        return "share", rule.min_share, "fraction"
    if isinstance(rule, FadeRule):
        return "drawdown", -rule.drop, "fraction"
    if isinstance(rule, DrawdownRule):
        return "drawdown", 0.0, "fraction"
    raise TypeError(f"no progress measure for {type(rule).__name__}")


def measured(cond: pl.DataFrame, rule: Rule) -> pl.DataFrame:
    """The last period of every (symbol, variant) of a condition frame of `rule`, measured:
    the columns of `Progress` but `stale` (`session` still a date; `progress` not yet capped,
    `blocked` whether it holds or not)."""
    column, threshold, unit = measure(rule)
    line = pl.lit(threshold)
    if isinstance(rule, DrawdownRule):
        near, below = -(rule.max_below_high or 0.0), -(rule.min_below_high or 0.0)
        line = pl.when(pl.col("variant") == "near_high").then(near).otherwise(below)
    value = pl.col(column).cast(pl.Float64).fill_nan(None)
    family = FAMILIES[kind_of(rule)]
    blocked = family.blocked(rule) if hasattr(family, "blocked") else pl.lit(None, pl.String)
    last = cond.group_by("symbol", "variant", maintain_order=True).last()
    return last.select(
        pl.lit(rule.id).alias("rule"),
        pl.lit(kind_of(rule)).alias("kind"),
        "symbol",
        "variant",
        "session",
        value.alias("value"),
        line.cast(pl.Float64).alias("threshold"),
        pl.lit(unit).alias("unit"),
        fraction(value, line, pl.col("variant")).alias("progress"),
        pl.col("cond").fill_null(False).alias("holds"),
        blocked.alias("blocked"),
    )


def records(frames: Sequence[pl.DataFrame]) -> list[Progress]:
    """A rule's `measured` frames (one per piece of a universe) as rows, by symbol and
    variant; a row whose session is older than the rule's latest is stale, and does not hold;
    a row that holds reads 1.0, one that does not at most SHORT_OF_FIRING, with what blocks it."""
    if not frames:
        return []
    frame = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    stale = pl.col("session") < pl.col("session").max()
    holds = pl.col("holds") & ~stale
    frame = frame.with_columns(
        pl.col("session").dt.to_string("%Y-%m-%d"),
        holds.alias("holds"),
        stale.alias("stale"),
        pl.when(holds)
        .then(1.0)
        .otherwise(pl.col("progress").clip(0.0, SHORT_OF_FIRING))
        .alias("progress"),
        pl.when(~holds).then(pl.col("blocked")).alias("blocked"),
    ).sort("symbol", "variant")
    return msgspec.convert(frame.to_dicts(), list[Progress])


def fraction(value: pl.Expr, threshold: pl.Expr, variant: pl.Expr) -> pl.Expr:
    """How far `value` has come toward `threshold`, clipped to [0, 1] (0 for none).

    Rising measures (streak, return, spread, share) count from 0 up; `near_high` counts how close
    a negative drawdown is to the line; falling measures (drawdown below the high, a fade's give
    back) count from 0 down."""
    near = variant == "near_high"
    return (
        pl.when(value.is_null())
        .then(0.0)
        .when(near & (value >= threshold))
        .then(1.0)
        .when(near & (value < 0))
        .then((threshold / value).clip(0.0, 1.0))
        .when(near)
        .then(1.0)
        .when(threshold < 0)
        .then(pl.when(value < 0).then((value / threshold).clip(0.0, 1.0)).otherwise(0.0))
        .when(threshold == 0)
        .then(pl.when(value >= 0).then(1.0).otherwise(0.0))
        .otherwise((value / threshold).clip(0.0, 1.0))
    )
