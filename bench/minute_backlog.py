"""Minute backlog bench: one `Engine.advance` closing many minutes, evaluated at once (replay's
engine) or a minute at a time (`minute_by_minute`, the daemon's).

    .venv/bin/python bench/minute_backlog.py [--symbols 2000] [--backlog 60] [--active 1.0]

Random walks of `--symbols` symbols: two regular sessions of minute bars (780: the daemon's
`minute_history`) loaded and evaluated, then `--backlog` minutes of the third session in one
step, a share `--active` of the symbols with a bar in each minute. Three 1m rules over the
universe (drawdown, surge, streak with a cooldown), progress tracked as in the daemon. Prints
the step's seconds and alert lines, for a one-minute step and for the backlog, both ways.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import polars as pl

from monitor.calendar import nyse_sessions
from monitor.core.engine import Engine
from monitor.core.model import MINUTE_SCHEMA, FeedBatch
from monitor.core.rules.spec import parse_rules

RULES = """
[[rules]]
id = "dd.1m"
kind = "drawdown"
universe = true
timeframe = "1m"
max_below_high = 0.01
min_below_high = 0.03

[[rules]]
id = "surge.1m"
kind = "surge"
universe = true
timeframe = "1m"
window = 5
min_return = 0.02

[[rules]]
id = "streak.1m"
kind = "streak"
universe = true
timeframe = "1m"
count = 4
min_return = 0.001
cooldown = 10
"""
DAYS = [dt.date(2024, 7, 8), dt.date(2024, 7, 9), dt.date(2024, 7, 10)]
STARTS = [
    dt.datetime(d.year, d.month, d.day, 13, 30, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
    for d in DAYS
    for i in range(390)
]
HELD = 780


def minute_bars(symbols: int, active: float) -> pl.DataFrame:
    """Random walks of 0.4% a minute; a symbol has a bar in a minute with probability `active`
    (always in the two sessions loaded first)."""
    rng = np.random.default_rng(1)
    closes = 10 * np.exp(np.cumsum(rng.normal(0, 0.004, size=(symbols, len(STARTS))), axis=1))
    names = [f"S{i:04d}" for i in range(symbols)]
    close = pl.col("close")
    columns = {"symbol": np.repeat(names, len(STARTS)), "start": STARTS * symbols}
    frame = pl.DataFrame({**columns, "close": closes.ravel()}).with_columns(
        open=close, high=close, low=close, volume=pl.lit(100.0)
    )
    kept = (pl.col("start") < STARTS[HELD]) | pl.Series(rng.random(frame.height) < active)
    return frame.filter(kept).select(list(MINUTE_SCHEMA)).cast(MINUTE_SCHEMA)  # type: ignore[arg-type]


def step(bars: pl.DataFrame, backlog: int, by_minute: bool) -> tuple[float, int]:
    """Seconds and alert lines of the step closing `backlog` minutes after the loaded ones."""
    engine = Engine(parse_rules(RULES), nyse_sessions(DAYS[0]), minute_history=HELD)
    engine.track_progress = True
    batch = FeedBatch.empty("bench")
    batch.minute_bars = bars.filter(pl.col("start") < STARTS[HELD])
    engine.ingest(batch)
    engine.advance(STARTS[HELD - 1] + dt.timedelta(minutes=1, seconds=5))
    engine.minute_by_minute = by_minute
    last = STARTS[HELD + backlog - 1]
    batch = FeedBatch.empty("bench")
    batch.minute_bars = bars.filter(pl.col("start").is_between(STARTS[HELD], last))
    engine.ingest(batch)
    began = time.perf_counter()
    lines = engine.advance(last + dt.timedelta(minutes=1, seconds=5)).lines.height
    return time.perf_counter() - began, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=60, choices=range(1, 391))
    parser.add_argument("--active", type=float, default=1.0)
    args = parser.parse_args()
    bars = minute_bars(args.symbols, args.active)
    print(f"{args.symbols} symbols, {HELD} minutes held, {args.active:.0%} active a minute")
    for backlog in (1, args.backlog):
        for by_minute in (False, True):
            seconds, lines = step(bars, backlog, by_minute)
            way = "a minute at a time" if by_minute else "at once"
            print(f"{backlog:4d} minutes {way:>18}: {seconds:7.2f} s, {lines} alert lines")


if __name__ == "__main__":
    main()
