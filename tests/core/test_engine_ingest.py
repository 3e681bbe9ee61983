"""Engine.ingest: a provider's bad minute bar is rejected before it can move the rules' clock."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.engine import Engine
from monitor.core.model import TICK_SCHEMA, Bar, FeedBatch, Rejection, Tick, bars_frame, ticks_frame
from monitor.core.rules.spec import parse_rules
from monitor.core.sessions import Sessions

RULES = """
[[rules]]
id = "m.jump"
kind = "surge"
symbols = ["X", "Y"]
timeframe = "1m"
window = 1
min_return = 0.05
"""


def at(hour: int, minute: int, second: int = 0) -> dt.datetime:
    """An instant of 2024-07-02, a full session (09:30-16:00 New York, 13:30-20:00 UTC)."""
    return dt.datetime(2024, 7, 2, hour, minute, second, tzinfo=dt.UTC)


def bars(*rows: tuple[str, dt.datetime, float]) -> FeedBatch:
    batch = FeedBatch.empty("t")
    batch.minute_bars = bars_frame(
        [Bar(s, "1m", c, c, c, c, 10.0, start=start) for s, start, c in rows], "1m"
    )
    return batch


def test_a_minute_bar_from_the_future_does_not_silence_minute_rules(sessions: Sessions) -> None:
    """A bar stamped 15:00 New York arriving at 09:31 (a feed with a wrong time-zone offset) is
    rejected as future_bar by the next advance (which knows the time); the 1m watermark stays
    at the minute closed, and the next minute's 10% jump fires. It used to close at once and
    move the watermark to 15:01, silencing every 1m rule until then."""
    e = Engine(parse_rules(RULES), sessions, max_jump=10.0)
    e.warm(at(12, 0))
    assert e.ingest(bars(("X", at(13, 30), 10.0), ("Y", at(13, 30), 10.0))) == []
    e.advance(at(13, 31, 5))
    assert e.ingest(bars(("Y", at(19, 0), 10.0))) == []
    raw = "start=2024-07-02T19:00:00Z open=10.0 high=10.0 low=10.0 close=10.0 volume=10.0"
    assert e.advance(at(13, 31, 6)).rejections == [Rejection("future_bar", "Y", raw)]
    assert e.watermarks == {"1m": at(13, 31)}
    assert e.ingest(bars(("X", at(13, 31), 11.0))) == []
    step = e.advance(at(13, 32, 5))
    assert [(a.rule, a.symbol, a.ts) for a in step.alerts] == [
        ("m.jump", "X", "2024-07-02T13:32:00Z")
    ]
    assert e.watermarks == {"1m": at(13, 32)}
    assert (e.book_counts(), e.counts) == ({"future_bar": 1}, {"future_bar": 1})


def test_a_minute_rule_new_at_a_restart_fires_nothing_on_the_minutes_before_it(
    sessions: Sessions,
) -> None:
    """The bars of the session under way, saved by a daemon without minute rules, are taken up
    by one that has one: the 10% jump of 09:31, before the start, fires nothing (as a new daily
    rule fires nothing on the days before); the jump of 09:35, after it, fires."""
    from monitor.core.bars import BarBook

    book = BarBook(sessions)
    book.ingest_minute_bars(bars(("X", at(13, 30), 10.0), ("X", at(13, 31), 11.0)).minute_bars)
    book.advance(at(13, 33))
    engine = Engine(parse_rules(RULES), sessions)
    assert engine.restore_bars(book.state(), at(13, 34))
    assert engine.advance(at(13, 34)).alerts == []
    engine.ingest(bars(("X", at(13, 34), 11.0), ("X", at(13, 35), 12.5)))
    fired = engine.advance(at(13, 37)).alerts
    assert [(a.symbol, a.ts) for a in fired] == [("X", "2024-07-02T13:36:00Z")]


def ticks(*rows: tuple[str, dt.datetime, float, str]) -> FeedBatch:
    batch = FeedBatch.empty("t")
    batch.ticks = ticks_frame([Tick(s, ts, p, 100.0, trade) for s, ts, p, trade in rows])
    return batch


def test_ticks_taken_before_a_restart_are_not_screened_again(sessions: Sessions) -> None:
    """X closed at 10; live, four prints at 200 are bad prints and the fifth confirms the new
    level. A restarted engine taking up the journal of what was accepted takes those prints as
    they were taken (`taken=True`), not as bad prints against the stored close of 10: their
    messages were acknowledged, and would be lost."""
    history = pl.DataFrame(
        {"symbol": ["X"], "session": [dt.date(2024, 7, 1)], "open": [10.0], "high": [10.0],
         "low": [10.0], "close": [10.0], "volume": [1.0]}
    )  # fmt: skip
    live = Engine(parse_rules(RULES), sessions, max_jump=10.0)
    live.ingest_daily(history)
    live.advance(at(13, 40))
    prints = [("X", at(13, 40, i), 200.0 + i, f"t{i}") for i in range(8)]
    refused = live.ingest(ticks(*prints))
    assert [r.reason for r in refused] == ["bad_print"] * 4
    journal = live.take_accepted()
    assert journal.ticks.get_column("price").to_list() == [204.0, 205.0, 206.0, 207.0]
    assert journal.ticks.columns == list(TICK_SCHEMA)
    restarted = Engine(parse_rules(RULES), sessions, max_jump=10.0)
    restarted.ingest_daily(history)
    restarted.advance(at(13, 40))
    assert restarted.ingest(journal, taken=True) == []
    assert restarted.take_accepted().ticks.height == 4


def test_a_bar_waiting_for_the_clock_is_journaled_only_once_taken(sessions: Sessions) -> None:
    """A provider bar ahead of the clock is not in what the engine took in until an advance
    after its minute's end takes it; one found to be from the future never is (the journal
    holds no row the engine rejected)."""
    e = Engine(parse_rules(RULES), sessions)
    e.warm(at(12, 0))
    e.ingest(bars(("X", at(13, 30), 10.0)))
    e.advance(at(13, 31, 5))
    assert e.take_accepted().minute_bars.height == 1
    e.ingest(bars(("X", at(13, 32), 10.0), ("Y", at(19, 0), 10.0)))
    assert e.take_accepted().minute_bars.height == 0  # (13:32 waits: its minute is to come)
    step = e.advance(at(13, 32, 30))
    assert [r.reason for r in step.rejections] == ["future_bar"]
    assert e.take_accepted().minute_bars.height == 0  # (13:32 is not over yet)
    assert e.evaluates(at(13, 33))
    e.advance(at(13, 33))
    taken = e.take_accepted().minute_bars
    assert taken.select("symbol", "start").rows() == [("X", at(13, 32))]


def test_a_tick_waiting_for_the_clock_is_journaled_only_once_taken(sessions: Sessions) -> None:
    """A tick ahead of the clock is not in what the engine took in until an advance takes it;
    one found to be from the future never is, and is a step's rejection (counted)."""
    e = Engine(parse_rules(RULES), sessions)
    e.warm(at(12, 0))
    e.advance(at(13, 31))
    e.ingest(ticks(("X", at(13, 31, 10), 10.0, "x1"), ("X", at(13, 33), 10.5, "x2")))
    e.ingest(ticks(("Y", at(19, 0), 10.0, "y1")))
    assert e.take_accepted().ticks.get_column("id").to_list() == ["x1"]
    step = e.advance(at(13, 32, 30))
    assert [(r.reason, r.symbol) for r in step.rejections] == [("future_tick", "Y")]
    assert e.take_accepted().ticks.get_column("id").to_list() == ["x2"]
    assert e.counts["future_tick"] == 1


def test_a_running_bar_of_the_minute_under_way_fires_only_once_its_minute_is_over(
    sessions: Sessions,
) -> None:
    """A feed that sends the bar of the minute under way (10:01 at 10:01:21): the minute rule
    fires once the minute is over, on the bar as it last came, with the minute's end as `ts`.
    Before, the bar closed at once: the rule fired at 10:01:21 with a `ts` of 10:02, a time
    still to come, on a bar the minute's later trades never reached."""
    e = Engine(parse_rules(RULES), sessions, max_jump=10.0)
    e.warm(at(12, 0))
    e.ingest(bars(("X", at(14, 0), 10.0)))
    e.advance(at(14, 1, 5))
    e.ingest(bars(("X", at(14, 1), 11.0)))  # (+10%: the rule's 5%, but the minute is not over)
    assert e.advance(at(14, 1, 21)).alerts == []
    e.ingest(bars(("X", at(14, 1), 10.2)))  # (the bar again, later in its minute: +2%)
    assert e.advance(at(14, 1, 50)).alerts == []
    assert e.advance(at(14, 2, 1)).alerts == []  # (taken as it last came: no jump)
    e.ingest(bars(("X", at(14, 2), 11.0)))
    step = e.advance(at(14, 3, 1))
    assert [(a.symbol, a.ts) for a in step.alerts] == [("X", "2024-07-02T14:03:00Z")]
