"""BarBook.state / restore: a session's bars built across restarts equal one uninterrupted run's."""

from __future__ import annotations

import datetime as dt
import random

import exchange_calendars as xc
import polars as pl

from monitor.core.bars import BarBook
from monitor.core.model import DAILY_SCHEMA, Tick, empty, ticks_frame
from monitor.core.sessions import Sessions

UTC = dt.UTC
WED = dt.date(2024, 11, 27)  # a full session: 14:30-21:00 UTC
SESSIONS = Sessions(xc.get_calendar("XNYS", start="2024-01-01", end="2024-12-31"))


def at(hour: int, minute: int, second: float = 0.0, day: dt.date = WED) -> dt.datetime:
    """A UTC instant on `day`."""
    base = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
    return base + dt.timedelta(seconds=second)


def session_ticks() -> list[Tick]:
    """Trades of three symbols over the first half hour of WED, in time order, each with an id."""
    rng = random.Random(11)
    ticks = [
        Tick(sym, at(14, 30, rng.uniform(0, 1800)), round(rng.uniform(10, 11), 2),
             float(rng.randrange(1, 500)), f"{sym}-{i}")
        for sym in ("AAA", "BBB", "CCC") for i in range(400)
    ]  # fmt: skip
    return sorted(ticks, key=lambda t: t.ts)


def batches() -> list[tuple[pl.DataFrame, dt.datetime]]:
    """The ticks in three batches, each with the time the book advances to after it; each batch
    after the first starts with the last 30 trades of the one before, delivered again."""
    ticks = session_ticks()
    cuts = [at(14, 40, 20), at(14, 50, 20), at(15, 0, 30)]
    out: list[tuple[pl.DataFrame, dt.datetime]] = []
    previous: list[Tick] = []
    for i, cut in enumerate(cuts):
        start = cuts[i - 1] if i else at(14, 0)
        part = [t for t in ticks if start <= t.ts < cut]
        out.append((ticks_frame(previous[-30:] + part), cut + dt.timedelta(seconds=10)))
        previous = part
    return out


def run(restart: bool) -> tuple[BarBook, pl.DataFrame, int]:
    """Feed the batches into a book, advancing after each, then past the close twice; with
    `restart`, a fresh book restored from the last one's state after every advance. Returns
    the last book, every session bar emitted, and the duplicates rejected."""
    book = BarBook(SESSIONS)
    daily = [empty(DAILY_SCHEMA)]
    duplicates = 0

    def step(now: dt.datetime) -> None:
        nonlocal book
        daily.append(book.advance(now).daily)
        if restart:
            state = book.state()
            book = BarBook(SESSIONS)
            assert book.restore(state, now + dt.timedelta(seconds=30))

    for ticks, now in batches():
        rejected = book.ingest_ticks(ticks)
        duplicates += sum(r.reason == "duplicate" for r in rejected)
        assert {r.reason for r in rejected} <= {"duplicate"}
        step(now)
    step(at(21, 10))  # after the close: the session bar
    step(at(21, 20))  # and never again
    return book, pl.concat(daily), duplicates


def test_a_session_built_across_restarts_equals_one_uninterrupted_run() -> None:
    """Restarted after every step (the last one past the close), a book restored from the
    state of the one before holds the same minute bars, emits the same session bars once,
    and rejects the same trades delivered again as duplicates as one that never stopped."""
    once, once_daily, once_duplicates = run(restart=False)
    again, again_daily, again_duplicates = run(restart=True)
    assert once_duplicates == again_duplicates == 60
    assert again.closed_minutes().equals(once.closed_minutes())
    assert once.closed_minutes().height == 90
    assert again_daily.equals(once_daily)
    assert once_daily.height == 3
    volume = sum(t.size for t in session_ticks())
    assert once_daily.get_column("volume").sum() == volume


def test_open_bars_and_duplicate_keys_come_back() -> None:
    """A state taken with a minute still open restores that open bar (its later trades merge
    into it) and the duplicate keys (a trade delivered again is rejected)."""
    book = BarBook(SESSIONS)
    first = [
        Tick("AAA", at(14, 31, 5), 10.0, 100.0, "a1"),
        Tick("AAA", at(14, 32, 0.5), 11.0, 5.0, "a2"),
    ]
    book.ingest_ticks(ticks_frame(first))
    book.advance(at(14, 32, 1))  # 14:31 closes at 14:32:02: both minutes are open
    state = book.state()
    assert (state.closed.height, state.open.height, state.seen.height) == (0, 2, 2)
    restored = BarBook(SESSIONS)
    assert restored.restore(state, at(14, 32, 20))
    again = [Tick("AAA", at(14, 32, 30), 12.0, 7.0, "a3"), first[1]]
    rejected = restored.ingest_ticks(ticks_frame(again))
    assert [(r.reason, r.symbol) for r in rejected] == [("duplicate", "AAA")]
    bars = restored.advance(at(14, 34)).minute
    assert bars.select("start", "open", "high", "low", "close", "volume").rows() == [
        (at(14, 31), 10.0, 10.0, 10.0, 10.0, 100.0),
        (at(14, 32), 11.0, 12.0, 11.0, 12.0, 12.0),
    ]


def test_a_stale_state_is_not_restored() -> None:
    """A state whose sessions the book would no longer keep (WED, two sessions after the last
    closed one), or taken more than a minute after the clock's now, restores nothing: False,
    and the book stays empty."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks_frame([Tick("AAA", at(14, 31), 10.0, 100.0, "a1")]))
    book.advance(at(14, 35))
    state = book.state()
    later = BarBook(SESSIONS)
    tue = dt.date(2024, 12, 3)  # last closed: Mon 2 Dec, kept from Fri 29 Nov
    assert later.restore(state, at(15, 0, day=tue)) is False
    empty_state = later.state()
    assert (empty_state.now, empty_state.keep_from, empty_state.done) == (None, None, [])
    heights = (empty_state.closed.height, empty_state.open.height, empty_state.seen.height)
    assert heights == (0, 0, 0)
    assert later.closed_minutes().height == 0
    mon = dt.date(2024, 12, 2)  # last closed: Fri 29 Nov, kept from WED: still restored
    assert BarBook(SESSIONS).restore(state, at(15, 0, day=mon)) is True
    # taken at 14:35: a clock more than a minute behind it (a replay started over) is not
    assert BarBook(SESSIONS).restore(state, at(14, 33, 59)) is False
    assert BarBook(SESSIONS).restore(state, at(14, 34)) is True
