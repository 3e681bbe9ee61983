"""A trade cancel survives a kill -9: the journal holds it after the ticks it takes back, and
the saved sessions hold the ticks kept for cancels, so a start builds the same bars."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.model import (
    CANCEL_SCHEMA,
    EXCLUDED_SCHEMA,
    MINUTE_SCHEMA,
    FeedBatch,
    Tick,
    ticks_frame,
)
from monitor.store import Store
from tests.test_restart_bars import at, started, stepped, trades

SPIKE = (
    Tick("AAA", at(14, 0, 10), 10.0, 100.0, "V:1"),
    Tick("AAA", at(14, 0, 20), 50.0, 100.0, "V:2"),
)


WINDOW = {"cancel_window_s": 900.0}  # (the daemon's [engine] default)


def cancel(trade: str) -> FeedBatch:
    batch = FeedBatch.empty("t")
    row = {"symbol": "AAA", "ts": at(14, 0, 40), "id": trade}
    batch.cancels = pl.DataFrame([row], schema=CANCEL_SCHEMA)
    return batch


@pytest.mark.parametrize("saved", [False, True], ids=["journal", "saved-then-journal"])
def test_a_cancel_before_a_crash_is_applied_again_at_the_start(tmp_path: Path, saved: bool) -> None:
    """A spike to 50 and its cancel, both journaled (or the spike saved with the sessions under
    way and the cancel journaled after the save): a start from what a kill -9 leaves closes
    the minute at a high of 10, as the daemon that never stopped would (before, the cancel
    was dropped as ignored, and the high was 50)."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0), bar_options=WINDOW)
    stepped(engine, intraday, at(14, 0, 30), trades(*SPIKE))
    if saved:
        intraday.save_later()
        intraday.wait()
    stepped(engine, intraday, at(14, 0, 45), cancel("V:2"))
    engine, intraday = started(store, at(14, 0, 50), bar_options=WINDOW)
    step = engine.advance(at(14, 1, 5))
    assert step.minute_bars.select("high", "volume").rows() == [(10.0, 100.0)]


def as_saved_before_cancels(store: Store) -> None:
    """Rewrite the store's saved sessions as a version before cancels (6100aa6) wrote them:
    no `trades` or `provider_minutes` parts, their columns, nor `trades_from`/`trades_kept`."""
    path = store.intraday_path
    meta = json.loads(pl.read_parquet_metadata(path)["market-monitor.intraday"])
    del meta["trades_from"], meta["trades_kept"]
    ledger = ("trades", "provider_minutes")
    for part in ledger:
        del meta["columns"][part]
    kept = {"part", *(c for columns in meta["columns"].values() for c in columns)}
    frame = pl.read_parquet(path).filter(~pl.col("part").is_in(ledger))
    frame = frame.select([c for c in frame.columns if c in kept])
    frame.write_parquet(path, metadata={"market-monitor.intraday": json.dumps(meta)})


def test_an_upgrade_from_a_state_saved_before_cancels_applies_the_later_ones(
    tmp_path: Path,
) -> None:
    """The sessions under way saved by a version before cancels (the spike at 50 in an open
    minute), taken up by this one with the ticks kept for cancels: the minute is restored as
    saved; a cancel of the spike, taken before the start, is `cancel_too_old`, not applied;
    a spike of the next minute, taken after the start, is cancelled: that minute's high is 12."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0))  # (no cancel window: a version before them)
    stepped(engine, intraday, at(14, 0, 30), trades(*SPIKE))
    intraday.save_now()
    as_saved_before_cancels(store)
    engine, intraday = started(store, at(14, 0, 50), bar_options=WINDOW)
    assert [r.reason for r in engine.ingest(cancel("V:2"))] == ["cancel_too_old"]
    later = (
        Tick("AAA", at(14, 1, 10), 12.0, 100.0, "V:3"),
        Tick("AAA", at(14, 1, 20), 60.0, 1.0, "V:4"),
    )
    stepped(engine, intraday, at(14, 1, 30), trades(*later))
    late_cancel = cancel("V:4")
    assert engine.ingest(late_cancel) == []
    engine.advance(at(14, 2, 5))
    got = engine.minutes.select("start", "high", "volume").rows()
    assert got == [(at(14, 0), 50.0, 200.0), (at(14, 1), 12.0, 100.0)]


def test_cancels_of_trades_waiting_for_the_clock_give_the_same_bars_after_a_kill(
    tmp_path: Path,
) -> None:
    """A step's ticks stamped more than a minute past the book's clock (its last advance,
    14:00:30) wait for the step's advance; the same step cancels one (a spike to 50) and
    corrects another. The minute closes at the bars of the same ticks without the spike and
    with the corrected trade, in the daemon that goes on and in one started from what a kill
    -9 then leaves (before, both cancels were `cancel_unknown_trade` and the spike stayed:
    a high of 50 either way)."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0), bar_options=WINDOW)
    stepped(engine, intraday, at(14, 0, 30), trades(Tick("AAA", at(14, 0, 10), 10.0, 100.0, "V:0")))
    intraday.save_now()
    batch = trades(
        Tick("AAA", at(14, 3, 10), 10.1, 100.0, "V:1"),
        Tick("AAA", at(14, 3, 20), 50.0, 100.0, "V:2"),
        Tick("AAA", at(14, 3, 25), 10.2, 100.0, "V:3"),
    )
    row = {"symbol": "AAA", "ts": at(14, 3, 30)}
    batch.cancels = pl.DataFrame(
        [{**row, "id": "V:2"}, {**row, "id": "V:3", "new_id": "V:4", "new_price": 10.3,
                                "new_size": 300.0}],
        schema=CANCEL_SCHEMA,
    )  # fmt: skip
    assert engine.ingest(batch) == []
    step = engine.advance(at(14, 3, 35))
    intraday.append(engine.take_accepted(), step.lines.get_column("id").to_list())
    oracle, _ = started(Store(tmp_path / "oracle"), at(14, 0), bar_options=WINDOW)
    oracle.ingest(trades(Tick("AAA", at(14, 0, 10), 10.0, 100.0, "V:0")))
    oracle.ingest(
        trades(
            Tick("AAA", at(14, 3, 10), 10.1, 100.0, "V:1"),
            Tick("AAA", at(14, 3, 25), 10.3, 300.0, "V:4"),
        )
    )
    restarted, _ = started(store, at(14, 3, 40), bar_options=WINDOW)
    got = [e.advance(at(14, 4, 5)).minute_bars for e in (engine, restarted, oracle)]
    want = [(at(14, 3), 10.1, 10.3, 10.1, 10.3, 400.0)]
    assert [bars.filter(pl.col("start") == at(14, 3)).drop("symbol").rows() for bars in got] == [
        want
    ] * 3


def test_a_correction_of_a_trade_kept_out_gives_the_same_bars_after_a_kill(
    tmp_path: Path,
) -> None:
    """AAA's 14:00:20 trade came kept out of bars by its conditions (the feed's `excluded`);
    after 14:00 closed, its correction makes it a regular trade at 10.4 for 300: the
    corrected trade is placed at 14:00:20 and journaled as a tick taken, so the daemon that
    goes on, one started from what a kill -9 then leaves and the same tape with the
    corrected trade from the start close 14:00 alike (before: `cancel_unknown_trade`, the
    minute at 10 on 100 shares)."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0), bar_options=WINDOW)
    first = trades(Tick("AAA", at(14, 0, 10), 10.0, 100.0, "V:1"))
    first.excluded = pl.DataFrame(
        [{"symbol": "AAA", "ts": at(14, 0, 20), "id": "V:2"}], schema=EXCLUDED_SCHEMA
    )
    stepped(engine, intraday, at(14, 0, 30), first)
    intraday.save_now()
    stepped(engine, intraday, at(14, 1, 5), trades())
    fix = FeedBatch.empty("t")
    row = {"symbol": "AAA", "ts": at(14, 1, 8), "id": "V:2", "new_id": "V:3"}
    fix.cancels = pl.DataFrame(
        [{**row, "new_price": 10.4, "new_size": 300.0}], schema=CANCEL_SCHEMA
    )
    stepped(engine, intraday, at(14, 1, 10), fix)
    oracle, _ = started(Store(tmp_path / "oracle"), at(14, 0), bar_options=WINDOW)
    oracle.ingest(
        trades(
            Tick("AAA", at(14, 0, 10), 10.0, 100.0, "V:1"),
            Tick("AAA", at(14, 0, 20), 10.4, 300.0, "V:3"),
        )
    )
    oracle.advance(at(14, 1, 10))
    restarted, _ = started(store, at(14, 1, 20), bar_options=WINDOW)
    restarted.advance(at(14, 1, 30))
    want = [(at(14, 0), 10.0, 10.4, 10.0, 10.4, 400.0)]
    assert [e.minutes.drop("symbol").rows() for e in (engine, restarted, oracle)] == [want] * 3


@pytest.mark.parametrize("saved", [False, True], ids=["journal", "saved"])
def test_a_closing_print_cancelled_after_a_kill_leaves_the_providers_bar(
    tmp_path: Path, saved: bool
) -> None:
    """The provider's bar of 19:59 (the session's last minute) and a busted closing print at
    50 merged into it, journaled (or saved with the sessions under way), then a kill -9; the
    print's cancel after the start takes it out: the minute and the session bar are the
    provider's bar alone, as in a daemon that never stopped (before: `cancel_provider_bar`,
    both closed at 50)."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(19, 58, 30), bar_options=WINDOW)
    batch = trades(Tick("AAA", at(20, 0, 0.5), 50.0, 500.0, "V:9"))
    batch.minute_bars = pl.DataFrame(
        [("AAA", at(19, 59), 10.0, 10.1, 9.9, 10.0, 1000.0)], schema=MINUTE_SCHEMA, orient="row"
    )
    stepped(engine, intraday, at(20, 0, 1), batch)
    if saved:
        intraday.save_now()
    closed = stepped(engine, intraday, at(20, 0, 5), trades())
    assert closed.daily_bars.select("high", "close").rows() == [(50.0, 50.0)]
    engine, intraday = started(store, at(20, 0, 10), bar_options=WINDOW)
    assert engine.ingest(cancel("V:9")) == []
    step = engine.advance(at(20, 0, 12))
    provider = [(10.0, 10.1, 9.9, 10.0, 1000.0)]
    columns = ["open", "high", "low", "close", "volume"]
    assert step.minute_bars.select(columns).rows() == provider
    assert step.daily_bars.select(columns).rows() == provider


_STEP = st.tuples(
    st.sampled_from([1, 20, 70, 130]),  # seconds the clock moves (over 60: ticks wait)
    st.lists(
        st.tuples(st.integers(-90_000, 55_000), st.integers(1, 500), st.integers(1, 900)),
        max_size=5,
    ),  # (ms from the step's clock, price in cents, size)
    st.lists(st.tuples(st.integers(0, 1000), st.booleans(), st.integers(1, 500)), max_size=2),
    st.sampled_from(["go on", "save", "kill", "save and kill"]),  # (after the step)
)


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=5))
def test_kills_between_steps_with_cancels_leave_the_bars_of_one_run(
    steps: list[tuple[int, list[tuple[int, int, int]], list[tuple[int, bool, int]], str]],
) -> None:
    """Whatever the steps of trades (some waiting for a clock that jumped past a minute) and
    of cancels and corrections of trades taken, and wherever the sessions are saved and the
    daemon killed (-9) and started again, the minute bars are those of a daemon that never
    stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        clock = at(14, 0)
        engine, intraday = started(store, clock, bar_options=WINDOW)
        one_run, _ = started(Store(Path(tmp) / "one"), clock, bar_options=WINDOW)
        standing: list[str] = []
        serial = 0
        for moved, prints, fixes, then in steps:
            clock += dt.timedelta(seconds=moved)
            batch = FeedBatch.empty("t")
            ticks = []
            for ms, cents, size in prints:
                serial += 1
                ts = clock + dt.timedelta(milliseconds=ms, microseconds=serial)
                ticks.append(Tick("AAA", ts, cents / 100, size, f"V:{serial}"))
                standing.append(f"V:{serial}")
            batch.ticks = ticks_frame(ticks)
            rows = []
            for pick, correct, cents in fixes:
                if standing:
                    trade = standing.pop(pick % len(standing))
                    row: dict[str, object] = {"symbol": "AAA", "ts": None, "id": trade}
                    if correct:
                        serial += 1
                        standing.append(f"V:{serial}")
                        row |= {"new_id": f"V:{serial}", "new_price": cents / 100}
                        row |= {"new_size": 7.0}
                    rows.append(row)
            batch.cancels = pl.DataFrame(rows, schema=CANCEL_SCHEMA)
            assert one_run.ingest(batch) == []
            one_run.advance(clock)
            assert engine.ingest(batch) == []
            step = engine.advance(clock)
            intraday.append(engine.take_accepted(), step.lines.get_column("id").to_list())
            if "save" in then:
                intraday.save_now()
            if "kill" in then:
                engine, intraday = started(store, clock, bar_options=WINDOW)
        end = clock + dt.timedelta(minutes=5)
        for e in (engine, one_run):
            e.advance(end)
        assert engine.minutes.sort("start").rows() == one_run.minutes.sort("start").rows()
