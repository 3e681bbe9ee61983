"""The order alerts come out in, live and in replay alike: by time, then rule, a movers rule's
by rank (#1 first), the others' by symbol."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.calendar import nyse_sessions
from monitor.core.engine import Engine
from monitor.core.model import TICK_SCHEMA, FeedBatch
from monitor.core.rules.spec import parse_rules
from monitor.core.sessions import Sessions
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


CLOSE_RULES = """
[[rules]]
id = "a.day"
kind = "surge"
universe = true
window = 1
min_return = 0.01

[[rules]]
id = "b.minute"
kind = "surge"
universe = true
timeframe = "1m"
window = 1
min_return = 0.001
"""


def test_at_a_close_the_last_minutes_alerts_come_before_the_sessions(sessions: Sessions) -> None:
    """AAA up 2.9% in the close's last minute, and 5% on the session: the daemon (stepping every
    second, session bars 10 s after the close, the last minute with them) fires the 15:59
    minute's surge and the session's in one step, both stamped at the close, the minute's
    first; one step over it all (as replay takes a day) gives them in that order too: minute
    alerts before daily ones at one instant. (Replay put the daily rule `a.day` first, by rule
    id: the other order.)"""
    day1, day2 = dt.date(2024, 7, 15), dt.date(2024, 7, 16)
    close = sessions.close_of(day2)
    history = FeedBatch.empty("mqtt")
    history.daily_bars = pl.DataFrame({"symbol": ["AAA"], "session": [day1], "close": [10.0]})
    history.daily_bars = history.daily_bars.with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    ticks = FeedBatch.empty("mqtt")
    minutes = [close - dt.timedelta(minutes=5 - m) + dt.timedelta(seconds=30) for m in range(5)]
    ticks.ticks = pl.DataFrame(
        [("AAA", ts, 10.5 if m == 4 else 10.2, 100.0, f"t{m}") for m, ts in enumerate(minutes)],
        schema=TICK_SCHEMA,
        orient="row",
    )

    def engine(delay: float | None) -> Engine:
        options = {} if delay is None else {"session_close_delay_s": delay}
        e = Engine(parse_rules(CLOSE_RULES), sessions, minute_by_minute=True, bar_options=options)
        e.ingest(history)
        e.advance(sessions.close_of(day1) + dt.timedelta(minutes=1))
        e.advance(close - dt.timedelta(minutes=5))
        e.ingest(ticks)
        return e

    live = engine(10)
    stepped, steps = [], []
    for s in range(1, 13):
        alerts = live.advance(close + dt.timedelta(seconds=s)).alerts
        stepped += alerts
        steps += [(s, [a.rule for a in alerts])] if alerts else []
    at_once = engine(None).advance(close + dt.timedelta(minutes=1)).alerts
    at_close = [a for a in at_once if a.ts == "2024-07-16T20:00:00Z"]
    assert [a.rule for a in at_close] == ["b.minute", "a.day"]
    assert steps == [(10, ["b.minute", "a.day"])]
    assert [a.id for a in stepped] == [a.id for a in at_close]
