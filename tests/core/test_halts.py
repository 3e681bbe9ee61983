"""A halt reported by a feed rejects a symbol's prints from the halt on (`halted`), not those
of before it: a print reported late, or the minute bars a backfill fetches of an earlier
session, are taken."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, FeedBatch, Tick, ticks_frame
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions

HALT = dt.datetime(2024, 7, 17, 17, 0, 0, tzinfo=dt.UTC)  # 13:00 New York
_S = dt.timedelta(seconds=1)


def minute(symbol: str, start: dt.datetime) -> dict[str, object]:
    return {"symbol": symbol, "start": start, "open": 10.0, "high": 10.0, "low": 10.0,
            "close": 10.0, "volume": 100.0}  # fmt: skip


def session_bars(*days: dt.date) -> pl.DataFrame:
    """ABC's session bar of each of `days`, at 10."""
    n = len(days)
    prices = {name: [10.0] * n for name in ("open", "high", "low", "close")}
    frame = {"symbol": ["ABC"] * n, "session": list(days), **prices, "volume": [1e5] * n}
    return pl.DataFrame(frame, schema=DAILY_SCHEMA)


def rejected(engine: Engine, batch: FeedBatch) -> list[tuple[str, str | None]]:
    return [(r.reason, r.symbol) for r in engine.ingest(batch)]


def test_a_halt_rejects_prints_from_when_it_began(sessions: Sessions) -> None:
    engine = Engine(RulesFile(), sessions)
    engine.advance(HALT + 20 * _S)
    engine.set_halted("ABC", True, at=HALT)
    ticks = FeedBatch.empty("t")
    ticks.ticks = ticks_frame(
        [
            Tick("ABC", HALT - 30 * _S, 10.0, 100.0, "late"),
            Tick("ABC", HALT + 5 * _S, 12.0, 100.0, "in"),
        ]
    )
    assert rejected(engine, ticks) == [("halted", "ABC")]
    assert engine.book.accepted.get_column("id").to_list() == ["late"]

    bars = FeedBatch.empty("t")
    yesterday = dt.datetime(2024, 7, 16, 19, 0, tzinfo=dt.UTC)
    bars.minute_bars = pl.DataFrame(
        [minute("ABC", yesterday), minute("ABC", HALT - 2 * 60 * _S), minute("ABC", HALT)],
        schema=MINUTE_SCHEMA,
    )
    assert rejected(engine, bars) == [("halted", "ABC")]

    daily = FeedBatch.empty("t")
    daily.daily_bars = session_bars(dt.date(2024, 7, 16), dt.date(2024, 7, 17))
    assert rejected(engine, daily) == [("halted", "ABC")]

    engine.set_halted("ABC", False)
    after = FeedBatch.empty("t")
    after.ticks = ticks_frame([Tick("ABC", HALT + 60 * _S, 12.0, 100.0, "resumed")])
    assert rejected(engine, after) == []


def test_a_halt_reported_with_no_time_before_any_clock_rejects_every_print(
    sessions: Sessions,
) -> None:
    """Without a time and before the engine's first step, when the halt began is unknown: every
    print of the symbol is rejected, as before halts had times."""
    engine = Engine(RulesFile(), sessions)
    engine.set_halted("ABC", True)
    ticks = FeedBatch.empty("t")
    ticks.ticks = ticks_frame([Tick("ABC", HALT - 3600 * _S, 10.0, 100.0, "a")])
    assert rejected(engine, ticks) == [("halted", "ABC")]


def test_a_halt_after_the_close_leaves_that_sessions_bar_alone(sessions: Sessions) -> None:
    """A halt at 17:00 New York (after-hours news): the day's session bar, sent after it, closed
    before the halt began and is taken; the next day's is rejected."""
    after_close = dt.datetime(2024, 7, 17, 21, 0, tzinfo=dt.UTC)
    engine = Engine(RulesFile(), sessions)
    engine.advance(after_close)
    engine.set_halted("ABC", True, at=after_close)
    daily = FeedBatch.empty("t")
    daily.daily_bars = session_bars(dt.date(2024, 7, 17), dt.date(2024, 7, 18))
    assert rejected(engine, daily) == [("halted", "ABC")]
    assert engine.accepted.daily_bars.get_column("session").to_list() == [dt.date(2024, 7, 17)]


def test_halts_and_resumes_between_batches_each_take_effect(sessions: Sessions) -> None:
    """The screen's halts change between batches (one symbol halted, then a second, then the
    first resumed): each batch is screened against the halts of its time."""
    engine = Engine(RulesFile(), sessions)
    engine.advance(HALT + 20 * _S)

    def batch(at: dt.datetime, name: str) -> FeedBatch:
        ticks = FeedBatch.empty("t")
        ticks.ticks = ticks_frame(
            [Tick("ABC", at, 10.0, 100.0, f"a-{name}"), Tick("XYZ", at, 20.0, 100.0, f"x-{name}")]
        )
        return ticks

    engine.set_halted("ABC", True, at=HALT)
    assert rejected(engine, batch(HALT + 5 * _S, "1")) == [("halted", "ABC")]
    engine.set_halted("XYZ", True, at=HALT + 10 * _S)
    assert sorted(rejected(engine, batch(HALT + 15 * _S, "2"))) == [
        ("halted", "ABC"),
        ("halted", "XYZ"),
    ]
    engine.set_halted("ABC", False)
    assert rejected(engine, batch(HALT + 16 * _S, "3")) == [("halted", "XYZ")]
    assert engine.book.accepted.get_column("id").to_list() == ["a-3"]
