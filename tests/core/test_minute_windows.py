"""Minute rules: a window stays in its session (the overnight gap is no move of a few minutes)."""

from __future__ import annotations

import datetime as dt

from monitor.calendar import nyse_sessions
from monitor.core.engine import Engine
from monitor.core.model import Alert, Bar, FeedBatch, bars_frame
from monitor.core.rules.spec import parse_rules

RULES = """
[[rules]]
id = "m.jump"
kind = "surge"
symbols = ["X"]
timeframe = "1m"
window = 2
min_return = 0.05

[[rules]]
id = "m.run"
kind = "streak"
symbols = ["X"]
timeframe = "1m"
count = 3
min_return = 0.001
"""


def at(day: int, hour: int, minute: int) -> dt.datetime:
    """An instant of July 2024 (sessions 13:30-20:00 UTC; the 1st and 2nd are sessions)."""
    return dt.datetime(2024, 7, day, hour, minute, tzinfo=dt.UTC)


def alerts(closes: list[tuple[dt.datetime, float]]) -> list[Alert]:
    """The alerts of one-minute bars of X with these closes, each closed in its own step."""
    engine = Engine(parse_rules(RULES), nyse_sessions(dt.date(2024, 1, 1)))
    engine.warm(at(1, 19, 0))
    fired: list[Alert] = []
    for start, close in closes:
        batch = FeedBatch.empty("t")
        bar = Bar("X", "1m", close, close, close, close, 100.0, start=start)
        batch.minute_bars = bars_frame([bar], "1m")
        engine.ingest(batch)
        fired += engine.advance(start + dt.timedelta(minutes=1, seconds=5)).alerts
    return fired


def test_a_minute_window_does_not_reach_over_the_night() -> None:
    """X ends the 1st at 10.00 (two minutes up 0.2% each) and opens the 2nd at 11.00: the
    opening gap is neither a 2-minute surge of 10% nor the third minute of a run; the same
    rise within the session is both. A window at 09:30 and 09:31 used to reach back into the
    1st's last minutes: "X rose 10.0% in 2 minutes, its largest 2-minute gain on record"."""
    evening = [(at(1, 19, 57), 9.96), (at(1, 19, 58), 9.98), (at(1, 19, 59), 10.0)]
    morning = [(at(2, 13, 30), 11.0), (at(2, 13, 31), 11.02)]
    assert alerts(evening + morning) == []
    later = [(at(2, 13, 32), 11.05), (at(2, 13, 33), 11.6), (at(2, 13, 34), 12.2)]
    fired = alerts(evening + morning + later)
    assert [(a.rule, a.ts) for a in fired] == [
        ("m.jump", "2024-07-02T13:34:00Z"),  # the minute of 13:33: 11.02 -> 11.6 is +5.3%
        ("m.run", "2024-07-02T13:34:00Z"),  # 13:31, 13:32 and 13:33 each up: the third
    ]
