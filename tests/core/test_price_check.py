"""Bad prints against a reference that can itself be wrong: one bad print costs one rejection,
and a wrong reference (a fat finger that got in, a print the bar builder then refused, a bad
close in the stored history) costs `max_jump_confirm - 1` rejections, never a blocked symbol."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.core.engine import Engine
from monitor.core.model import (
    DAILY_SCHEMA,
    TICK_SCHEMA,
    Bar,
    FeedBatch,
    Rejection,
    Tick,
    bars_frame,
    ticks_frame,
)
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


def send(e: Engine, ticks: list[Tick]) -> list[Rejection]:
    batch = FeedBatch.empty("t")
    batch.ticks = ticks_frame(ticks)
    return e.ingest(batch)


def send_bars(e: Engine, bars: list[Bar]) -> list[str]:
    """Provider bars, minute or session ones as each Bar says, in one batch; the reasons."""
    batch = FeedBatch.empty("t")
    batch.minute_bars = bars_frame([b for b in bars if b.timeframe == "1m"], "1m")
    batch.daily_bars = bars_frame([b for b in bars if b.timeframe == "1d"], "1d")
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


def test_copies_of_one_bad_print_never_confirm_a_new_level(sessions: Sessions) -> None:
    """One bad trade delivered five times (the same id), and another five times without an id
    (the same ts, price and size), is two prints, not ten: every copy is rejected, the real
    prints after them are taken, the reference stays. The fifth copy used to become the
    reference, and the real prints were then rejected."""
    e = engine(sessions)
    assert feed(e, [10.0]) == []
    later = OPEN + dt.timedelta(minutes=1)
    stamp = "2024-07-16T14:01:00Z"
    for _ in range(5):
        bad = send(e, [Tick("IWM", later, 1_000.0, 1.0, "bad")])
        bad += send(e, [Tick("IWM", later, 900.0, 2.0, None)])
        assert bad == [
            Rejection("bad_print", "IWM", f"ts={stamp} price=1000.0 size=1.0 id=bad (last 10.0)"),
            Rejection("bad_print", "IWM", f"ts={stamp} price=900.0 size=2.0 id=null (last 10.0)"),
        ]
    assert feed(e, [10.1, 10.2, 10.0, 10.3, 10.1], OPEN + dt.timedelta(minutes=2)) == []
    assert e.take_price_resets() == []


def test_copies_of_one_provider_minute_bar_never_confirm_a_new_level(sessions: Sessions) -> None:
    """A provider re-sending its bad bar for one minute five times is one print: all rejected."""
    e = engine(sessions)
    assert feed(e, [10.0]) == []
    bad = Bar("IWM", "1m", 1_000.0, 1_000.0, 1_000.0, 1_000.0, 5.0, start=OPEN)
    assert [send_bars(e, [bad]) for _ in range(5)] == [["bad_print"]] * 5
    assert e.take_price_resets() == []


def test_prints_the_bar_builder_refuses_confirm_no_new_level(sessions: Sessions) -> None:
    """Five pre-market prints at 100x (extended hours off) are refused as outside the session,
    not as bad prints, and make no reference: the open's real print is taken. They used to
    count as confirmations, the fifth became the reference and the open was rejected."""
    e = engine(sessions)
    assert feed(e, [10.0]) == []
    pre_market = dt.datetime(2024, 7, 17, 12, 0, tzinfo=dt.UTC)  # 08:00 in New York
    assert feed(e, [1_000.0] * 5, pre_market) == ["outside_session"] * 5
    assert feed(e, [10.2], dt.datetime(2024, 7, 17, 13, 30, tzinfo=dt.UTC)) == []
    assert e.take_price_resets() == []


BAD_VALUES = [
    (Tick("IWM", OPEN, float("nan"), 1.0, "a"), "bad_price"),
    (Tick("IWM", OPEN, 0.0, 1.0, "b"), "bad_price"),
    (Tick("IWM", OPEN, -240.0, 1.0, "c"), "bad_price"),
    (Tick("IWM", OPEN, float("inf"), 1.0, "d"), "bad_price"),
    (Tick("IWM", OPEN, 24_000.0, float("nan"), "e"), "bad_size"),
    (Bar("IWM", "1m", 240.0, 240.0, 0.0, 0.0, 1.0, start=OPEN), "bad_bar"),
    (Bar("IWM", "1m", 240.0, float("inf"), 240.0, float("inf"), 1.0, start=OPEN), "bad_bar"),
    (Bar("IWM", "1m", float("nan"), 2.4e4, 2.4e4, 2.4e4, 1.0, start=OPEN), "bad_bar"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_VALUES)
def test_bad_values_keep_their_reason_with_max_jump(
    sessions: Sessions, row: Tick | Bar, reason: str
) -> None:
    """With max_jump set, a NaN, zero, negative or infinite price is still a bad price (a bad
    bar), not a bad print; they used to be counted as bad prints ("X nan (last 240.0)")."""
    e = engine(sessions)
    assert feed(e, [240.0]) == []
    got = [r.reason for r in send(e, [row])] if isinstance(row, Tick) else send_bars(e, [row])
    assert got == [reason]
    assert feed(e, [240.5], OPEN + dt.timedelta(minutes=1)) == []


def test_a_ten_fold_move_on_session_bars_is_taken(sessions: Sessions) -> None:
    """A daily-bar feed through a 1:20 reverse split: every session bar is taken (session bars
    are provider summaries, not screened), and the next tick is held to the new close. The
    first four sessions after the split used to be rejected as bad prints."""
    e = engine(sessions)
    days = [dt.date(2024, 7, d) for d in (8, 9, 10, 11, 12, 15)]
    got: list[list[str]] = []
    for n, day in enumerate(days):
        price = 1.0 if n == 0 else 20.0
        got.append(send_bars(e, [Bar("X", "1d", price, price, price, price, 1e5, session=day)]))
        e.advance(sessions.close_of(day) + dt.timedelta(hours=1))
    assert got == [[]] * 6
    assert e.daily.get_column("close").to_list() == [1.0, 20.0, 20.0, 20.0, 20.0, 20.0]
    assert feed(e, [20.1, 1.0], OPEN, "X") == ["bad_print"]
    assert e.take_price_resets() == []


def test_a_session_bar_of_a_session_not_opened_is_refused_and_moves_no_reference(
    sessions: Sessions,
) -> None:
    """An engine at 10:00 on 07-16 (the daemon's step clock) with IWM trading at 240: a
    session bar of 07-17 (a session not opened) at 5 is refused as `future_bar` (counted) and
    IWM's next prints at 240 are taken; a bar of 07-16 itself, under way, is taken. Before,
    the future bar was taken, and every print after it was a bad print against its 5."""
    e = Engine(RulesFile(), sessions, max_jump=10.0)
    e.advance(OPEN)
    assert feed(e, [240.0, 240.1]) == []

    def at_open(bar: Bar) -> list[str]:
        batch = FeedBatch.empty("t")
        batch.daily_bars = bars_frame([bar], "1d")
        return [r.reason for r in e.ingest(batch, now=OPEN)]

    ahead = Bar("IWM", "1d", 5.0, 5.0, 5.0, 5.0, 1.0, session=dt.date(2024, 7, 17))
    assert at_open(ahead) == ["future_bar"]
    assert e.counts["future_bar"] == 1
    assert feed(e, [240.2, 240.3], OPEN + dt.timedelta(seconds=10)) == []
    today = Bar("IWM", "1d", 239.0, 241.0, 238.0, 240.3, 1e6, session=dt.date(2024, 7, 16))
    assert at_open(today) == []
