"""Sessions missing inside a symbol's history: a window or a streak does not reach across them,
so no alert says "in 5 sessions" of a move that took more."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA
from monitor.core.rules.spec import parse_rules
from monitor.core.sessions import Sessions

RULES = """
[[rules]]
id = "surge.5d"
kind = "surge"
symbols = ["X"]
timeframe = "1d"
window = 5
min_return = 0.10

[[rules]]
id = "streak.3d"
kind = "streak"
symbols = ["X"]
timeframe = "1d"
count = 3
min_return = 0.005
"""


def fired(sessions: Sessions, gap: bool) -> list[tuple[str, str, str]]:
    """X at 100 for 20 sessions from 2025-06-02, then 112, 113, 114, 115: with `gap`, the ten
    sessions before the 112 are missing from its history (the reviewer's case: 07-01 to
    07-15 missing, the rise to 112 made while no bar came)."""
    days = sessions.frame.filter(pl.col("session") >= dt.date(2025, 6, 2)).get_column("session")
    closes = [100.0] * 20 + [100.0] * 10 + [112.0, 113.0, 114.0, 115.0]
    rows = [
        ("X", day, close, close, close, close, 1000.0)
        for n, (day, close) in enumerate(zip(days, closes, strict=False))
        if not (gap and 20 <= n < 30)
    ]
    engine = Engine(parse_rules(RULES), sessions)
    engine.ingest_daily(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row"))
    step = engine.advance(dt.datetime(2025, 8, 1, tzinfo=dt.UTC))
    return [(a.rule, a.session, a.text) for a in step.alerts]


def test_no_window_or_streak_reaches_across_missing_sessions(sessions: Sessions) -> None:
    """With the ten sessions missing, X's rise to 112 happened somewhere in them: the surge
    ("+12% in 5 sessions") does not fire, and the streak counts only the sessions after the
    gap (113, 114, 115: three up, +2.7% in all), not the jump over it. Before, the surge fired
    ("X rose 14.2% in 5 sessions") and the streak fired a session early with the jump in it.
    With the sessions there (the rise made in one session), both fire on the jump."""
    assert fired(sessions, gap=True) == [
        (
            "streak.3d",
            "2025-07-21",
            "X rose more than 0.5% in each of 3 sessions (+2.7% in all), closing at 115.00.",
        )
    ]
    whole = fired(sessions, gap=False)
    assert [(rule, session) for rule, session, _ in whole] == [
        ("surge.5d", "2025-07-16"),
        ("streak.3d", "2025-07-18"),
    ]
