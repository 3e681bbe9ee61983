"""The frames a `BarBook` keeps and the polars expressions it runs on every batch.

Here: the schemas of its minute bars (`OPEN_SCHEMA`, `STATE_SCHEMA`), the checks that reject
ticks and provider bars (with the `raw` text of a Rejection), the bad-print check's place among
them (`checked`), how accepted ticks aggregate into minute bars and how bars of the same (symbol,
start) merge, and small frame helpers.

Why apart from `monitor.core.bars`: these are stateless and shared (`monitor.core.bar_state`
saves and restores frames of these schemas), while `bars` is the book's state and its steps;
each reads better without the other. Expressions are built once, at import: building them costs
more than running them on a small batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl

from monitor.core.model import DAILY_SCHEMA, MAX_PRICE, MAX_SIZE, MINUTE_SCHEMA, TS

KEYS = ["symbol", "start"]  # a minute bar's key
_OHLCV = ["open", "high", "low", "close", "volume"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_MINUTE = dt.timedelta(minutes=1)
_ISO = "%Y-%m-%dT%H:%M:%S%.fZ"
# The bad-print check (`monitor.core.price_check.PriceCheck.screen`): given the rows (symbol,
# price, key) the book would take, in arrival order, the reference each bad print was held to.
PrintCheck = Callable[[pl.DataFrame], pl.Series]
# Minute bars in the book: MINUTE_SCHEMA plus the tick times that merging needs; closed ones also
# carry their session and whether the minute is in regular hours.
OPEN_SCHEMA: dict[str, pl.DataType] = {**MINUTE_SCHEMA, "first_ts": TS, "last_ts": TS}
STATE_SCHEMA: dict[str, pl.DataType] = {
    **OPEN_SCHEMA,
    "session": pl.Date(),
    "regular": pl.Boolean(),
}


def ts_lit(instant: dt.datetime) -> pl.Expr:
    """A TS literal: built from the integer, ten times cheaper than from a datetime."""
    return pl.lit((instant - _EPOCH) // _MICROSECOND, pl.Int64).cast(TS)


def split(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with a `reason`, the other rows without the column)."""
    flagged = pl.col("reason").is_not_null()
    return frame.filter(flagged), frame.filter(~flagged).drop("reason")


def checked(frame: pl.DataFrame, check: PrintCheck, price: str, key: pl.Expr) -> pl.DataFrame:
    """`frame` with `reason` "bad_print" on the rows `check` finds bad among those with no
    `reason` yet (so a print refused for its own reason is never held to a reference, and never
    counts toward a new one), and `held`: the reference each was held to."""
    free = frame.get_column("reason").is_null()
    held = pl.Series("held", [None] * frame.height, dtype=pl.Float64)
    if free.any():
        prints = frame.filter(free).select("symbol", pl.col(price).alias("price"), key.alias("key"))
        held = held.scatter(free.arg_true(), check(prints))
    bad = pl.when(pl.col("held").is_not_null()).then(pl.lit("bad_print"))
    return frame.with_columns(held).with_columns(reason=pl.coalesce("reason", bad))


def closing_print(closes: list[dt.datetime], within: dt.timedelta) -> pl.Expr:
    """Ticks' `start`, the minute before for a tick `within` the start of a minute that begins
    at a session's close (one of `closes`)."""
    start = pl.col("start")
    at_close = start.is_in(pl.Series(closes, dtype=TS).implode()) & (pl.col("ts") < start + within)
    return pl.when(at_close).then(start - _MINUTE).otherwise(start)


def held_raw(raw: pl.Expr) -> pl.Expr:
    """A Rejection's `raw` with the reference a bad print was held to (`checked`)."""
    return pl.concat_str(raw, pl.format(" (last {})", "held"), ignore_nulls=True)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The batch with exactly `schema`'s columns and types."""
    if frame.schema == schema:
        return frame
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def aggregate(ticks: pl.DataFrame) -> pl.DataFrame:
    """Minute bars of accepted ticks (rows in arrival order)."""
    return ticks.group_by(KEYS).agg(*_TICK_AGG).select(list(OPEN_SCHEMA))


def combine(bars: pl.DataFrame) -> pl.DataFrame:
    """Merge rows of the same (symbol, start), earlier rows first (an open's tie goes to the
    earlier row, a close's to the later one)."""
    aggs = _BAR_AGG if "session" not in bars.columns else _STATE_AGG
    return bars.group_by(KEYS).agg(*aggs).select(bars.columns)


def session_bars(minutes: pl.DataFrame, session: dt.date) -> pl.DataFrame:
    """The bar of `session` (DAILY_SCHEMA) of each symbol of `minutes`, its minute bars."""
    return (
        minutes.sort("start")
        .group_by("symbol")
        .agg(
            pl.lit(session).alias("session"),
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select(list(DAILY_SCHEMA))
    )


def _bad_number(col: str) -> pl.Expr:
    """A price not finite, positive and below MAX_PRICE."""
    return ~pl.col(col).is_finite() | (pl.col(col) <= 0) | (pl.col(col) >= MAX_PRICE)


def tick_problem() -> pl.Expr:
    """The reason a tick is rejected (missing_field, bad_price, bad_size), else null."""
    missing = pl.any_horizontal(pl.col("symbol", "ts", "price", "size").is_null())
    bad_size = ~pl.col("size").is_finite() | (pl.col("size") < 0) | (pl.col("size") >= MAX_SIZE)
    return pl.coalesce(
        pl.when(missing).then(pl.lit("missing_field")),
        pl.when(_bad_number("price")).then(pl.lit("bad_price")),
        pl.when(bad_size).then(pl.lit("bad_size")),
    )


def _bar_problem() -> pl.Expr:
    lo, hi, start = pl.col("low"), pl.col("high"), pl.col("start")
    bad = pl.any_horizontal(
        *(_bad_number(c) for c in ("open", "high", "low", "close")),
        ~pl.col("volume").is_finite() | (pl.col("volume") < 0) | (pl.col("volume") >= MAX_SIZE),
        lo > hi,
        ~pl.col("open").is_between(lo, hi),
        ~pl.col("close").is_between(lo, hi),
        start.dt.truncate("1m") != start,
    )
    return pl.coalesce(
        pl.when(pl.col("symbol").is_null() | start.is_null()).then(pl.lit("missing_field")),
        pl.when(pl.any_horizontal(pl.col(_OHLCV).is_null()) | bad).then(pl.lit("bad_bar")),
    )


def _raw(*cols: str) -> pl.Expr:
    """`name=value` pairs of the row, for a Rejection."""
    text = {c: pl.col(c).cast(pl.String) for c in cols}
    text.update({c: pl.col(c).dt.to_string(_ISO) for c in ("ts", "start") if c in cols})
    parts = [text[c].fill_null("null") for c in cols]
    return pl.format(" ".join(f"{c}={{}}" for c in cols), *parts)


def _tick_raw() -> pl.Expr:
    return _raw("ts", "price", "size", "id")


def _bar_raw() -> pl.Expr:
    return _raw("start", *_OHLCV)


def _cancel_raw() -> pl.Expr:
    return _raw("id", "ts", "new_id", "new_price", "new_size")


def _tick_agg() -> list[pl.Expr]:
    """Open: the earliest tick by `ts`, the first to arrive among equal ones; close: the latest,
    the last to arrive among equal ones, as the tape's last sale is the last reported.
    (`max_by` takes the first of a tie. Over the rows reversed it would take the last, but
    polars 2.1 gets that wrong on a frame of several chunks: the last of those at the latest
    `ts` is taken instead.)"""
    price, ts = pl.col("price"), pl.col("ts")
    return [
        price.min_by(ts).alias("open"),
        price.max().alias("high"),
        price.min().alias("low"),
        price.filter(ts == ts.max()).last().alias("close"),
        pl.col("size").sum().alias("volume"),
        ts.min().alias("first_ts"),
        ts.max().alias("last_ts"),
    ]


def _bar_agg() -> list[pl.Expr]:
    """Partial bars of one minute merged, earlier rows (batches) first: as `_tick_agg`."""
    first, last = pl.col("first_ts"), pl.col("last_ts")
    return [
        pl.col("open").min_by(first),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").filter(last == last.max()).last(),
        pl.col("volume").sum(),
        first.min(),
        last.max(),
    ]


_TICK_AGG = _tick_agg()
_BAR_AGG = _bar_agg()
_STATE_AGG = [*_BAR_AGG, pl.col("session").first(), pl.col("regular").first()]
BAR_PROBLEM = _bar_problem()  # the reason a provider bar is rejected, else null
TICK_RAW = _tick_raw()  # a rejected tick's `raw`
BAR_RAW = _bar_raw()  # a rejected bar's `raw`
CANCEL_RAW = _cancel_raw()  # a cancel's not applied `raw`
