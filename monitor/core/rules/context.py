"""What a rule sees besides bars: display names, short interest, and words for people."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import polars as pl

UNIT = {"1m": "minute", "1d": "session", "1w": "week"}

# Columns every rule's condition frame carries; metric columns follow.
KEYS = ["symbol", "session", "ts", "idx", "ref", "variant", "cond"]


class RuleContext(msgspec.Struct, frozen=True):
    """`short_interest`: symbol, effective (date from which a figure counts), short_interest
    (fraction of float, null when unknown), shares_short. `names`: display names by symbol."""

    names: dict[str, str] = {}
    short_interest: pl.DataFrame | None = None

    def name(self, symbol: str) -> str:
        """The display name of a symbol (the symbol itself when none is configured)."""
        return self.names.get(symbol, symbol)


def unit(timeframe: str, n: int = 1) -> str:
    """'session' / 'sessions', 'week' / 'weeks', ..."""
    word = UNIT.get(timeframe, "period")
    return word if n == 1 else word + "s"


def pct(x: float | None, signed: bool = False) -> str:
    """A fraction as a percentage for people: 0.115 -> '11.5%'."""
    if x is None:
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def day(value: Any) -> str:
    """A date (or datetime) as YYYY-MM-DD."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def select_keys(frame: pl.DataFrame, cond: pl.Expr, metrics: list[pl.Expr]) -> pl.DataFrame:
    """The standard condition frame: KEYS then metric columns."""
    base = frame.with_columns(cond.fill_null(False).alias("cond"))
    if "variant" not in base.columns:
        base = base.with_columns(pl.lit("").alias("variant"))
    if "ref" not in base.columns:
        base = base.with_columns(pl.col("close").alias("ref"))
    return base.select([pl.col(k) for k in KEYS] + metrics)
