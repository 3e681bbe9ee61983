"""A provider's session bar outranks the bar the engine builds of the same session from trades:
whether it comes before or after the close, and when late ticks (or a restart) make the
builder emit the session again."""

from __future__ import annotations

import datetime as dt

from monitor.core.engine import Engine
from monitor.core.model import Bar, FeedBatch, Tick, bars_frame, ticks_frame
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions

DAY = dt.date(2024, 7, 2)  # a full session: 13:30-20:00 UTC
OFFICIAL = (9.9, 10.6, 9.8, 10.4, 5000.0)


def at(hour: int, minute: int, second: float = 0) -> dt.datetime:
    return dt.datetime(2024, 7, 2, hour, minute, tzinfo=dt.UTC) + dt.timedelta(seconds=second)


def trades(*rows: tuple[dt.datetime, float, str]) -> FeedBatch:
    batch = FeedBatch.empty("t")
    batch.ticks = ticks_frame([Tick("X", ts, price, 100.0, trade) for ts, price, trade in rows])
    return batch


def official() -> FeedBatch:
    batch = FeedBatch.empty("t")
    batch.daily_bars = bars_frame([Bar("X", "1d", *OFFICIAL, session=DAY)], "1d")
    return batch


def stored(engine: Engine) -> tuple[float, float, float, float, float]:
    row = engine.daily.row(0, named=True)
    return tuple(row[k] for k in ("open", "high", "low", "close", "volume"))  # type: ignore[return-value]


def engine_with_trades(sessions: Sessions) -> Engine:
    engine = Engine(RulesFile(), sessions)
    engine.warm(at(13, 0))
    engine.ingest(trades((at(14, 0, 5), 10.0, "a"), (at(19, 59, 30), 10.5, "b")))
    return engine


def test_a_provider_bar_sent_before_the_close_is_not_replaced_by_the_built_one(
    sessions: Sessions,
) -> None:
    """The provider's bar of the session under way comes in; at the close the builder's bar of
    the trades it saw (two) is left out, counted. Before, the built bar replaced it."""
    engine = engine_with_trades(sessions)
    engine.ingest(official())
    engine.advance(at(20, 5))
    assert stored(engine) == OFFICIAL
    assert engine.book_counts()["provider_session_bar_kept"] == 1


def test_a_late_tick_after_the_provider_bar_does_not_bring_back_the_built_bar(
    sessions: Sessions,
) -> None:
    """The built bar is stored at the close, the provider's replaces it, then a late tick of
    15:59 corrects the builder's minute and it emits the session again: the provider's stays,
    and stays after a restart from the saved state."""
    engine = engine_with_trades(sessions)
    engine.advance(at(20, 0, 3))
    assert stored(engine) == (10.0, 10.5, 10.0, 10.5, 200.0)
    engine.ingest(official())
    engine.advance(at(20, 15))
    assert stored(engine) == OFFICIAL
    engine.ingest(trades((at(19, 59, 40), 10.7, "late")))
    engine.advance(at(20, 20))
    assert stored(engine) == OFFICIAL
    saved = engine.bar_state()
    assert saved is not None and saved.official.rows() == [("X", DAY)]

    restarted = Engine(RulesFile(), sessions)
    restarted.ingest_daily(engine.daily)
    restarted.warm(at(20, 25))
    assert restarted.restore_bars(saved, at(20, 25))
    restarted.ingest(trades((at(19, 59, 50), 10.8, "later")))
    restarted.advance(at(20, 30))
    assert stored(restarted) == OFFICIAL


def test_a_provider_bar_after_the_built_one_replaces_it_and_ticks_alone_still_build(
    sessions: Sessions,
) -> None:
    """Without a provider's bar, the session bar is the builder's; the keys of sessions the
    builder no longer keeps are forgotten."""
    engine = engine_with_trades(sessions)
    engine.advance(at(20, 0, 3))
    assert stored(engine) == (10.0, 10.5, 10.0, 10.5, 200.0)
    assert "provider_session_bar_kept" not in engine.book_counts()
    engine.ingest(official())
    engine.advance(dt.datetime(2024, 7, 10, 21, tzinfo=dt.UTC))
    assert engine._official.keys.is_empty()


def test_a_provider_bar_taken_up_from_the_journal_still_outranks_the_built_one(
    sessions: Sessions,
) -> None:
    """A crash after the provider's bar was stored and journaled, before the bar state was
    saved again: at the restart the history holds the bar (the journal's copy is no new bar),
    and a late tick then must not bring back the bar built from trades. Before, the journal's
    copy was filtered out before it was noted, and the built bar came back."""
    engine = engine_with_trades(sessions)
    engine.advance(at(20, 0, 3))
    saved = engine.bar_state()  # (the last save: before the provider's bar)
    assert saved is not None
    engine.ingest(official())
    engine.advance(at(20, 15))
    assert stored(engine) == OFFICIAL

    restarted = Engine(RulesFile(), sessions)
    restarted.ingest_daily(engine.daily)
    restarted.warm(at(20, 25))
    assert restarted.restore_bars(saved, at(20, 25))
    restarted.ingest(official(), taken=True)  # (the journal's record of it)
    restarted.ingest(trades((at(19, 59, 50), 10.8, "later")))
    restarted.advance(at(20, 30))
    assert stored(restarted) == OFFICIAL
