"""BarBook: streaming minute and session bars from tick batches and provider bars."""

from __future__ import annotations

import datetime as dt
import random

import exchange_calendars as xc
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.bars import BarBook, ClosedBars
from monitor.core.model import (
    DAILY_SCHEMA,
    MINUTE_SCHEMA,
    TICK_SCHEMA,
    Bar,
    Rejection,
    Tick,
    bars_frame,
    ticks_frame,
)
from monitor.core.sessions import NEW_YORK, Sessions

UTC = dt.UTC
WED = dt.date(2024, 11, 27)  # a full session: 14:30-21:00 UTC
FRI = dt.date(2024, 11, 29)  # the early close after Thanksgiving: 14:30-18:00 UTC
SESSIONS = Sessions(xc.get_calendar("XNYS", start="2024-01-01", end="2024-12-31"))


def at(hour: int, minute: int, second: float = 0.0, day: dt.date = WED) -> dt.datetime:
    """A UTC instant on `day`."""
    base = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
    return base + dt.timedelta(seconds=second)


def tick(
    symbol: str, ts: dt.datetime, price: float, size: float = 100.0, id: str | None = None
) -> Tick:
    return Tick(symbol, ts, price, size, id)


def minute(
    symbol: str, start: dt.datetime, o: float, h: float, lo: float, c: float, v: float
) -> Bar:
    return Bar(symbol, "1m", o, h, lo, c, v, start=start)


def daily(symbol: str, session: dt.date, o: float, h: float, lo: float, c: float, v: float) -> Bar:
    return Bar(symbol, "1d", o, h, lo, c, v, session=session)


def minutes(*bars: Bar) -> pl.DataFrame:
    return bars_frame(bars, "1m")


def dailies(*bars: Bar) -> pl.DataFrame:
    return bars_frame(bars, "1d")


def assert_closed(out: ClosedBars, minute: pl.DataFrame, daily: pl.DataFrame) -> None:
    assert out.minute.to_dicts() == minute.to_dicts()
    assert out.minute.schema == MINUTE_SCHEMA
    assert out.daily.to_dicts() == daily.to_dicts()
    assert out.daily.schema == DAILY_SCHEMA


NO_MINUTES = minutes()
NO_DAILIES = dailies()


# -- oracle -------------------------------------------------------------------------------------


def random_ticks(rng: random.Random) -> pl.DataFrame:
    """Ticks of 12 symbols over the end of one session (its closing prints, in the close's first
    second, included) and the start of the next, with a distinct timestamp per symbol so open
    and close are unambiguous."""
    windows = [(at(20, 50, day=dt.date(2024, 11, 26)), 600), (at(14, 30), 900)]
    rows: list[Tick] = []
    for symbol in [f"S{i:02d}" for i in range(12)]:
        for start, span_s in windows:
            offsets = rng.sample(range(span_s * 1_000_000), rng.randint(0, 150))
            if span_s == 600:  # (prints stamped 16:00:00.000 to 16:00:00.999)
                offsets += rng.sample(range(600_000_000, 601_000_000), rng.randint(0, 2))
            for n, us in enumerate(offsets):
                ts = start + dt.timedelta(microseconds=us)
                price = round(rng.uniform(1, 50), 2)
                rows.append(tick(symbol, ts, price, float(rng.randint(1, 500)), f"{ts}-{n}"))
    return ticks_frame(rows)


def one_shot(ticks: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Minute bars by group_by_dynamic and session bars by one aggregate over them; a tick in
    the first second of a session's close counts in the minute before (the closing print)."""
    price = pl.col("price").sort_by("ts")
    start = pl.col("ts").dt.truncate("1m")
    closing = start.is_in(SESSIONS.frame.get_column("close_ts").implode()) & (
        pl.col("ts") < start + pl.duration(seconds=1)
    )
    minute_of = pl.when(closing).then(start - pl.duration(microseconds=1)).otherwise("ts")
    bars = (
        ticks.with_columns(minute_of.alias("at"))
        .sort("symbol", "at")
        .group_by_dynamic("at", every="1m", group_by="symbol")
        .agg(
            open=price.first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=price.last(),
            volume=pl.col("size").sum(),
        )
        .rename({"at": "start"})
        .select(list(MINUTE_SCHEMA))
        .sort("symbol", "start")
    )
    session = pl.col("start").dt.convert_time_zone(NEW_YORK).dt.date().alias("session")
    days = (
        bars.sort("start")
        .group_by("symbol", session)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select(list(DAILY_SCHEMA))
        .sort("symbol", "session")
    )
    return bars, days


def stream(book: BarBook, ticks: pl.DataFrame, rng: random.Random) -> tuple[pl.DataFrame, ...]:
    """Feed ticks in random batches, each tick arriving up to 8 s after its ts, advancing the
    clock to each arrival; return the last emitted version of every minute and session bar."""
    lag_us = pl.Series("lag", [rng.randint(0, 8_000_000) for _ in range(ticks.height)])
    arrival = pl.col("ts") + pl.duration(microseconds=pl.col("lag"))
    arrivals = ticks.with_columns(lag_us).with_columns(arrival=arrival).drop("lag").sort("arrival")
    cuts = sorted(rng.sample(range(1, arrivals.height), 150))
    emitted: list[ClosedBars] = []
    for lo, hi in zip([0, *cuts], [*cuts, arrivals.height], strict=True):
        batch = arrivals.slice(lo, hi - lo)
        assert book.ingest_ticks(batch.drop("arrival")) == []
        emitted.append(book.advance(batch["arrival"].max()))  # type: ignore[arg-type]
    emitted.append(book.advance(at(23, 0)))
    last_minute = pl.concat([e.minute for e in emitted]).unique(
        ["symbol", "start"], keep="last", maintain_order=True
    )
    last_daily = pl.concat([e.daily for e in emitted]).unique(
        ["symbol", "session"], keep="last", maintain_order=True
    )
    return last_minute.sort("symbol", "start"), last_daily.sort("symbol", "session")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_bars_equal_one_shot_group_by_dynamic(seed: int) -> None:
    """Ticks fed in random, locally shuffled batches give the one-shot minute and session bars."""
    rng = random.Random(seed)
    ticks = random_ticks(rng)
    book = BarBook(SESSIONS)
    got_minutes, got_days = stream(book, ticks, rng)
    want_minutes, want_days = one_shot(ticks)
    assert got_minutes.to_dicts() == want_minutes.to_dicts()
    assert got_days.to_dicts() == want_days.to_dicts()
    assert book.counts["late_tick_corrected"] > 0  # the shuffle did exercise corrections


# -- invariants -----------------------------------------------------------------------------------

tick_rows = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "CCC"]),
        st.integers(0, 10 * 60 * 1_000_000),  # microseconds after 14:30 UTC
        st.floats(0.01, 1000, allow_nan=False),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=40, deadline=None)
@given(rows=tick_rows, batches=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_bars_are_consistent_and_volumes_add_up(
    rows: list[tuple[str, int, float, int]], batches: int, seed: int
) -> None:
    """Whatever the ticks and batching, low <= open, close <= high and volumes add up."""
    rng = random.Random(seed)
    ticks = [
        tick(sym, at(14, 30) + dt.timedelta(microseconds=us), price, float(size), str(n))
        for n, (sym, us, price, size) in enumerate(rows)
    ]
    rng.shuffle(ticks)
    book = BarBook(SESSIONS)
    out: list[ClosedBars] = []
    step = max(1, len(ticks) // batches)
    for i in range(0, len(ticks), step):
        chunk = ticks[i : i + step]
        assert book.ingest_ticks(ticks_frame(chunk)) == []
        out.append(book.advance(max(t.ts for t in chunk)))
    out.append(book.advance(at(22, 0)))
    bars = pl.concat([o.minute for o in out]).unique(["symbol", "start"], keep="last")
    days = pl.concat([o.daily for o in out]).unique(["symbol", "session"], keep="last")
    for frame in (bars, days):
        ordered = (pl.col("low") <= pl.min_horizontal("open", "close")) & (
            pl.max_horizontal("open", "close") <= pl.col("high")
        )
        assert frame.select(ordered.all()).item()
    total = float(sum(size for *_, size in rows))
    assert bars["volume"].sum() == total
    assert days["volume"].sum() == total
    assert sorted(days["symbol"].to_list()) == sorted({sym for sym, *_ in rows})


# -- sessions and the clock ------------------------------------------------------------------------


def test_early_close_rejects_later_ticks_and_closes_the_session_at_18_utc() -> None:
    """On 2024-11-29 a 13:30 New York tick is outside the session and the bar closes at 13:00."""
    book = BarBook(SESSIONS, close_delay_s=0)
    late = tick("AAA", at(18, 30, day=FRI), 11.0)
    batch = [tick("AAA", at(14, 30, 5, day=FRI), 10.0), tick("AAA", at(17, 59, 30, day=FRI), 12.0)]
    rejected = book.ingest_ticks(ticks_frame([*batch, late]))
    assert rejected == [
        Rejection("outside_session", "AAA", "ts=2024-11-29T18:30:00Z price=11.0 size=100.0 id=null")
    ]
    before = book.advance(at(17, 59, 59.999, day=FRI))
    assert before.daily.to_dicts() == []
    assert_closed(
        book.advance(at(18, 0, day=FRI)),
        minutes(minute("AAA", at(17, 59, day=FRI), 12.0, 12.0, 12.0, 12.0, 100.0)),
        dailies(daily("AAA", FRI, 10.0, 12.0, 10.0, 12.0, 200.0)),
    )
    assert_closed(book.advance(at(19, 0, day=FRI)), NO_MINUTES, NO_DAILIES)
    assert book.counts == {"outside_session": 1}


def test_the_closing_print_belongs_to_the_sessions_last_minute() -> None:
    """A tick stamped in the close's first second (16:00:00.000 to 16:00:00.999 New York, 13:00
    on an early close: the closing auction) is in the last minute bar and is the session bar's
    close; a second later is outside the session, or post-market with extended hours. It used to
    be outside the session (post-market with extended hours), never in the session bar."""
    ticks = [
        tick("AAA", at(20, 59, 30), 10.0),
        tick("AAA", at(21, 0), 10.5, 500),
        tick("BBB", at(20, 59, 10), 7.0),
        tick("BBB", at(21, 0, 0.999), 7.5),
        tick("AAA", at(21, 0, 1), 11.0),
    ]
    aaa = minute("AAA", at(20, 59), 10.0, 10.5, 10.0, 10.5, 600.0)
    bbb = minute("BBB", at(20, 59), 7.0, 7.5, 7.0, 7.5, 200.0)
    sessions = dailies(
        daily("AAA", WED, 10.0, 10.5, 10.0, 10.5, 600.0),
        daily("BBB", WED, 7.0, 7.5, 7.0, 7.5, 200.0),
    )
    book = BarBook(SESSIONS)
    assert book.ingest_ticks(ticks_frame(ticks)) == [
        Rejection("outside_session", "AAA", "ts=2024-11-27T21:00:01Z price=11.0 size=100.0 id=null")
    ]
    assert_closed(book.advance(at(21, 0, 2)), minutes(aaa, bbb), sessions)
    early = [tick("CCC", at(17, 59, 5, day=FRI), 3.0), tick("CCC", at(18, 0, day=FRI), 3.3)]
    assert book.ingest_ticks(ticks_frame(early)) == []
    assert_closed(
        book.advance(at(18, 0, 2, day=FRI)),
        minutes(minute("CCC", at(17, 59, day=FRI), 3.0, 3.3, 3.0, 3.3, 200.0)),
        dailies(daily("CCC", FRI, 3.0, 3.3, 3.0, 3.3, 200.0)),
    )
    extended = BarBook(SESSIONS, extended_hours=True)
    assert extended.ingest_ticks(ticks_frame(ticks)) == []
    assert_closed(
        extended.advance(at(21, 1, 2)),
        minutes(aaa, minute("AAA", at(21, 0), 11.0, 11.0, 11.0, 11.0, 100.0), bbb),
        sessions,
    )


def test_minute_closes_after_its_end_plus_the_delay() -> None:
    """A minute bar is emitted once, at start + 60 s + close_delay_s, with OHLCV of its ticks."""
    book = BarBook(SESSIONS, close_delay_s=2.0)
    batch = [
        tick("AAA", at(14, 31, 40), 10.5, 5),
        tick("AAA", at(14, 31, 10), 10.0, 1),  # earliest: the open, though it arrives second
        tick("AAA", at(14, 31, 20), 11.0, 2),
    ]
    book.ingest_ticks(ticks_frame(batch))
    book.ingest_ticks(ticks_frame([tick("AAA", at(14, 31, 59), 9.0, 3)]))
    assert book.advance(at(14, 32, 1.9)).minute.to_dicts() == []
    assert_closed(
        book.advance(at(14, 32, 2)),
        minutes(minute("AAA", at(14, 31), 10.0, 11.0, 9.0, 9.0, 11.0)),
        NO_DAILIES,
    )
    assert book.advance(at(14, 40)).minute.to_dicts() == []


def test_an_empty_batch_of_ticks_changes_nothing() -> None:
    """A batch with no ticks, before or after the book has a clock, is taken as nothing (it
    raised a TypeError once the book had advanced)."""
    book = BarBook(SESSIONS, close_delay_s=2.0)
    assert book.ingest_ticks(pl.DataFrame(schema=TICK_SCHEMA)) == []
    book.ingest_ticks(ticks_frame([tick("AAA", at(14, 31, 10), 10.0, 1)]))
    book.advance(at(14, 31, 30))
    assert book.ingest_ticks(pl.DataFrame(schema=TICK_SCHEMA)) == []
    assert book.accepted.is_empty()
    assert_closed(
        book.advance(at(14, 32, 2)),
        minutes(minute("AAA", at(14, 31), 10.0, 10.0, 10.0, 10.0, 1.0)),
        NO_DAILIES,
    )


def test_extended_hours_make_minute_bars_but_not_session_bars() -> None:
    """With extended_hours, pre-market ticks form minute bars that stay out of the session bar."""
    pre = tick("AAA", at(13, 0, 5), 9.0)  # 08:00 New York
    regular = tick("AAA", at(14, 30, 5), 10.0)
    strict = BarBook(SESSIONS)
    assert [r.reason for r in strict.ingest_ticks(ticks_frame([pre, regular]))] == [
        "outside_session"
    ]
    book = BarBook(SESSIONS, extended_hours=True)
    assert book.ingest_ticks(ticks_frame([pre, regular, tick("AAA", at(1, 0, 5), 8.0)])) == [
        Rejection("outside_session", "AAA", "ts=2024-11-27T01:00:05Z price=8.0 size=100.0 id=null")
    ]
    out = book.advance(at(21, 0, 2))
    assert_closed(
        out,
        minutes(
            minute("AAA", at(13, 0), 9.0, 9.0, 9.0, 9.0, 100.0),
            minute("AAA", at(14, 30), 10.0, 10.0, 10.0, 10.0, 100.0),
        ),
        dailies(daily("AAA", WED, 10.0, 10.0, 10.0, 10.0, 100.0)),
    )


def test_symbol_without_ticks_in_a_session_gets_no_session_bar() -> None:
    """Session bars are never forward-filled: only symbols that traded in the session get one."""
    book = BarBook(SESSIONS)
    tue = dt.date(2024, 11, 26)
    book.ingest_ticks(
        ticks_frame([tick("AAA", at(15, 0, day=tue), 5.0), tick("BBB", at(15, 0, day=tue), 7.0)])
    )
    assert book.advance(at(21, 0, 2, day=tue)).daily["symbol"].to_list() == ["AAA", "BBB"]
    book.ingest_ticks(ticks_frame([tick("BBB", at(15, 0), 8.0)]))
    out = book.advance(at(21, 0, 2))
    assert out.daily.to_dicts() == dailies(daily("BBB", WED, 8.0, 8.0, 8.0, 8.0, 100.0)).to_dicts()


def test_daily_bar_is_emitted_once_with_its_last_minute() -> None:
    """The session bar closes with its last minute at close + delay, and is not emitted again."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks_frame([tick("AAA", at(20, 59, 59), 5.0)]))
    assert book.advance(at(21, 0, 1)).daily.to_dicts() == []
    assert_closed(
        book.advance(at(21, 0, 2)),
        minutes(minute("AAA", at(20, 59), 5.0, 5.0, 5.0, 5.0, 100.0)),
        dailies(daily("AAA", WED, 5.0, 5.0, 5.0, 5.0, 100.0)),
    )
    assert_closed(book.advance(at(23, 0)), NO_MINUTES, NO_DAILIES)


# -- late ticks ------------------------------------------------------------------------------------


def test_late_tick_corrects_the_minute_and_the_emitted_session_bar() -> None:
    """With late_ticks="correct", a tick for a closed minute re-emits it and its session bar."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks_frame([tick("AAA", at(20, 0, 10), 10.0), tick("AAA", at(20, 1), 9.0)]))
    book.advance(at(21, 0, 2))
    assert book.ingest_ticks(ticks_frame([tick("AAA", at(20, 0, 50), 12.0, 50)])) == []
    assert book.counts == {"late_tick_corrected": 1}
    assert_closed(
        book.advance(at(21, 0, 3)),
        minutes(minute("AAA", at(20, 0), 10.0, 12.0, 10.0, 12.0, 150.0)),
        dailies(daily("AAA", WED, 10.0, 12.0, 9.0, 9.0, 250.0)),
    )
    assert_closed(book.advance(at(21, 0, 4)), NO_MINUTES, NO_DAILIES)


def test_late_tick_earlier_than_the_open_becomes_the_open() -> None:
    """A late tick older than the bar's first tick replaces its open, not its close."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks_frame([tick("AAA", at(15, 0, 30), 10.0)]))
    book.advance(at(15, 5))
    book.ingest_ticks(ticks_frame([tick("AAA", at(15, 0, 1), 8.0)]))
    assert_closed(
        book.advance(at(15, 5)),
        minutes(minute("AAA", at(15, 0), 8.0, 10.0, 8.0, 10.0, 200.0)),
        NO_DAILIES,
    )


def test_late_tick_rejected_when_asked() -> None:
    """With late_ticks="reject", a tick for a closed minute is rejected and nothing re-emitted."""
    book = BarBook(SESSIONS, late_ticks="reject")
    book.ingest_ticks(ticks_frame([tick("AAA", at(15, 0, 10), 10.0)]))
    book.advance(at(15, 1, 2))
    rejected = book.ingest_ticks(
        ticks_frame([tick("AAA", at(15, 0, 50), 12.0, id="t9"), tick("AAA", at(15, 1, 5), 11.0)])
    )
    assert rejected == [
        Rejection("late_tick", "AAA", "ts=2024-11-27T15:00:50Z price=12.0 size=100.0 id=t9")
    ]
    assert book.counts == {"late_tick": 1}
    assert_closed(book.advance(at(15, 1, 30)), NO_MINUTES, NO_DAILIES)


def test_ticks_for_dropped_sessions_are_rejected_late() -> None:
    """Only the current and previous sessions are kept; a tick two sessions back is rejected."""
    book = BarBook(SESSIONS)
    mon, tue = dt.date(2024, 11, 25), dt.date(2024, 11, 26)
    book.ingest_ticks(ticks_frame([tick("AAA", at(15, 0, day=mon), 5.0)]))
    book.advance(at(21, 0, 2))  # Wednesday's close: Tuesday is the previous session
    rejected = book.ingest_ticks(
        ticks_frame([tick("AAA", at(15, 0, day=mon), 6.0), tick("AAA", at(15, 0, day=tue), 7.0)])
    )
    assert [(r.reason, r.symbol) for r in rejected] == [("late_tick", "AAA")]
    assert_closed(
        book.advance(at(21, 0, 3)),
        minutes(minute("AAA", at(15, 0, day=tue), 7.0, 7.0, 7.0, 7.0, 100.0)),
        dailies(daily("AAA", tue, 7.0, 7.0, 7.0, 7.0, 100.0)),
    )


# -- bad input -------------------------------------------------------------------------------------


def test_duplicates_within_and_across_batches_are_dropped() -> None:
    """The same (symbol, id), or without id the same (symbol, ts, price, size), counts once."""
    book = BarBook(SESSIONS)
    a = tick("AAA", at(15, 0, 1), 10.0, 10, "t1")
    b = tick("AAA", at(15, 0, 2), 11.0, 20)
    c = tick("BBB", at(15, 0, 2), 11.0, 20)  # same fields, other symbol: not a duplicate
    first = book.ingest_ticks(ticks_frame([a, b, a, c]))
    again = book.ingest_ticks(ticks_frame([b, tick("AAA", at(15, 0, 3), 12.0, 5, "t1")]))
    assert [(r.reason, r.symbol) for r in first + again] == [("duplicate", "AAA")] * 3
    assert book.counts == {"duplicate": 3}
    assert_closed(
        book.advance(at(15, 1, 2)),
        minutes(
            minute("AAA", at(15, 0), 10.0, 11.0, 10.0, 11.0, 30.0),
            minute("BBB", at(15, 0), 11.0, 11.0, 11.0, 11.0, 20.0),
        ),
        NO_DAILIES,
    )
    late_copy = book.ingest_ticks(ticks_frame([a]))
    assert [r.reason for r in late_copy] == ["duplicate"]


BAD_TICKS = [
    ("AAA", at(15, 0), float("nan"), 1.0, "bad_price"),
    ("AAA", at(15, 0), float("inf"), 1.0, "bad_price"),
    ("AAA", at(15, 0), 0.0, 1.0, "bad_price"),
    ("AAA", at(15, 0), -1.0, 1.0, "bad_price"),
    ("AAA", at(15, 0), None, 1.0, "missing_field"),
    ("AAA", at(15, 0), 1.0, -1.0, "bad_size"),
    ("AAA", at(15, 0), 1.0, float("nan"), "bad_size"),
    ("AAA", at(15, 0), 1e12, 1.0, "bad_price"),  # (a billion dollars and up: no market's)
    ("AAA", at(15, 0), 1.0, 1e308, "bad_size"),  # (two made an infinite volume)
    (None, at(15, 0), 1.0, 1.0, "missing_field"),
    ("AAA", None, 1.0, 1.0, "missing_field"),
]


@pytest.mark.parametrize(("symbol", "ts", "price", "size", "reason"), BAD_TICKS)
def test_bad_ticks_are_rejected_not_raised(
    symbol: str | None, ts: dt.datetime | None, price: float | None, size: float, reason: str
) -> None:
    """A tick with a bad or missing value is a Rejection; the good ticks of its batch count."""
    batch = pl.DataFrame(
        {
            "symbol": [symbol, "AAA"],
            "ts": [ts, at(15, 0, 30)],
            "price": [price, 5.0],
            "size": [size, 3.0],
            "id": ["x", "y"],
        },
        schema=TICK_SCHEMA,
    )
    book = BarBook(SESSIONS)
    assert [(r.reason, r.symbol) for r in book.ingest_ticks(batch)] == [(reason, symbol)]
    assert book.counts == {reason: 1}
    assert_closed(
        book.advance(at(15, 1, 2)),
        minutes(minute("AAA", at(15, 0), 5.0, 5.0, 5.0, 5.0, 3.0)),
        NO_DAILIES,
    )


# -- provider bars ---------------------------------------------------------------------------------


def test_provider_bar_is_emitted_and_a_resent_bar_replaces_it() -> None:
    """Provider bars close at once; a re-sent bar for the same minute replaces the first."""
    book = BarBook(SESSIONS)
    first = minute("AAA", at(15, 0), 10.0, 11.0, 9.0, 10.5, 1000.0)
    assert book.ingest_minute_bars(minutes(first)) == []
    assert_closed(book.advance(at(15, 0, 30)), minutes(first), NO_DAILIES)
    resent = minute("AAA", at(15, 0), 10.0, 11.5, 9.0, 11.0, 1200.0)
    book.ingest_minute_bars(minutes(resent))  # (its minute is not over at 15:00:30: it waits)
    assert_closed(book.advance(at(15, 1, 30)), minutes(resent), NO_DAILIES)
    assert book.counts == {"bar_replaced": 1}


def test_resent_provider_bar_corrects_an_emitted_session_bar() -> None:
    """A re-sent bar after the session closed re-emits the session bar built from it."""
    book = BarBook(SESSIONS)
    bars = [
        minute("AAA", at(20, 58), 10.0, 11.0, 9.0, 10.5, 1000.0),
        minute("AAA", at(20, 59), 10.5, 12.0, 10.0, 11.0, 500.0),
    ]
    book.ingest_minute_bars(minutes(*bars))
    first = book.advance(at(21, 0, 2))
    assert (
        first.daily.to_dicts()
        == dailies(daily("AAA", WED, 10.0, 12.0, 9.0, 11.0, 1500.0)).to_dicts()
    )
    resent = minute("AAA", at(20, 59), 10.5, 12.0, 8.0, 8.5, 700.0)
    book.ingest_minute_bars(minutes(resent))
    assert_closed(
        book.advance(at(21, 5)),
        minutes(resent),
        dailies(daily("AAA", WED, 10.0, 12.0, 8.0, 8.5, 1700.0)),
    )


def test_a_provider_bar_from_the_future_is_rejected() -> None:
    """A provider bar whose minute has not begun by the clock (a feed an hour off) is rejected
    as future_bar by the next advance and closes nothing; one ahead of the clock of the last
    advance but not of the next (the clock jumped) waits as a bar of the minute under way
    does: each is taken by the first advance after its minute's end. The bar from the future
    used to be closed at once, and so did the bar of a minute under way."""
    book = BarBook(SESSIONS)
    book.advance(at(15, 1))
    under_way = minute("AAA", at(15, 1), 10.0, 10.0, 10.0, 10.0, 5.0)
    jumped = minute("BBB", at(15, 2), 8.0, 8.0, 8.0, 8.0, 5.0)
    ahead = minute("CCC", at(16, 2), 9.0, 9.0, 9.0, 9.0, 5.0)
    assert book.ingest_minute_bars(minutes(under_way, jumped, ahead)) == []
    assert not book.closes_by(at(15, 1, 59))
    assert book.closes_by(at(15, 2))
    raw = "start=2024-11-27T16:02:00Z open=9.0 high=9.0 low=9.0 close=9.0 volume=5.0"
    out = book.advance(at(15, 2, 30))
    assert_closed(out, minutes(under_way), NO_DAILIES)
    assert out.rejected == [Rejection("future_bar", "CCC", raw)]
    assert book.counts == {"future_bar": 1}
    assert_closed(book.advance(at(15, 2, 59)), NO_MINUTES, NO_DAILIES)
    assert_closed(book.advance(at(15, 3)), minutes(jumped), NO_DAILIES)
    assert_closed(book.advance(at(16, 4)), NO_MINUTES, NO_DAILIES)


def test_a_tick_from_the_future_waits_for_the_clock_and_is_rejected() -> None:
    """A tick stamped 16:00 UTC arriving when the clock says 15:01 (a feed an hour off) opens
    no bar: it waits for the next advance, which rejects it as future_tick; a copy of it in
    the meantime is a duplicate. One ahead of the last advance's clock but not of the next
    (the clock jumped: a simulated one) is taken then, and closes with its minute; one within
    FUTURE_SKEW of the clock is taken at once. The bar of 16:00 used to be built at 09:01
    New York from that print, and the session bar with it."""
    book = BarBook(SESSIONS)
    book.advance(at(15, 1))
    batch = [
        tick("AAA", at(15, 1, 30), 10.0),  # the minute under way
        tick("BBB", at(15, 2, 0), 20.0),  # FUTURE_SKEW after the clock: taken
        tick("CCC", at(15, 4, 0), 30.0, id="c1"),  # ahead, but the clock comes by the next step
        tick("DDD", at(16, 0, 0), 40.0, id="d1"),  # an hour ahead
    ]
    assert book.ingest_ticks(ticks_frame(batch)) == []
    assert book.accepted.get_column("symbol").to_list() == ["AAA", "BBB"]
    copy = book.ingest_ticks(ticks_frame([tick("DDD", at(16, 0, 0), 40.0, id="d1")]))
    assert [r.reason for r in copy] == ["duplicate"]
    out = book.advance(at(15, 4, 30))
    raw = "ts=2024-11-27T16:00:00Z price=40.0 size=100.0 id=d1"
    assert out.rejected == [Rejection("future_tick", "DDD", raw)]
    assert out.taken_ticks.get_column("symbol").to_list() == ["CCC"]
    assert_closed(
        out,
        minutes(
            minute("AAA", at(15, 1), 10.0, 10.0, 10.0, 10.0, 100.0),
            minute("BBB", at(15, 2), 20.0, 20.0, 20.0, 20.0, 100.0),
        ),
        NO_DAILIES,
    )
    assert_closed(
        book.advance(at(15, 5, 2)),
        minutes(minute("CCC", at(15, 4), 30.0, 30.0, 30.0, 30.0, 100.0)),
        NO_DAILIES,
    )
    assert book.counts == {"duplicate": 1, "future_tick": 1}
    assert_closed(book.advance(at(16, 5)), NO_MINUTES, NO_DAILIES)  # (no bar of 16:00)


def test_ticks_taken_before_a_restart_do_not_wait_for_the_clock() -> None:
    """A journal's ticks, taken up after a restart on the clock of the last save (minutes
    before them), are taken at once, as they were then."""
    book = BarBook(SESSIONS)
    book.advance(at(15, 1))
    assert book.ingest_ticks(ticks_frame([tick("AAA", at(15, 9), 10.0)]), taken=True) == []
    assert book.accepted.height == 1
    assert_closed(
        book.advance(at(15, 10, 2)),
        minutes(minute("AAA", at(15, 9), 10.0, 10.0, 10.0, 10.0, 100.0)),
        NO_DAILIES,
    )


def test_bad_provider_bars_are_rejected() -> None:
    """Bars with low > high, an open outside the range, or a non-positive price are bad_bar."""
    book = BarBook(SESSIONS)
    start = at(15, 0)
    bad = minutes(
        minute("AAA", start, 10.0, 9.0, 11.0, 10.0, 1.0),
        minute("BBB", start, 12.0, 11.0, 9.0, 10.0, 1.0),
        minute("CCC", start, 0.0, 11.0, 0.0, 10.0, 1.0),
        minute("DDD", start + dt.timedelta(seconds=5), 10.0, 10.0, 10.0, 10.0, 1.0),
        minute("EEE", at(22, 0), 10.0, 10.0, 10.0, 10.0, 1.0),
    )
    rejected = book.ingest_minute_bars(bad)
    assert [(r.reason, r.symbol) for r in rejected] == [
        ("bad_bar", "AAA"),
        ("bad_bar", "BBB"),
        ("bad_bar", "CCC"),
        ("bad_bar", "DDD"),
        ("outside_session", "EEE"),
    ]
    assert rejected[0].raw == (
        "start=2024-11-27T15:00:00Z open=10.0 high=9.0 low=11.0 close=10.0 volume=1.0"
    )
    assert_closed(book.advance(at(16, 0)), NO_MINUTES, NO_DAILIES)


def test_duplicate_memory_is_capped_oldest_buckets_first() -> None:
    """Past `dedup_max_keys` the oldest buckets are forgotten early (counted): memory is bounded,
    the newest ticks are still recognised, an early-forgotten one counts again."""
    book = BarBook(SESSIONS, dedup_max_keys=4)
    old = [tick("AAA", at(15, 0, 1), 10.0, 1, f"o{i}") for i in range(3)]
    new = [tick("AAA", at(15, 0, 41), 10.0, 1, f"n{i}") for i in range(3)]
    assert book.ingest_ticks(ticks_frame(old)) == []
    assert book.ingest_ticks(ticks_frame(new)) == []  # 6 keys > 4: the 15:00:00 bucket goes
    assert book.counts == {"dedup_keys_dropped_early": 3}
    again = book.ingest_ticks(ticks_frame([new[0], old[0]]))
    assert [r.reason for r in again] == ["duplicate"]  # the new one; the old one is taken again


def test_a_late_trade_sent_twice_is_counted_once() -> None:
    """A trade that comes late (10 minutes: within the dedup window of its time; 2 hours:
    older than the window, filed under its arrival) and then comes again is a duplicate, not
    a second trade in the corrected bar. Before, keys went 5 minutes after the trade's time."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks_frame([tick("AAA", at(14, 40, 5), 10.0, 100, "first")]))
    book.advance(at(17, 20))
    for when, trade in ((at(17, 10, 5), "ten-min"), (at(15, 10, 5), "two-hours")):
        late = ticks_frame([tick("AAA", when, 11.0, 7, trade)])
        assert book.ingest_ticks(late) == []
        book.advance(at(17, 20, 30))
        again = book.ingest_ticks(late)
        assert [r.reason for r in again] == ["duplicate"], trade
        book.advance(at(17, 21))
    assert book.counts["late_tick_corrected"] == 2
    # An hour after its arrival, the two-hour-late trade's key is gone (memory stays bounded).
    book.advance(at(18, 30))
    assert book.ingest_ticks(ticks_frame([tick("AAA", at(15, 10, 5), 11.0, 7, "two-hours")])) == []


def test_closes_by_says_when_an_open_minute_will_close() -> None:
    """closes_by(now) is true once a minute with ticks is past its end plus the close delay."""
    book = BarBook(SESSIONS, close_delay_s=2.0)
    assert not book.closes_by(at(15, 5))  # nothing open
    book.ingest_ticks(ticks_frame([tick("AAA", at(15, 0, 30), 10.0, 1, "a")]))
    assert not book.closes_by(at(15, 1, 1))
    assert book.closes_by(at(15, 1, 2))
    book.advance(at(15, 1, 2))
    assert not book.closes_by(at(15, 9))  # closed and emitted: nothing open any more


def test_a_late_trade_sent_again_after_a_restart_is_still_a_duplicate() -> None:
    """A trade two hours late (its key filed under its arrival) that comes again after the
    daemon restarted from its saved state is a duplicate, as without the restart."""
    book = BarBook(SESSIONS)
    book.ingest_ticks(ticks_frame([tick("AAA", at(14, 40, 5), 10.0, 100, "first")]))
    book.advance(at(17, 20))
    late = ticks_frame([tick("AAA", at(15, 10, 5), 11.0, 7, "two-hours")])
    assert book.ingest_ticks(late) == []
    book.advance(at(17, 20, 30))
    restarted = BarBook(SESSIONS)
    assert restarted.restore(book.state(), at(17, 21))
    assert [r.reason for r in restarted.ingest_ticks(late)] == ["duplicate"]


def test_old_ticks_in_the_first_batch_sent_again_are_duplicates() -> None:
    """Trades two hours old in the first batch of a book started at 17:00 (a broker's backlog)
    are taken; sent again after the first advance, every one is a duplicate and no minute bar
    changes. Their keys were filed under their own old buckets, which that advance forgot, so
    the copies were taken again as late corrections (twice the volume)."""
    book = BarBook(SESSIONS)
    book.start_clock(at(17, 0))
    old = ticks_frame([tick("AAA", at(15, k, 5), 10.0 + k, 100, f"t{k}") for k in range(5)])
    assert book.ingest_ticks(old) == []
    first = book.advance(at(17, 0, 5))
    assert first.minute.get_column("volume").to_list() == [100.0] * 5
    again = book.ingest_ticks(old)
    assert [r.reason for r in again] == ["duplicate"] * 5
    assert book.advance(at(17, 0, 10)).minute.is_empty()


def test_ticks_at_one_instant_open_on_the_first_and_close_on_the_last_to_arrive() -> None:
    """Trades stamped alike (a sweep filling at several prices in one millisecond): the first
    to arrive opens the bar and the last to arrive closes it, in one batch, across batches
    (partial bars merged) and for a late tick at the bar's last instant (a closed bar
    corrected). Before, the first to arrive was the close too."""
    book = BarBook(SESSIONS)
    same, later = at(15, 0, 59), at(15, 1, 30)
    book.ingest_ticks(ticks_frame([tick("AAA", same, 7.0, id="c"), tick("AAA", same, 8.0, id="d")]))
    book.ingest_ticks(ticks_frame([tick("BBB", same, 5.0, id="e")]))
    book.ingest_ticks(ticks_frame([tick("BBB", same, 6.0, id="f")]))
    book.ingest_ticks(ticks_frame([tick("CCC", same, 3.0, id="g")]))
    book.ingest_ticks(ticks_frame([tick("CCC", later, 3.5, id="h")]))
    closed = book.advance(at(15, 1, 2))
    assert closed.minute.select("symbol", "open", "close").rows() == [
        ("AAA", 7.0, 8.0),
        ("BBB", 5.0, 6.0),
        ("CCC", 3.0, 3.0),
    ]
    book.ingest_ticks(ticks_frame([tick("CCC", same, 2.5, id="late")]))  # (a late tick)
    corrected = book.advance(at(15, 1, 10))
    assert corrected.minute.select("symbol", "low", "close").rows() == [("CCC", 2.5, 2.5)]


def test_a_provider_bar_of_the_last_minute_after_the_closing_print_keeps_the_print() -> None:
    """The closing cross (16:00:00.3, 5,000 shares at 20.0) comes as a tick, then the
    provider's bar of 15:59 (which lacks it: its provider files it under 16:00): the bar
    replaces the one of the trades, with the print merged in, so the session closes at the
    cross with its volume, as in the other order. Before, the provider's bar dropped the
    print and the session closed at 10.2 with 100 shares."""
    cross = tick("AAA", at(21, 0, 0.3), 20.0, 5000)
    provider = minute("AAA", at(20, 59), 10.0, 10.5, 9.9, 10.2, 100.0)
    for order in ("print first", "bar first"):
        book = BarBook(SESSIONS)
        book.advance(at(20, 59, 50))
        if order == "print first":
            book.ingest_ticks(ticks_frame([cross]))
            book.ingest_minute_bars(minutes(provider))
        else:
            book.ingest_minute_bars(minutes(provider))
            book.ingest_ticks(ticks_frame([cross]))
        closed = book.advance(at(21, 0, 5))
        assert closed.minute.select("close", "high", "volume").rows() == [(20.0, 20.0, 5100.0)]
        assert closed.daily.select("open", "close", "volume").rows() == [(10.0, 20.0, 5100.0)]


def test_ticks_and_a_provider_bar_ahead_of_the_clock_count_once() -> None:
    """A day's ticks and a provider's bars of the same minutes come ahead of the book's clock
    (a replay's day, taken in one batch; a feed ahead of it), so both wait for the clock: the
    provider's bar replaces the bar of the trades, as it does when it comes after them, and
    the closing cross among the ticks is merged into the provider's bar of the last minute.
    Before, the bars were taken first and the ticks merged into them, every share counted
    twice, and the waiting cross was lost."""
    trades = [
        tick("AAA", at(20, 58, 5), 10.0, 300, id="a"),
        tick("AAA", at(20, 58, 40), 10.4, 200, id="b"),
        tick("AAA", at(20, 59, 30), 10.2, 100, id="c"),
        tick("AAA", at(21, 0, 0.3), 20.0, 5000, id="cross"),
    ]
    provider = [
        minute("AAA", at(20, 58), 10.0, 10.4, 10.0, 10.4, 500.0),
        minute("AAA", at(20, 59), 10.2, 10.2, 10.2, 10.2, 100.0),
    ]
    book = BarBook(SESSIONS)
    book.advance(at(14, 0))  # (the clock: the trades and bars below are ahead of it)
    book.ingest_ticks(ticks_frame(trades))
    book.ingest_minute_bars(minutes(*provider))
    closed = book.advance(at(21, 0, 5))
    assert closed.minute.select("start", "close", "volume").rows() == [
        (at(20, 58), 10.4, 500.0),
        (at(20, 59), 20.0, 5100.0),
    ]
    assert closed.daily.select("open", "close", "volume").rows() == [(10.0, 20.0, 5600.0)]


def test_the_closing_prints_survive_a_restart() -> None:
    """The closing cross taken before a restart is still merged into the provider's bar of the
    last minute that comes (again, updated) after it. Before, the prints were not in the saved
    state: the bar after the restart closed at 10.3 with 150 shares, the cross gone."""
    book = BarBook(SESSIONS)
    book.advance(at(20, 59, 50))
    book.ingest_ticks(ticks_frame([tick("AAA", at(21, 0, 0.3), 20.0, 5000)]))
    book.ingest_minute_bars(minutes(minute("AAA", at(20, 59), 10.0, 10.5, 9.9, 10.2, 100.0)))
    book.advance(at(21, 0, 5))
    restarted = BarBook(SESSIONS)
    assert restarted.restore(book.state(), at(21, 0, 6))
    updated = minute("AAA", at(20, 59), 10.0, 10.5, 9.9, 10.3, 150.0)
    restarted.ingest_minute_bars(minutes(updated))
    closed = restarted.advance(at(21, 0, 30))
    assert closed.minute.select("close", "volume").rows() == [(20.0, 5150.0)]
    assert closed.daily.select("close", "volume").rows() == [(20.0, 5150.0)]


def test_a_provider_bar_waiting_for_its_minute_survives_a_restart() -> None:
    """A provider's bar of the minute under way waits for the minute's end; the daemon stops
    (its bar state saved) before that: after the restart the bar still waits, and the first
    advance after its minute's end takes it. Before, the waiting bars were not in the saved
    state: acknowledged, then lost."""
    book = BarBook(SESSIONS)
    book.advance(at(15, 1, 10))
    running = minute("AAA", at(15, 1), 10.0, 10.5, 9.9, 10.2, 100.0)
    book.ingest_minute_bars(minutes(running))
    saved = book.state()
    assert saved.waiting.height == 1
    restarted = BarBook(SESSIONS)
    assert restarted.restore(saved, at(15, 1, 40))
    assert_closed(restarted.advance(at(15, 2, 5)), minutes(running), NO_DAILIES)
