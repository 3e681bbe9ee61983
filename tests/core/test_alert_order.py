"""The order alerts come out in, live and in replay alike: by time, then rule, a movers rule's
by rank (#1 first), the others' by symbol."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.calendar import nyse_sessions
from monitor.core.engine import Engine
from monitor.core.model import FeedBatch
from monitor.core.rules.spec import parse_rules
from monitor.replay import build_engine, replay

RULES = """
[[rules]]
id = "mv"
kind = "movers"
universe = true
window = 1
top = 3

[[rules]]
id = "up"
kind = "surge"
universe = true
window = 1
min_return = 0.01
"""
# session 2's gains: the ranks run against the symbols' order (ZZZ #1, MMM #2, AAA #3)
GAINS = {"AAA": 0.02, "MMM": 0.05, "ZZZ": 0.09, "QQQ": -0.01}


def bars(days: list[dt.date]) -> pl.DataFrame:
    rows = [(s, days[0], 10.0) for s in GAINS] + [
        (s, days[1], 10.0 * (1 + g)) for s, g in GAINS.items()
    ]
    return pl.DataFrame(rows, schema=["symbol", "session", "close"], orient="row").with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )


WANT = [
    ("mv", "ZZZ", 1),
    ("mv", "MMM", 2),
    ("mv", "AAA", 3),
    ("up", "AAA"),
    ("up", "MMM"),
    ("up", "ZZZ"),
]


def said(alerts: list) -> list[tuple[object, ...]]:  # type: ignore[type-arg]
    return [
        (a.rule, a.symbol, a.metrics["rank"]) if a.rule == "mv" else (a.rule, a.symbol)
        for a in alerts
    ]


def test_the_daemons_step_gives_a_sessions_movers_in_rank_order() -> None:
    """The daemon's engine, the second session's bars coming in one step after the first's:
    the alerts the sinks get (console, Redis stream, recent alerts) are the movers #1, #2, #3,
    then the surges by symbol, as replay's. (The movers came by symbol: AAA #3 first.)"""
    sessions = nyse_sessions(dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    days = sessions.frame.get_column("session").head(2).to_list()
    engine = Engine(parse_rules(RULES), sessions, minute_by_minute=True)
    frame = bars(days)
    for day in days:
        batch = FeedBatch.empty("mqtt")
        batch.daily_bars = frame.filter(pl.col("session") == day)
        engine.ingest(batch)
        step = engine.advance(sessions.close_of(day) + dt.timedelta(minutes=1))
    assert said(step.alerts) == WANT
    replayed = list(replay(build_engine(parse_rules(RULES), sessions), frame))
    assert said(replayed) == WANT
