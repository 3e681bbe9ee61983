"""What a rule sees besides bars: display names, short interest, and words for people."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import msgspec
import polars as pl

UNIT = {"1m": "minute", "1d": "session", "1w": "week"}

# Columns every rule's condition frame carries; metric columns follow.
KEYS = ["symbol", "session", "ts", "idx", "num", "ref", "variant", "cond"]


class RuleContext(msgspec.Struct, frozen=True):
    """`short_interest`: symbol, effective (date from which a figure counts), short_interest
    (fraction of float, null when unknown), shares_short. `names`: display names by symbol."""

    names: dict[str, str] = {}
    short_interest: pl.DataFrame | None = None

    def name(self, symbol: str) -> str:
        """The display name of a symbol (the symbol itself when none is configured)."""
        return self.names.get(symbol, symbol)

    def name_expr(self) -> pl.Expr:
        """`name` over the `symbol` column."""
        symbol = pl.col("symbol")
        return symbol.replace(self.names) if self.names else symbol


def unit(timeframe: str, n: int = 1) -> str:
    """'session' / 'sessions', 'week' / 'weeks', ..."""
    word = UNIT.get(timeframe, "period")
    return word if n == 1 else word + "s"


def periods_in_words(timeframe: str, n: int) -> str:
    """A count of periods in words: '5 sessions', 'one session'."""
    return f"one {unit(timeframe)}" if n == 1 else f"{n} {unit(timeframe, n)}"


def pct(x: float | None, signed: bool = False) -> str:
    """A fraction as a percentage for people: 0.115 -> '11.5%' (`pct_expr` in polars)."""
    if x is None:
        return "n/a"
    text = fixed(x * 100, 1, signed=signed)
    return text if text == "n/a" else text + "%"


def pct_setting(x: float | None) -> str:
    """A rule's threshold as a percentage, with the decimals it was written with (one at
    least, three at most): 0.01 -> '1.0%', 0.0025 -> '0.25%' (not '0.2%': a setting is no
    measurement to round); 'n/a' for one not set."""
    if x is None:
        return "n/a"
    for decimals in (1, 2):
        if abs(x * 100 * 10**decimals - round(x * 100 * 10**decimals)) < 1e-6:
            return fixed(x * 100, decimals) + "%"
    return fixed(x * 100, 3) + "%"


def fixed(x: float | None, decimals: int, *, signed: bool = False, thousands: bool = False) -> str:
    """`x` with `decimals` decimals, as `f"{x:,.2f}"` but rounding `x * 10**decimals` half to
    even, exactly as `fixed_expr` does in polars, so text made either way is the same."""
    scaled = None if x is None else x * 10**decimals
    if scaled is None or not math.isfinite(scaled):
        return "n/a"
    n = round(scaled)
    if abs(n) >= 2**63:  # past Int64, where the polars version gives up too
        return "n/a"
    sign = "-" if n < 0 else ("+" if signed else "")
    whole, frac = divmod(abs(n), 10**decimals)
    digits = f"{whole:,}" if thousands else str(whole)
    return f"{sign}{digits}.{frac:0{decimals}d}" if decimals else sign + digits


def fixed_expr(
    x: pl.Expr, decimals: int, *, signed: bool = False, thousands: bool = False, suffix: str = ""
) -> pl.Expr:
    """`fixed` over a column, then `suffix`: null, non-finite or out-of-range values give 'n/a'
    (without the suffix)."""
    scaled = (x * 10**decimals).round(0, mode="half_to_even")  # as Python's round()
    n = pl.when(scaled.is_finite()).then(scaled).cast(pl.Int64, strict=False)
    size = n.abs()
    whole = (size // 10**decimals).cast(pl.String)
    if thousands:  # group from the right: reverse, a comma after every 3 digits, reverse back
        whole = whole.str.reverse().str.replace_all(r"(\d{3})", "${1},")
        whole = whole.str.reverse().str.strip_chars_start(",")
    sign = pl.when(n < 0).then(pl.lit("-")).otherwise(pl.lit("+" if signed else ""))
    parts = [sign, whole]
    if decimals:
        frac = (size % 10**decimals).cast(pl.String)
        parts += [pl.lit("."), frac.str.zfill(decimals) if decimals > 1 else frac]
    if suffix:
        parts.append(pl.lit(suffix))
    return pl.concat_str(parts).fill_null("n/a")


def pct_expr(x: pl.Expr, signed: bool = False) -> pl.Expr:
    """`pct` over a column of fractions."""
    return fixed_expr(x * 100, 1, signed=signed, suffix="%")


def moved_expr(x: pl.Expr, up: str = "rose") -> pl.Expr:
    """A return in words, the verb by its sign: "rose 3.9%" (`up`), "fell 3.9%". A rule whose
    threshold is negative fires on falls too, and "jumped -3.9%" says it twice."""
    verb = pl.when(x < 0).then(pl.lit("fell")).otherwise(pl.lit(up))
    return text_expr(verb, " ", pct_expr(x.abs()))


# Computed returns are compared with a rule's settings give or take this: 10.00 -> 10.10 is
# 0.010000000000000009 in binary floating point, not "more than 1%", and 10.01 -> 11.011 is
# 0.09999999999999987, which "reaches 10%". (A billionth of a return: no price step is that fine.)
TOLERANCE = 1e-9


def above(value: pl.Expr, setting: float) -> pl.Expr:
    """`value > setting`, float noise aside (see TOLERANCE)."""
    return value > setting + TOLERANCE


def reaches(value: pl.Expr, setting: float) -> pl.Expr:
    """`value >= setting`, float noise aside (see TOLERANCE)."""
    return value >= setting - TOLERANCE


def at_most(value: pl.Expr, setting: float) -> pl.Expr:
    """`value <= setting`, float noise aside (see TOLERANCE)."""
    return value <= setting + TOLERANCE


def text_expr(*parts: str | pl.Expr) -> pl.Expr:
    """Words and columns joined into one string column (literal strings stay literal)."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def unit_expr(timeframe: str, n: pl.Expr) -> pl.Expr:
    """`unit` over a column of counts."""
    return pl.when(n == 1).then(pl.lit(unit(timeframe, 1))).otherwise(pl.lit(unit(timeframe, 2)))


def day(value: Any) -> str:
    """A date (or datetime) as YYYY-MM-DD."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def short_coverage(min_coverage: float) -> pl.Expr:
    """Why a period was not evaluated (`skipped`: breadth and movers), as words over a
    condition frame with `coverage`: 'bars of 4.0% of the symbols in, needs 90.0%'."""
    return pl.when(pl.col("skipped")).then(
        text_expr(
            "bars of ",
            pct_expr(pl.col("coverage")),
            f" of the symbols in, needs {pct_setting(min_coverage)}",
        )
    )


def select_keys(frame: pl.DataFrame, cond: pl.Expr, metrics: list[pl.Expr]) -> pl.DataFrame:
    """The standard condition frame: KEYS then metric columns. `cond` is null where it
    cannot be known (a window reaching across a period missing from the symbol's history):
    such a period neither starts nor ends an episode (see `firing.firings`)."""
    base = frame.with_columns(cond.alias("cond"))
    if "variant" not in base.columns:
        base = base.with_columns(pl.lit("").alias("variant"))
    if "ref" not in base.columns:
        base = base.with_columns(pl.col("close").alias("ref"))
    if "num" not in base.columns:  # (a frame of its own periods, one row each: see derived)
        base = base.with_columns(pl.col("idx").alias("num"))
    if "short_week" in base.columns:  # (weekly bars: a holiday week, flagged in every alert)
        metrics = [*metrics, pl.col("short_week")]
    return base.select([pl.col(k) for k in KEYS] + metrics)
