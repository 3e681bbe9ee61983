"""Sessions missing inside a symbol's history, as the daemon finds them step by step."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.calendar import nyse_sessions
from monitor.replay import Gap, new_gaps


def bars(rows: list[tuple[str, str]]) -> pl.DataFrame:
    """Daily bars (symbol, session) with a close of 10."""
    return pl.DataFrame(
        {
            "symbol": [s for s, _ in rows],
            "session": [dt.date.fromisoformat(d) for _, d in rows],
            "close": [10.0] * len(rows),
        }
    )


def test_a_step_holding_different_days_of_different_symbols_opens_no_gap() -> None:
    """Bars sent symbol by symbol reach the daemon over several steps: a step with AAA's bar of
    2024-07-10 and BBB's of 07-09 opens no gap, AAA's 07-09 bar being stored already. Before,
    the step's earliest day hid it and a missing 07-09 was reported for AAA."""
    sessions = nyse_sessions(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
    new = bars([("AAA", "2024-07-10"), ("BBB", "2024-07-09")])
    stored = bars(
        [("AAA", "2024-07-05"), ("AAA", "2024-07-08"), ("AAA", "2024-07-09"), ("BBB", "2024-07-05"),
         ("BBB", "2024-07-08")]
    )  # fmt: skip
    assert new_gaps(pl.concat([stored, new]), new, sessions) == []
    skipped = bars([("AAA", "2024-07-11"), ("BBB", "2024-07-11")])
    assert new_gaps(pl.concat([stored, new, skipped]), skipped, sessions) == [
        Gap("BBB", 1, dt.date(2024, 7, 10))
    ]
