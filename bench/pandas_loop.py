"""What a user writes first: pandas, then a Python loop over each symbol's closes.

    .venv/bin/python bench/pandas_loop.py DATA.csv   ->   streak=N surge=M

The same rules and firing semantics as bench/oneshot_polars.py (see its docstring).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

STREAK_COUNT, STREAK_MIN = 5, 0.01
SURGE_WINDOW, SURGE_MIN = 5, 0.10
TOLERANCE = 1e-9  # float noise at a threshold, as the rules have it (rules/context.py)
DATE_KEYS = ("date", "session", "datetime", "timestamp")


def closes(path: str) -> pd.DataFrame:
    """symbol, date, close (long), bad closes dropped."""
    frame = pd.read_csv(path)
    date = next(c for c in frame.columns if c.strip().lower() in DATE_KEYS)
    close = next((c for c in frame.columns if c.strip().lower() == "close"), None)
    if close is not None:
        long = pd.DataFrame({"symbol": "X", "date": frame[date], "close": frame[close]})
    else:
        long = frame.melt(id_vars=date, var_name="symbol", value_name="close")
        long = long.rename(columns={date: "date"})
    long["date"] = pd.to_datetime(long["date"])
    long = long[np.isfinite(long["close"]) & (long["close"] > 0)]
    return long.sort_values(["symbol", "date"])


def count_firings(values: list[float]) -> tuple[int, int]:
    """(streak firings, surge firings) over one symbol's closes in date order."""
    streak = surge = run = 0
    was_surging = True  # the first row's previous condition counts as true
    for i, close in enumerate(values):
        if i > 0 and close / values[i - 1] - 1.0 > STREAK_MIN + TOLERANCE:
            run += 1
            if run == STREAK_COUNT:
                streak += 1
        else:
            run = 0
        gain = close / values[i - SURGE_WINDOW] - 1.0 if i >= SURGE_WINDOW else None
        surging = gain is not None and gain >= SURGE_MIN - TOLERANCE
        if surging and not was_surging:
            surge += 1
        was_surging = surging
    return streak, surge


def main(argv: list[str]) -> int:
    long = closes(argv[1])
    streak = surge = 0
    for _symbol, group in long.groupby("symbol", sort=False):
        s, u = count_firings(group["close"].tolist())
        streak += s
        surge += u
    print(f"streak={streak} surge={surge}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
