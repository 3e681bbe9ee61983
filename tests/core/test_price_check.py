"""Bad prints against a reference that can itself be wrong: one bad print costs one rejection,
and a wrong reference (a fat finger that got in, a print the bar builder then refused, a bad
close in the stored history) costs `max_jump_confirm - 1` rejections, never a blocked symbol."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA, TICK_SCHEMA, FeedBatch
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions

OPEN = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)  # a Tuesday, 10:00 in New York


def engine(sessions: Sessions, history: pl.DataFrame | None = None) -> Engine:
    e = Engine(RulesFile(), sessions, max_jump=10.0)
    if history is not None:
        e.ingest_daily(history)
        e.advance(OPEN)
    return e


def feed(
    e: Engine, prices: list[float], start: dt.datetime = OPEN, symbol: str = "IWM"
) -> list[str]:
    """Ticks a second apart in one batch; the reason of each rejection, in order."""
    ticks = pl.DataFrame(
        {
            "symbol": [symbol] * len(prices),
            "ts": [start + dt.timedelta(seconds=i) for i in range(len(prices))],
            "price": prices,
            "size": [1.0] * len(prices),
            "id": [f"{start.timestamp()}-{i}" for i in range(len(prices))],
        },
        schema=TICK_SCHEMA,
    )
    batch = FeedBatch.empty("t")
    batch.ticks = ticks
    return [r.reason for r in e.ingest(batch)]


def test_one_bad_print_costs_one_rejection(sessions: Sessions) -> None:
    e = engine(sessions)
    assert feed(e, [240.0, 240.5]) == []
    assert feed(e, [24_000.0, 240.7, 241.0], OPEN + dt.timedelta(minutes=1)) == ["bad_print"]
    assert e.take_price_resets() == []


def test_a_fat_finger_first_print_does_not_block_the_symbol(sessions: Sessions) -> None:
    """The first print of a symbol with no history is 100x off, alone in its batch: nothing to
    check it against, it gets in. Real prints then: four rejected, the fifth agreeing one
    becomes the reference (reported), and the rest are taken. It used to reject every real
    print for good."""
    e = engine(sessions)
    assert feed(e, [24_000.0]) == []
    reasons = feed(
        e, [240.2, 240.1, 240.4, 240.3, 240.5, 240.6, 240.2], OPEN + dt.timedelta(minutes=1)
    )
    assert reasons == ["bad_print"] * 4
    (reset,) = e.take_price_resets()
    assert (reset.symbol, reset.old, reset.new, reset.prints) == ("IWM", 24_000.0, 240.5, 5)
    assert feed(e, [240.9], OPEN + dt.timedelta(minutes=2)) == []


def test_a_fat_finger_among_a_first_batch_is_held_to_the_batch_median(sessions: Sessions) -> None:
    e = engine(sessions)
    assert feed(e, [240.0, 24_000.0, 240.3, 240.1]) == ["bad_print"]


def test_a_print_the_bar_builder_refused_is_no_reference(sessions: Sessions) -> None:
    """A Sunday print at 112 is refused (outside the session); the next session's 11.0 is held
    to nothing, not to 112. It used to be rejected as a bad print."""
    e = engine(sessions)
    sunday = dt.datetime(2024, 7, 14, 15, 0, tzinfo=dt.UTC)
    assert feed(e, [112.0], sunday, "OPRV") == ["outside_session"]
    assert feed(e, [11.0, 11.1], OPEN, "OPRV") == []


def test_a_bad_close_in_the_history_heals_after_the_confirming_prints(sessions: Sessions) -> None:
    """The stored daily close is the fat finger (24000): as after a restart, the reference comes
    from it; real prints are taken from the fifth on."""
    history = pl.DataFrame(
        {"symbol": ["IWM"], "session": [dt.date(2024, 7, 15)], "open": [240.0], "high": [24_000.0],
         "low": [239.0], "close": [24_000.0], "volume": [1e6]},
        schema=DAILY_SCHEMA,
    )  # fmt: skip
    e = engine(sessions, history)
    assert feed(e, [241.0] * 6) == ["bad_print"] * 4
    assert len(e.take_price_resets()) == 1


def test_prints_out_of_band_that_disagree_never_move_the_reference(sessions: Sessions) -> None:
    """Garbage both ways (10x up, 10x down) is not a new level: all rejected, no reset."""
    e = engine(sessions)
    assert feed(e, [240.0]) == []
    garbage = [3_000.0, 20.0] * 4
    assert feed(e, garbage, OPEN + dt.timedelta(minutes=1)) == ["bad_print"] * 8
    assert e.take_price_resets() == []
    assert feed(e, [240.5], OPEN + dt.timedelta(minutes=2)) == []
