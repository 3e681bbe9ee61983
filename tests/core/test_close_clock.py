"""BarBook and Engine with a close clock behind `now`: minutes and sessions close by it, not by
the wall clock; ticks newer than it are taken into open bars; it never goes back."""

from __future__ import annotations

import datetime as dt

import exchange_calendars as xc
import polars as pl

from monitor.core.bars import BarBook
from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, FeedBatch, Tick, empty, ticks_frame
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions

UTC = dt.UTC
WED = dt.date(2024, 11, 27)  # a full session: 14:30-21:00 UTC
SESSIONS = Sessions(xc.get_calendar("XNYS", start="2024-01-01", end="2024-12-31"))


def at(hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    """A UTC instant on WED."""
    return dt.datetime(2024, 11, 27, hour, minute, tzinfo=UTC) + dt.timedelta(seconds=second)


def ticks(*rows: tuple[dt.datetime, float]) -> pl.DataFrame:
    """ACME trades at those times and prices, 100 shares each."""
    return ticks_frame([Tick("ACME", ts, price, 100.0, f"{ts}") for ts, price in rows])


def starts(frame: pl.DataFrame) -> list[dt.datetime]:
    return frame.get_column("start").to_list()


def test_minutes_after_the_close_clock_stay_open_and_close_whole_when_it_gets_there() -> None:
    """With the wall clock at 15:00 and the close clock at 14:32:30, minute 14:31 closes,
    14:32 stays open; ticks of 14:32 and 14:40 that come next are taken (neither late nor from
    the future), and a later advance closes 14:32 with all of its ticks."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks((at(14, 31, 5), 10.0), (at(14, 32, 1), 11.0)))
    out = book.advance(at(15, 0), close_at=at(14, 32, 30))
    assert starts(out.minute) == [at(14, 31)]
    rejected = book.ingest_ticks(ticks((at(14, 32, 40), 12.0), (at(14, 40, 3), 13.0)))
    assert (rejected, book.counts) == ([], {})
    out = book.advance(at(15, 0, 1), close_at=at(14, 40, 10))
    assert out.minute.select("start", "open", "close", "volume").rows() == [
        (at(14, 32), 11.0, 12.0, 200.0)
    ]
    out = book.advance(at(15, 0, 2))  # (no hold: the wall clock's)
    assert (starts(out.minute), book.counts) == ([at(14, 40)], {})


def test_the_close_clock_never_goes_back() -> None:
    """A close_at earlier than the last closes nothing again and opens nothing: a tick of a
    minute the clock had closed is a late tick, corrected, as without a close clock."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks((at(14, 31, 5), 10.0), (at(14, 33, 5), 10.0)))
    book.advance(at(15, 0), close_at=at(14, 34, 30))
    assert book.closes_at == at(14, 34, 30)
    out = book.advance(at(15, 0, 1), close_at=at(14, 32))
    assert (out.minute.height, book.closes_at) == (0, at(14, 34, 30))
    book.ingest_ticks(ticks((at(14, 33, 30), 9.0)))
    assert book.counts == {"late_tick_corrected": 1}


def test_a_close_at_ahead_of_now_is_now() -> None:
    """The close clock is never ahead of the wall clock: close_at past `now` closes by `now`."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks((at(14, 31, 5), 10.0), (at(14, 33, 5), 10.0)))
    out = book.advance(at(14, 33, 30), close_at=at(16, 0))
    assert (starts(out.minute), book.closes_at) == ([at(14, 31)], at(14, 33, 30))


def test_a_session_bar_closes_by_the_close_clock() -> None:
    """At 21:05 wall time with the close clock at 20:59:30, the session's last minute and its
    session bar wait; the closing print that comes next is in both when the clock gets past
    the close."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks((at(20, 58, 10), 10.0), (at(20, 59, 20), 11.0)))
    out = book.advance(at(21, 5), close_at=at(20, 59, 30))
    assert (starts(out.minute), out.daily.height) == ([at(20, 58)], 0)
    book.ingest_ticks(ticks((at(20, 59, 50), 12.0), (at(21, 0, 0.2), 12.5)))
    out = book.advance(at(21, 5, 1))
    assert out.minute.select("start", "close").rows() == [(at(20, 59), 12.5)]
    assert out.daily.select("session", "open", "close", "volume").rows() == [
        (WED, 10.0, 12.5, 400.0)
    ]
    assert book.counts == {}


def test_a_saved_close_clock_comes_back_at_a_restart() -> None:
    """A book saved while its close clock was held behind its clock restores both: a tick of
    a minute after the close clock, delivered after the restart, is taken, not late."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks((at(14, 31, 5), 10.0), (at(14, 33, 5), 10.0)))
    book.advance(at(15, 0), close_at=at(14, 33, 30))
    state = book.state()
    assert (state.now, state.closes_at) == (at(15, 0), at(14, 33, 30))
    again = BarBook(SESSIONS)
    assert again.restore(state, at(15, 1))
    again.ingest_ticks(ticks((at(14, 33, 40), 11.0)))
    out = again.advance(at(15, 1))
    assert out.minute.select("start", "close", "volume").rows() == [(at(14, 33), 11.0, 200.0)]
    assert again.counts == {}


def test_the_engine_closes_minutes_and_evaluates_by_the_close_clock() -> None:
    """Engine.advance(now, close_at=...) passes the close clock to its bar builder; `evaluates`
    says a minute closes only when the close clock closes one; `closes_at` is that clock."""
    engine = Engine(RulesFile(), SESSIONS)
    batch = FeedBatch(
        "t", ticks((at(14, 31, 5), 10.0)), empty(MINUTE_SCHEMA), empty(DAILY_SCHEMA), []
    )
    engine.ingest(batch)
    step = engine.advance(at(15, 0), close_at=at(14, 31, 30))
    assert (step.minute_bars.height, engine.closes_at) == (0, at(14, 31, 30))
    assert not engine.book.closes_by(at(15, 0, 1), at(14, 32, 1))
    assert engine.book.closes_by(at(15, 0, 1), at(14, 32, 2))
    step = engine.advance(at(15, 0, 1))
    assert (starts(step.minute_bars), engine.closes_at) == ([at(14, 31)], at(15, 0, 1))


def test_a_hold_of_data_seconds_behind_is_said_at_debug_one_minutes_behind_at_info() -> None:
    """A provider's minute bar nine seconds late holds and releases at debug level (it would
    every minute); a broker's backlog twenty minutes behind is said at info."""
    from monitor.close_clock import CloseClock

    said: list[tuple[str, str]] = []

    class Log:
        def info(self, event: str, **_: object) -> None:
            said.append(("info", event))

        def debug(self, event: str, **_: object) -> None:
            said.append(("debug", event))

    clock = CloseClock(log=Log())
    now = dt.datetime(2024, 7, 16, 15, 0, tzinfo=dt.UTC)
    delay = dt.timedelta(seconds=2)
    clock.delivered("bars", 0.0, now - dt.timedelta(seconds=9))  # a provider's late minute bar
    assert clock.close_at(now, 0.5, delay) is not None
    assert clock.close_at(now, 3.0, delay) is None  # quiet: released
    clock.delivered("mqtt", 10.0, now - dt.timedelta(minutes=20))  # a broker's backlog
    assert clock.close_at(now, 10.1, delay) is not None
    clock.delivered("mqtt", 10.2, now)
    assert clock.close_at(now, 10.3, delay) is None  # caught up
    assert said == [
        ("debug", "close_clock_held"),
        ("debug", "close_clock_released"),
        ("info", "close_clock_held"),
        ("info", "close_clock_released"),
    ]


def test_a_restarts_backlog_in_one_batch_is_taken_whole_not_late() -> None:
    """A book saved at 15:00:05 and restored at 15:31, whose first batch is the broker's backlog
    of 15:00-15:30 in one go: its ticks past the saved clock wait for the first advance (more
    than a minute ahead of it), which holds the close clock at the backlog's newest tick. They
    are taken as the minutes they are in, not as late ticks (they were judged by the close
    clock that advance moved to: all but the last minute's came late, and were thrown away
    with late_ticks="reject")."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks((at(14, 59, 5), 10.0)))
    book.advance(at(15, 0, 5))
    for late_ticks in ("correct", "reject"):
        again = BarBook(SESSIONS, late_ticks=late_ticks)
        assert again.restore(book.state(), at(15, 31))
        backlog = [(at(15, minute, 7), 10.0 + minute / 100) for minute in (0, 10, 20, 30)]
        assert again.ingest_ticks(ticks(*backlog)) == []
        out = again.advance(at(15, 31), close_at=at(15, 30, 7))
        assert (out.rejected, again.counts) == ([], {})
        assert starts(out.minute) == [at(15, 0), at(15, 10), at(15, 20)]
        out = again.advance(at(15, 32))
        assert (starts(out.minute), again.counts) == ([at(15, 30)], {})
