"""How close is each rule to firing: per rule and symbol, the current value, the threshold and
the progress (1.0 = the condition holds), from the last closed period.

"streak 3 of 5", "return 9.8% of 10%", "spread 7.1 of 5 points": one row per (rule, symbol,
variant), for /api/state, the metrics and the live view.
"""

from __future__ import annotations

from typing import Any

import msgspec
import polars as pl

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


class Progress(msgspec.Struct, frozen=True):
    """One rule on one symbol: `value` against `threshold` (same unit), `progress` in [0, 1]."""

    rule: str
    kind: str
    symbol: str
    variant: str
    session: str
    value: float | None
    threshold: float
    unit: str  # "periods", "fraction" or "ratio"
    progress: float
    holds: bool


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


def latest(cond: pl.DataFrame) -> pl.DataFrame:
    """The last period's row of every (symbol, variant) of a condition frame."""
    return cond.group_by("symbol", "variant", maintain_order=True).last()


def rows(last: pl.DataFrame, rule: Rule) -> list[Progress]:
    """Progress records from `latest(cond)` of one rule."""
    column, threshold, unit = measure(rule)
    out: list[Progress] = []
    for row in last.iter_rows(named=True):
        value = row.get(column)
        t = threshold
        if isinstance(rule, DrawdownRule):
            line = rule.max_below_high if row["variant"] == "near_high" else rule.min_below_high
            t = -(line or 0.0)
        out.append(
            Progress(
                rule=rule.id,
                kind=kind_of(rule),
                symbol=row["symbol"],
                variant=row["variant"],
                session=row["session"].isoformat(),
                value=_num(value),
                threshold=t,
                unit=unit,
                progress=fraction(_num(value), t, row["variant"]),
                holds=bool(row["cond"]),
            )
        )
    return out


def fraction(value: float | None, threshold: float, variant: str = "") -> float:
    """How far `value` has come toward `threshold`, clipped to [0, 1].

    Rising measures (streak, return, spread, share) count from 0 up; `near_high` counts how close
    a negative drawdown is to the line; falling measures (drawdown below the high, a fade's give
    back) count from 0 down."""
    if value is None:
        return 0.0
    if variant == "near_high":
        if value >= threshold:
            return 1.0
        return max(0.0, min(1.0, threshold / value)) if value < 0 else 1.0
    if threshold < 0:
        return max(0.0, min(1.0, value / threshold)) if value < 0 else 0.0
    if threshold == 0:
        return 1.0 if value >= 0 else 0.0
    return max(0.0, min(1.0, value / threshold))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f
