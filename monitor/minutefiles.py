"""Minute-bar history files (CSV or Parquet) for `feed-replay` and the `replay` feed: a
timestamp column (`datetime`, `timestamp`, `start` or `time`, or a `date` or `session` column
whose values carry more than one time of day; ISO 8601 with an offset, or naive UTC) and open,
high, low, close, volume (names matched without regard to case). The symbol is the one given
as `SYMBOL=PATH`, else a `symbol` column, else the file name's stem uppercased.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from monitor.core.model import MINUTE_SCHEMA
from monitor.datafiles import DataSpec
from monitor.errors import DataError

TIME_KEYS = ("datetime", "timestamp", "start", "time")
DATE_KEYS = ("date", "session")  # (a minute file's time column when its values have times)
PRICES = ("open", "high", "low", "close")
_TIME_OF_DAY = re.compile(r"^\s*\d{4}-\d{1,2}-\d{1,2}[T ](\d{1,2}:\d{2}(?::\d{2})?)")
_LOOKED_AT = 500  # rows of a date column looked at for times of day


def is_minute_file(path: str | Path) -> bool:
    """True when the file's time column carries times of day: a column named as a timestamp
    (TIME_KEYS), or a date column (DATE_KEYS) whose first rows hold more than one time of day.
    (A daily file stamped at one time, `2024-07-16 00:00:00` or at 16:00, is daily: its date
    column has one time of day.)"""
    names = _header(str(path))
    if any(n.strip().lower() in TIME_KEYS for n in names):
        return True
    date = next((n for n in names if n.strip().lower() in DATE_KEYS), None)
    if date is None:
        return False
    times = {m.group(1) for v in _first_values(str(path), date) if (m := _TIME_OF_DAY.match(v))}
    return len(times) > 1


def _first_values(path: str, column: str) -> list[str]:
    """The first rows of a column as text (none when the file cannot be read so: the reader
    that takes it says why)."""
    try:
        if path.endswith(".parquet"):
            frame = pl.scan_parquet(path).select(column).head(_LOOKED_AT).collect()
        else:
            frame = pl.read_csv(path, columns=[column], n_rows=_LOOKED_AT, infer_schema=False)
        return frame.get_column(column).cast(pl.String).drop_nulls().to_list()
    except (OSError, pl.exceptions.PolarsError):
        return []


def read_minutes(spec: DataSpec) -> pl.DataFrame:
    """The file's bars as MINUTE_SCHEMA, sorted by symbol and start. DataError on bad input,
    naming the file, line and column."""
    path = spec.path
    try:
        raw = (
            pl.read_parquet(path)
            if path.endswith(".parquet")
            else pl.read_csv(path, infer_schema=False)
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(path, f"cannot read: {exc}") from None
    cols = {c.lower(): c for c in raw.columns}
    when = next((cols[k] for k in (*TIME_KEYS, *DATE_KEYS) if k in cols), None)
    if when is None:
        raise DataError(path, f"no time column (one of {', '.join((*TIME_KEYS, *DATE_KEYS))})")
    missing = [k for k in PRICES if k not in cols]
    if missing:
        raise DataError(path, f"missing column {missing[0]!r}")
    text = pl.col(when).cast(pl.String)
    start = (
        pl.when(text.str.contains(r"[+-]\d\d:?\d\d$|Z$"))
        .then(text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us"))
        .otherwise(text.str.to_datetime(strict=False, time_unit="us").dt.replace_time_zone("UTC"))
    )
    symbol = (
        pl.lit(spec.symbol)
        if spec.symbol
        else pl.col(cols["symbol"])
        if "symbol" in cols
        else pl.lit(Path(path).stem.upper())
    )
    frame = raw.with_row_index("_row").select(
        "_row",
        symbol.cast(pl.String).alias("symbol"),
        start.alias("start"),
        *[pl.col(cols[k]).cast(pl.Float64, strict=False).alias(k) for k in PRICES],
        (
            pl.col(cols["volume"]).cast(pl.Float64, strict=False)
            if "volume" in cols
            else pl.lit(0.0)
        ).alias("volume"),
    )
    for name, source in [("start", when), *[(k, cols[k]) for k in PRICES]]:
        bad = frame.filter(pl.col(name).is_null())
        if bad.height:
            line = int(bad.item(0, "_row")) + 2
            raise DataError(path, "cannot parse the value", line=line, column=source)
    return frame.drop("_row").cast(MINUTE_SCHEMA).sort("symbol", "start")  # type: ignore[arg-type]


def _header(path: str) -> list[str]:
    if path.endswith(".parquet"):
        try:
            return list(pl.read_parquet_schema(path))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(path, f"cannot read: {exc}") from None
    try:
        with open(path, encoding="utf-8") as f:
            return [c.strip().strip('"') for c in f.readline().strip().split(",")]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read: {exc}") from None
