"""A closing print that comes a few seconds after the close is in its session's bar when the
daily rules run (the daemon builds session bars `session_close_delay_s` after the close): the
movers are replay's, not a ranking without it corrected too late."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.core.engine import Engine
from monitor.core.model import TICK_SCHEMA, FeedBatch
from monitor.core.rules.spec import parse_rules
from monitor.core.sessions import Sessions

RULES = '[[rules]]\nid = "mv"\nkind = "movers"\nuniverse = true\nwindow = 1\ntop = 2\n'
DAY1, DAY2 = dt.date(2024, 7, 15), dt.date(2024, 7, 16)
GAINS = {"AAA": 0.05, "BBB": 0.04, "CCC": 0.03, "DDD": 0.01}  # by 15:59
CROSS = 1.2  # DDD's closing print: +20% on its last price, at 16:00:00.400
S = dt.timedelta(seconds=1)


def ticks(start: dt.datetime, rows: list[tuple[str, dt.datetime, float]]) -> FeedBatch:
    batch = FeedBatch.empty("mqtt")
    batch.ticks = pl.DataFrame(
        [(sym, ts, price, 100.0, f"{sym}-{ts:%H%M%S%f}") for sym, ts, price in rows],
        schema=TICK_SCHEMA,
        orient="row",
    )
    return batch


def fired(sessions: Sessions, session_close_delay_s: float | None, cross_after_s: float) -> list:  # type: ignore[type-arg]
    """The movers of DAY2 over DAY1's closes: ticks minute by minute from 15:50 to 15:59, and
    DDD's closing print coming `cross_after_s` after the close, the clock stepping 0.5 s."""
    options = (
        {} if session_close_delay_s is None else {"session_close_delay_s": session_close_delay_s}
    )
    engine = Engine(parse_rules(RULES), sessions, minute_by_minute=True, bar_options=options)
    history = FeedBatch.empty("mqtt")
    history.daily_bars = pl.DataFrame(
        {"symbol": list(GAINS), "session": [DAY1] * 4, "close": [10.0] * 4}
    ).with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    engine.ingest(history)
    engine.advance(sessions.close_of(DAY1) + 60 * S)
    close = sessions.close_of(DAY2)
    alerts = []
    for m in range(10):
        minute = close - dt.timedelta(minutes=10 - m)
        alerts += engine.advance(minute).alerts
        at = minute + 30 * S
        prices = [(sym, at, 10.0 * (1 + g * (m + 1) / 10)) for sym, g in GAINS.items()]
        engine.ingest(ticks(minute, prices))
    stamp = close + dt.timedelta(milliseconds=400)
    cross = ticks(close, [("DDD", stamp, round(10.0 * (1 + GAINS["DDD"]) * CROSS, 4))])
    now, sent = close, False
    while now < close + 12 * S:
        now += S / 2
        if not sent and now >= close + cross_after_s * S:
            engine.ingest(cross)
            sent = True
        alerts += engine.advance(now).alerts
    return [(a.symbol, a.metrics["rank"]) for a in alerts]


def test_a_closing_print_seconds_late_is_ranked_before_the_movers_fire(sessions: Sessions) -> None:
    """DDD's closing print (+20%) comes 4 s after the close: with session bars built 10 s
    after it, the movers are DDD #1 and AAA #2, as with the print on time (replay's). Built
    2 s after (before: the minute's delay), AAA was "#1" and BBB "#2" (replay fires no BBB),
    then DDD "#1" a step later."""
    on_time = fired(sessions, 10, cross_after_s=0.2)
    assert on_time == [("DDD", 1), ("AAA", 2)]
    assert fired(sessions, 10, cross_after_s=4) == on_time
    assert fired(sessions, None, cross_after_s=4) == [("AAA", 1), ("BBB", 2), ("DDD", 1)]


def emitted(sessions: Sessions, day: dt.date) -> tuple[dict[float, tuple[list, list]], dict]:  # type: ignore[type-arg]
    """A book closing sessions 10 s after the close, stepped every 0.5 s from 2 min before
    `day`'s close, AAA trading at 15:58:30 and 15:59:30 (New York, each as it happens) and
    its closing print (stamped at the close, 500 shares at 11.0) coming 5 s after it: what
    each step emitted (by seconds from the close: the minute and session bars' rows), and
    the book's counts."""
    from monitor.core.bars import BarBook

    close = sessions.close_of(day)
    arrivals = {-90.0: (-90, 10.0, 100.0), -30.0: (-30, 10.2, 100.0), 5.0: (0, 11.0, 500.0)}
    book = BarBook(sessions, session_close_delay_s=10)
    out: dict[float, tuple[list, list]] = {}  # type: ignore[type-arg]
    for half in range(-240, 25):
        if half / 2 in arrivals:
            stamp, price, size = arrivals[half / 2]
            row = ("AAA", close + stamp * S, price, size, f"t{stamp}")
            book.ingest_ticks(pl.DataFrame([row], schema=TICK_SCHEMA, orient="row"))
        step = book.advance(close + half * S / 2)
        if step.minute.height or step.daily.height:
            out[half / 2] = (
                step.minute.select("start", "open", "high", "low", "close", "volume").rows(),
                step.daily.select("session", "open", "high", "low", "close", "volume").rows(),
            )
    return out, book.counts


@pytest.mark.parametrize("day", [DAY2, dt.date(2024, 7, 3)], ids=["full", "early-close"])
def test_the_last_minute_closes_with_the_session_and_takes_a_closing_print_5_s_late(
    sessions: Sessions, day: dt.date
) -> None:
    """The closing print comes 5 s after the close (16:00:00, 13:00 on an early close): the
    session's last minute, closed with the session's bar 10 s after the close, has it in the
    one bar emitted of it, not as a late tick's correction; the minute before closes 2 s after
    its end, as any. (The last minute closed at 2 s, without it, and the print came as a late
    tick correcting it after its minute rules had run.)"""
    close = sessions.close_of(day)
    last, before = close - 60 * S, close - 120 * S
    assert emitted(sessions, day) == (
        {
            -58.0: ([(before, 10.0, 10.0, 10.0, 10.0, 100.0)], []),
            10.0: (
                [(last, 10.2, 11.0, 10.2, 11.0, 600.0)],
                [(day, 10.0, 11.0, 10.0, 11.0, 700.0)],
            ),
        },
        {},
    )


def test_a_restart_before_the_sessions_bar_keeps_its_last_minute_open(
    sessions: Sessions,
) -> None:
    """The daemon stops 5 s after the close (its bar state saved) and starts again at 6 s,
    when the closing print comes: the last minute, open in the saved state, takes it and
    closes whole with the session's bar at 10 s, no tick late. (It had closed at 2 s, before
    the stop, and the print corrected it.)"""
    from monitor.core.bars import BarBook

    close = sessions.close_of(DAY2)
    book = BarBook(sessions, session_close_delay_s=10)
    book.advance(close - 31 * S)
    book.ingest_ticks(ticks(close, [("AAA", close - 30 * S, 10.2)]).ticks)
    early = [book.advance(close + n * S).minute.height for n in (2, 5)]
    restarted = BarBook(sessions, session_close_delay_s=10)
    assert restarted.restore(book.state(), close + 6 * S)
    restarted.ingest_ticks(ticks(close, [("AAA", close, 11.0)]).ticks)
    waited = restarted.advance(close + 9 * S).minute.height
    closed = restarted.advance(close + 10 * S)
    assert (early, waited) == ([0, 0], 0)
    assert closed.minute.select("start", "open", "close", "volume").rows() == [
        (close - 60 * S, 10.2, 11.0, 200.0)
    ]
    assert closed.daily.select("open", "close", "volume").rows() == [(10.2, 11.0, 200.0)]
    assert restarted.counts == {}
