"""The limit: the bench rules' firings (daily streak and surge) in one polars pass.

    .venv/bin/python bench/oneshot_polars.py DATA.csv   ->   streak=N surge=M

DATA is a single-symbol file (date and close columns) or a wide file (a date column and one close
column per symbol). Same rules and the same firing semantics as `bench/rules_bench.toml` replayed:
- bars with a non-positive or non-finite close are dropped (the replay rejects them), and a
  symbol's return is taken from its previous remaining bar;
- streak: the run of sessions each up more than 1% fires when it reaches 5 (once per run);
- surge: the 5-session return >= 10% fires when it turns true; a return not yet computable is
  false, and the symbol's first row has a previous value of true (monitor/core/firing.py).

The long frame is grouped by symbol, in date order within each symbol, and every symbol's first
row has no return, so a run of up sessions never crosses into the next symbol: shifts over the
whole column need no `over("symbol")`, only a same-symbol test where a shift reaches back into
the previous symbol's rows.
"""

from __future__ import annotations

import sys

import polars as pl

STREAK_COUNT, STREAK_MIN = 5, 0.01
SURGE_WINDOW, SURGE_MIN = 5, 0.10
TOLERANCE = 1e-9  # float noise at a threshold, as the rules have it (rules/context.py)
DATE_KEYS = ("date", "session", "datetime", "timestamp")


def closes(path: str) -> pl.DataFrame:
    """symbol, date, close: long, grouped by symbol and in date order within, bad closes dropped.

    The rows are put in date order while the frame is still wide (a few hundred rows); the
    unpivot then lays each symbol's column out as one block, so the long frame needs no sort.
    """
    names = pl.read_csv(path, n_rows=0).columns
    date = next(n for n in names if n.strip().lower() in DATE_KEYS)
    close = next((n for n in names if n.strip().lower() == "close"), None)
    if close is not None:  # one symbol per file
        schema = {date: pl.Date, close: pl.Float64}
        frame = pl.read_csv(path, columns=[date, close], schema_overrides=schema).sort(date)
        long = frame.select(pl.lit("X").alias("symbol"), pl.col(date).alias("date"), close)
        long = long.rename({close: "close"})
    else:  # wide: one close column per symbol
        schema = {n: (pl.Date if n == date else pl.Float64) for n in names}
        frame = pl.read_csv(path, schema=schema).sort(date)
        long = frame.unpivot(index=date, variable_name="symbol", value_name="close")
        long = long.rename({date: "date"})
    good = pl.col("close").is_finite() & (pl.col("close") > 0)
    return long.filter(good.fill_null(False))


def firings(long: pl.DataFrame) -> tuple[int, int]:
    """(streak firings, surge firings)."""
    same = pl.col("symbol") == pl.col("symbol").shift(1)
    ret1 = pl.when(same).then(pl.col("close") / pl.col("close").shift(1) - 1.0)
    up = (ret1 > STREAK_MIN + TOLERANCE).fill_null(False)
    back = pl.col("symbol") == pl.col("symbol").shift(SURGE_WINDOW)
    ret_w = pl.when(back).then(pl.col("close") / pl.col("close").shift(SURGE_WINDOW) - 1.0)
    cond = (ret_w >= SURGE_MIN - TOLERANCE).fill_null(False)
    counts = (
        long.lazy()
        .with_columns(up.alias("up"), cond.alias("cond"))
        .select(
            streak=(
                pl.col("up")
                & (pl.col("up").cast(pl.Int8).rolling_sum(STREAK_COUNT) == STREAK_COUNT)
                & ~pl.col("up").shift(STREAK_COUNT).fill_null(False)
            ).sum(),
            surge=(pl.col("cond") & ~pl.col("cond").shift(1).fill_null(True)).sum(),
        )
        .collect()
    )
    return int(counts["streak"][0]), int(counts["surge"][0])


def main(argv: list[str]) -> int:
    streak, surge = firings(closes(argv[1]))
    print(f"streak={streak} surge={surge}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
