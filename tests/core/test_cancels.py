"""BarBook.take_back: a feed's trade cancels and corrections taken out of the minute bars (and
the session bar) they went into, by building those bars again from the minute's other ticks."""

from __future__ import annotations

import datetime as dt

import exchange_calendars as xc
import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.bars import BarBook
from monitor.core.engine import Engine
from monitor.core.model import CANCEL_SCHEMA, MINUTE_SCHEMA, FeedBatch, Tick, ticks_frame
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions

UTC = dt.UTC
WED = dt.date(2024, 11, 27)  # a full session: 14:30-21:00 UTC
SESSIONS = Sessions(xc.get_calendar("XNYS", start="2024-01-01", end="2024-12-31"))


def at(hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    return dt.datetime(2024, 11, 27, hour, minute, tzinfo=UTC) + dt.timedelta(seconds=second)


def trades(hour: int, minute: int, spike: bool = True) -> pl.DataFrame:
    """Three trades of X in a minute; the second (V:2, at 50) a busted print when `spike`."""
    rows = [
        Tick("X", at(hour, minute, 1), 10.0, 100, "V:1"),
        Tick("X", at(hour, minute, 10), 50.0, 100, "V:2"),
        Tick("X", at(hour, minute, 20), 10.2, 200, "V:3"),
    ]
    return ticks_frame(rows if spike else [rows[0], rows[2]])


def cancel(
    trade: str, ts: dt.datetime | None = None, new: tuple[str, float, float] | None = None
) -> pl.DataFrame:
    """A cancel of X's trade `trade`, or with `new` (id, price, size) its correction."""
    new_id, price, size = new if new is not None else (None, None, None)
    row = {"symbol": "X", "ts": ts, "id": trade, "new_id": new_id}
    return pl.DataFrame([{**row, "new_price": price, "new_size": size}], schema=CANCEL_SCHEMA)


def book() -> BarBook:
    return BarBook(SESSIONS, cancel_window_s=900)


def ohlcv(frame: pl.DataFrame) -> list[tuple[float, ...]]:
    return frame.select("open", "high", "low", "close", "volume").rows()


def test_a_cancel_in_an_open_minute_leaves_the_bar_built_without_the_trade() -> None:
    """A spike to 50 then its cancel before the minute closes: the minute bar that closes is
    the one of the other two trades (before, the cancel was ignored: high 50)."""
    cancelled, clean = book(), book()
    cancelled.ingest_ticks(trades(15, 0))
    assert cancelled.take_back(cancel("V:2", at(15, 0, 30))) == []
    clean.ingest_ticks(trades(15, 0, spike=False))
    got = cancelled.advance(at(15, 1, 5)).minute
    assert (
        ohlcv(got) == ohlcv(clean.advance(at(15, 1, 5)).minute) == [(10.0, 10.2, 10.0, 10.2, 300)]
    )
    assert cancelled.counts == {"trade_cancelled": 1}
    assert cancelled.taken_back.get_column("id").to_list() == ["V:2"]


def test_a_cancel_of_a_closed_minute_emits_it_again_with_the_session_bar() -> None:
    """The minute (20:50) and the session bar closed with the spike's high of 50; its cancel
    after the close emits both again without it, as a late tick's correction is."""
    b = book()
    b.ingest_ticks(trades(20, 50))
    first = b.advance(at(21, 0, 5))  # (the session closed at 21:00)
    assert ohlcv(first.minute)[0][1] == 50.0 and ohlcv(first.daily)[0][1] == 50.0
    assert b.take_back(cancel("V:2", at(21, 0, 6))) == []
    again = b.advance(at(21, 0, 7))
    assert ohlcv(again.minute) == [(10.0, 10.2, 10.0, 10.2, 300)]
    assert again.minute.get_column("start").to_list() == [at(20, 50)]
    assert ohlcv(again.daily) == [(10.0, 10.2, 10.0, 10.2, 300)]
    assert b.counts == {"trade_cancelled": 1, "cancel_minute_corrected": 1}


def test_a_correction_replaces_the_trades_price_and_size() -> None:
    """V:2 corrected to 10.1 for 50 shares (id V:9): the bar's high and volume follow; a
    correction of the correction in the same batch applies after it."""
    b = book()
    b.ingest_ticks(trades(15, 0))
    fixes = pl.concat(
        [cancel("V:9", None, ("V:10", 10.1, 40)), cancel("V:2", None, ("V:9", 10.1, 50))]
    )
    assert b.take_back(fixes) == []
    assert ohlcv(b.advance(at(15, 1, 5)).minute) == [(10.0, 10.2, 10.0, 10.2, 340)]
    assert b.counts == {"trade_corrected": 2}


def test_cancels_of_trades_the_book_does_not_hold_are_counted_with_why() -> None:
    """A cancel of a trade never taken is `cancel_unknown_trade`, the same cancel sent twice
    `cancel_repeated`, one of a minute older than the window `cancel_too_old`; none changes a
    bar, none raises."""
    b = book()
    b.ingest_ticks(trades(15, 0))
    b.advance(at(15, 0, 30))
    rejected = b.take_back(pl.concat([cancel("V:99"), cancel("V:2"), cancel("V:2")]))
    assert [(r.reason, r.symbol) for r in rejected] == [
        ("cancel_unknown_trade", "X"),
        ("cancel_repeated", "X"),
    ]
    assert [r.reason for r in b.take_back(cancel("V:99"))] == ["cancel_unknown_trade"]
    b.advance(at(15, 30))  # (the window: 900 s before the latest closed minute)
    rejected = b.take_back(cancel("V:3", at(15, 0, 20)))
    assert [r.reason for r in rejected] == ["cancel_too_old"]
    assert "id=V:3" in rejected[0].raw
    assert b.counts["cancel_unknown_trade"] == 2 and b.counts["trade_cancelled"] == 1


def test_a_minute_whose_only_trade_is_cancelled_has_no_bar() -> None:
    """Open: no bar closes for it. Closed: it is counted (`cancel_bar_removed`) and the
    session bar is built of the other minutes."""
    b = book()
    b.ingest_ticks(ticks_frame([Tick("X", at(15, 0, 1), 50.0, 100, "V:1")]))
    b.ingest_ticks(ticks_frame([Tick("X", at(15, 1, 1), 10.0, 100, "V:5")]))
    b.take_back(cancel("V:1"))
    assert ohlcv(b.advance(at(15, 2, 5)).minute) == [(10.0, 10.0, 10.0, 10.0, 100)]
    b.ingest_ticks(ticks_frame([Tick("X", at(20, 59, 1), 60.0, 100, "V:7")]))
    assert ohlcv(b.advance(at(21, 0, 5)).daily) == [(10.0, 60.0, 10.0, 60.0, 200)]
    b.take_back(cancel("V:7"))
    again = b.advance(at(21, 0, 6))
    assert again.minute.is_empty()
    assert ohlcv(again.daily) == [(10.0, 10.0, 10.0, 10.0, 100)]
    assert b.counts["cancel_bar_removed"] == 2


def test_cancels_are_counted_not_applied_with_no_window() -> None:
    """cancel_window_s 0 (a BarBook's default: replay has no cancels): `cancel_ignored`."""
    b = BarBook(SESSIONS)
    b.ingest_ticks(trades(15, 0))
    assert [r.reason for r in b.take_back(cancel("V:2"))] == ["cancel_ignored"]
    assert ohlcv(b.advance(at(15, 1, 5)).minute)[0][1] == 50.0


def test_a_cancel_of_a_minute_a_providers_bar_set_leaves_that_bar() -> None:
    """The provider's bar stands (it sends its own updated bar): `cancel_provider_bar`."""
    b = book()
    b.ingest_ticks(trades(15, 0))
    bar = pl.DataFrame(
        [
            {
                "symbol": "X",
                "start": at(15, 0),
                "open": 10.0,
                "high": 50.0,
                "low": 10.0,
                "close": 10.2,
                "volume": 400.0,
            }
        ]
    ).cast({"start": pl.Datetime("us", "UTC")})
    b.ingest_minute_bars(bar)
    assert [r.reason for r in b.take_back(cancel("V:2"))] == ["cancel_provider_bar"]


def test_the_ticks_kept_for_cancels_survive_a_saved_state() -> None:
    """A book restored from a state saved after the spike applies its cancel after the
    restart as one that never stopped would."""
    before = book()
    before.ingest_ticks(trades(20, 50))
    before.advance(at(21, 0, 5))
    after = book()
    assert after.restore(before.state(), at(21, 0, 6))
    assert after.take_back(cancel("V:2")) == []
    assert ohlcv(after.advance(at(21, 0, 7)).daily) == [(10.0, 10.2, 10.0, 10.2, 300)]


def test_a_cancelled_print_that_became_the_bad_print_reference_is_no_longer_it() -> None:
    """X's first print (no history, no reference: taken) is a busted 100 where X trades at
    10, and becomes the bad-print reference; Alpaca cancels it. The good prints after are
    taken, as without the busted print (before, the reference stayed at 100: the next four
    were rejected as `bad_print`, and the minute opened at 10.04 on 200 shares)."""
    engine = Engine(RulesFile(), SESSIONS, bar_options={"cancel_window_s": 900}, max_jump=5.0)
    engine.advance(at(15, 0))
    busted = FeedBatch.empty("t")
    busted.ticks = ticks_frame([Tick("X", at(15, 0, 1), 100.0, 100, "V:1")])
    busted.cancels = cancel("V:1")
    good = FeedBatch.empty("t")
    good.ticks = ticks_frame(
        [Tick("X", at(15, 0, 10 + i), 10.0, 100, f"V:{i + 2}") for i in range(6)]
    )
    assert engine.ingest(busted) == [] and engine.ingest(good) == []
    step = engine.advance(at(15, 1, 5))
    assert ohlcv(step.minute_bars) == [(10.0, 10.0, 10.0, 10.0, 600)]


def test_a_closed_minute_whose_only_trade_is_cancelled_leaves_the_minute_history() -> None:
    """X trades at 10 at 15:00; 15:01's only trade is a busted 5, closed and evaluated, then
    cancelled; 15:02 trades at 10.1. The 1m surge rule (5% in a minute) fires nothing, as
    without the busted print: 15:02 follows 15:00 (before, the minute's bar stayed in the
    engine's minute history and 15:02 fired +102% over it)."""
    rules = msgspec.toml.decode(
        b'[[rules]]\nid = "spike"\nkind = "surge"\nsymbols = ["X"]\ntimeframe = "1m"\n'
        b"window = 1\nmin_return = 0.05\n",
        type=RulesFile,
    )
    engine = Engine(rules, SESSIONS, bar_options={"cancel_window_s": 900}, minute_by_minute=True)
    fired = []
    for now, tick, taken_back in [
        (at(15, 0, 30), Tick("X", at(15, 0, 10), 10.0, 100, "V:1"), None),
        (at(15, 1, 30), Tick("X", at(15, 1, 10), 5.0, 100, "V:2"), None),
        (at(15, 2, 30), Tick("X", at(15, 2, 10), 10.1, 100, "V:3"), cancel("V:2")),
        (at(15, 3, 5), None, None),
    ]:
        batch = FeedBatch.empty("t")
        batch.ticks = ticks_frame([tick] if tick else [])
        engine.ingest(batch)
        if taken_back is not None:
            fired.append(engine.advance(now - dt.timedelta(seconds=20)).lines.height)
            batch = FeedBatch.empty("t")
            batch.cancels = taken_back
            engine.ingest(batch)
        fired.append(engine.advance(now).lines.height)
    assert fired == [0, 0, 0, 0, 0]
    assert engine.minutes.select("start", "close").rows() == [(at(15, 0), 10.0), (at(15, 2), 10.1)]
    assert engine.book.counts["cancel_bar_removed"] == 1


def test_a_cancel_writes_again_the_minute_of_its_trade_alone() -> None:
    """The ticks kept for cancels are held minute by minute: a cancel of a 15:00 trade writes
    15:00's ticks again and leaves 15:01's as they are (before, every cancel wrote every tick
    held again: ~0.3 s with 5 million of them, in each step that had a cancel)."""
    b = book()
    b.advance(at(15, 0, 0.5))
    b.ingest_ticks(trades(15, 0))
    b.advance(at(15, 1, 0.5))
    b.ingest_ticks(ticks_frame([Tick("X", at(15, 1, 5), 10.1, 100, "V:4")]))
    later = b._ledger.minutes[at(15, 1)]
    assert b.take_back(cancel("V:2")) == []
    assert b._ledger.minutes[at(15, 1)] is later
    assert b._ledger.rows == 3
    assert ohlcv(b.advance(at(15, 2, 5)).minute) == [
        (10.0, 10.2, 10.0, 10.2, 300),
        (10.1, 10.1, 10.1, 10.1, 100),
    ]


def test_busted_prints_rejected_then_cancelled_confirm_no_new_level() -> None:
    """X trades at 10; two busted prints at 100 are rejected as bad prints (a run of 2, of
    the 3 that confirm a new level), then cancelled (`cancel_rejected_trade`: never taken). A
    third busted print at 100 is rejected too, as it would be without the two (before, the
    cancelled pair still counted: it confirmed the level, and the minute's high was 100)."""
    engine = Engine(
        RulesFile(),
        SESSIONS,
        bar_options={"cancel_window_s": 900},
        max_jump=5.0,
        max_jump_confirm=3,
    )
    engine.advance(at(15, 0))
    reasons = []
    for prints, cancels in [
        ([(1, 10.0, "V:1"), (2, 10.0, "V:2"), (3, 10.0, "V:3")], None),
        ([(4, 100.0, "V:4"), (5, 100.0, "V:5")], pl.concat([cancel("V:4"), cancel("V:5")])),
        ([(6, 100.0, "V:6")], None),
    ]:
        batch = FeedBatch.empty("t")
        batch.ticks = ticks_frame([Tick("X", at(15, 0, s), p, 100, i) for s, p, i in prints])
        if cancels is not None:
            batch.cancels = cancels
        reasons += [r.reason for r in engine.ingest(batch)]
    assert reasons == ["bad_print", "bad_print"] + ["cancel_rejected_trade"] * 2 + ["bad_print"]
    assert ohlcv(engine.advance(at(15, 1, 5)).minute_bars) == [(10.0, 10.0, 10.0, 10.0, 300)]


def test_a_cancel_of_a_trade_waiting_for_the_clock_takes_it_out() -> None:
    """The book's clock is at 15:00 (its last advance) when 15:02's ticks come, more than a
    minute ahead of it: they wait for the next advance (as a restart's first batch, or a
    step after a stall, has them). Their spike's cancel and a correction in the same step
    apply to the waiting trades: the minute that closes is the one the same ticks make
    without the spike and with the corrected trade (before: `cancel_unknown_trade` twice,
    and the bar closed at a high of 50)."""
    cancelled, clean = book(), book()
    for b in (cancelled, clean):
        b.advance(at(15, 0))
    cancelled.ingest_ticks(trades(15, 2))
    fixes = pl.concat([cancel("V:2"), cancel("V:3", None, ("V:9", 10.3, 150))])
    assert cancelled.take_back(fixes) == []
    assert cancelled.take_back(cancel("V:2"))[0].reason == "cancel_repeated"
    fixed = [Tick("X", at(15, 2, 1), 10.0, 100, "V:1"), Tick("X", at(15, 2, 20), 10.3, 150, "V:9")]
    clean.ingest_ticks(ticks_frame(fixed))
    got, want = (b.advance(at(15, 3, 5)) for b in (cancelled, clean))
    assert ohlcv(got.minute) == ohlcv(want.minute) == [(10.0, 10.3, 10.0, 10.3, 250)]
    assert got.taken_ticks.get_column("id").to_list() == ["V:1", "V:9"]
    assert cancelled.counts == {"trade_cancelled": 1, "trade_corrected": 1, "cancel_repeated": 1}
    assert cancelled.taken_back.is_empty()  # (nothing taken to journal a cancel of)


@pytest.mark.parametrize("closed", [False, True], ids=["open-minute", "closed-minute"])
def test_a_correction_of_a_bad_print_places_the_corrected_trade_at_its_time(closed: bool) -> None:
    """X trades at 10 and 10.2; V:4, 15:00:50, prints 103 (a slipped decimal) and is rejected
    as a bad print; Alpaca corrects it to V:5 at 10.3 for 300, its message stamped 15:03:40
    (the message's time, not the trade's). The corrected trade is placed at V:4's time, in
    15:00, before the minute closes or after (then the minute is emitted again, as a late
    tick's correction): the bars are those of the same tape with V:5 in V:4's place. The
    same correction sent again is `cancel_repeated` (before: `cancel_unknown_trade`, and the
    minute closed at 10.2 on 300 shares, V:4's 300 lost)."""

    def engine() -> Engine:
        e = Engine(RulesFile(), SESSIONS, bar_options={"cancel_window_s": 900}, max_jump=5.0)
        e.advance(at(15, 0))
        return e

    def batch(ticks: list[Tick], cancels: pl.DataFrame | None = None) -> FeedBatch:
        b = FeedBatch.empty("t")
        b.ticks = ticks_frame(ticks)
        if cancels is not None:
            b.cancels = cancels
        return b

    tape = [Tick("X", at(15, 0, 1), 10.0, 100, "V:1"), Tick("X", at(15, 0, 20), 10.2, 200, "V:3")]
    fixed, oracle = engine(), engine()
    rejected = fixed.ingest(batch([*tape, Tick("X", at(15, 0, 50), 103.0, 300, "V:4")]))
    assert [r.reason for r in rejected] == ["bad_print"]
    oracle.ingest(batch([*tape, Tick("X", at(15, 0, 50), 10.3, 300, "V:5")]))
    correction = cancel("V:4", at(15, 3, 40), ("V:5", 10.3, 300))
    first = fixed.advance(at(15, 1, 5)) if closed else None
    assert fixed.ingest(batch([], correction)) == []
    assert [r.reason for r in fixed.ingest(batch([], correction))] == ["cancel_repeated"]
    want = [(10.0, 10.3, 10.0, 10.3, 600.0)]
    got = fixed.advance(at(15, 1, 10)).minute_bars
    assert ohlcv(got) == ohlcv(oracle.advance(at(15, 1, 10)).minute_bars) == want
    assert got.get_column("start").to_list() == [at(15, 0)]
    if first is not None:  # (closed without it, then emitted again with it)
        assert ohlcv(first.minute_bars) == [(10.0, 10.2, 10.0, 10.2, 300.0)]
        assert fixed.book.counts["late_tick_corrected"] == 1
    assert fixed.book.counts["rejected_trade_corrected"] == 1
    assert fixed.take_accepted().ticks.get_column("id").to_list() == ["V:1", "V:3", "V:5"]


@pytest.mark.parametrize("print_first", [True, False], ids=["print-first", "bar-first"])
def test_a_cancelled_closing_print_leaves_the_providers_last_minute_bar(print_first: bool) -> None:
    """The provider's bar of 20:59 (the session's last minute, which lacks the closing print)
    and a busted closing print at 50 (21:00:00.5), merged into it whichever came first; the
    print is cancelled after the close. The minute and the session close as the provider's
    bar alone (before: `cancel_provider_bar`, and both stayed at 50: the provider's updated
    bar, sent again, had the print merged back in)."""
    b = book()
    b.advance(at(20, 58, 30))
    provider = pl.DataFrame(
        [("X", at(20, 59), 10.0, 10.1, 9.9, 10.0, 1000.0)], schema=MINUTE_SCHEMA, orient="row"
    )
    closing = ticks_frame([Tick("X", at(21, 0, 0.5), 50.0, 500, "V:9")])
    for is_print in (True, False) if print_first else (False, True):
        b.advance(at(21, 0, 1))
        rejected = b.ingest_ticks(closing) if is_print else b.ingest_minute_bars(provider)
        assert rejected == []
    first = b.advance(at(21, 0, 5))
    assert ohlcv(first.daily) == [(10.0, 50.0, 9.9, 50.0, 1500.0)]
    assert b.take_back(cancel("V:9", at(21, 0, 6))) == []
    again = b.advance(at(21, 0, 7))
    assert ohlcv(again.minute) == ohlcv(again.daily) == [(10.0, 10.1, 9.9, 10.0, 1000.0)]
    assert b.ingest_minute_bars(provider) == []  # (the provider's bar sent again)
    assert ohlcv(b.advance(at(21, 0, 8)).minute) == [(10.0, 10.1, 9.9, 10.0, 1000.0)]


_STEP = st.tuples(
    st.sampled_from([1, 20, 70, 130]),  # seconds the clock moves (over 60: ticks wait)
    st.lists(
        st.tuples(
            st.sampled_from(["X", "Y"]),
            st.integers(-90_000, 55_000),  # ms from the step's clock
            st.integers(1, 500),  # price, cents
            st.integers(1, 900),  # size
        ),
        max_size=6,
    ),
    st.lists(st.tuples(st.integers(0, 1000), st.booleans(), st.integers(1, 500)), max_size=3),
)


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=6))
def test_cancels_leave_the_bars_of_the_tape_without_the_trades_they_take_back(
    steps: list[tuple[int, list[tuple[str, int, int, int]], list[tuple[int, bool, int]]]],
) -> None:
    """Whatever the steps (trades of open and closed minutes, some waiting for a clock that
    jumped past a minute), cancels and corrections (of corrections too) of trades taken,
    each after its trade, every one applied: the minute bars are those of the same trades
    with the cancelled ones left out and the corrected ones in their place, in one batch."""
    live, clock = book(), at(15, 0)
    live.advance(clock)
    standing: dict[str, Tick] = {}  # id -> the trade as it stands (in arrival order)
    serial = 0
    for moved, prints, fixes in steps:
        clock += dt.timedelta(seconds=moved)
        batch = []
        for symbol, ms, cents, size in prints:
            serial += 1
            ts = clock + dt.timedelta(milliseconds=ms, microseconds=serial)  # (distinct)
            batch.append(Tick(symbol, ts, cents / 100, size, f"V:{serial}"))
        assert live.ingest_ticks(ticks_frame(batch)) == []
        standing.update((t.id or "", t) for t in batch)
        rows = []
        for pick, correct, cents in fixes:
            if not standing:
                break
            trade = standing.pop(list(standing)[pick % len(standing)])
            new = None
            if correct:
                serial += 1
                new = (f"V:{serial}", cents / 100, trade.size + 1)
                standing[new[0]] = Tick(trade.symbol, trade.ts, new[1], new[2], new[0])
            rows.append(cancel(trade.id or "", None, new).with_columns(symbol=pl.lit(trade.symbol)))
        if rows:
            assert live.take_back(pl.concat(rows)) == []
        live.advance(clock)
    oracle = book()
    oracle.ingest_ticks(ticks_frame(sorted(standing.values(), key=lambda t: t.ts)))
    for b in (live, oracle):
        b.advance(clock + dt.timedelta(minutes=5))
    got, want = (b.closed_minutes().sort("symbol", "start") for b in (live, oracle))
    columns = ["symbol", "start", "open", "high", "low", "close", "volume"]
    assert got.select(columns).rows() == want.select(columns).rows()
