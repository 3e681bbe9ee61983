"""Clock and calendar edges on real data: a DST change, a week with one session, early closes."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.core.engine import Engine
from monitor.core.model import MINUTE_SCHEMA, FeedBatch
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_daily
from tests.conftest import DATA, RUT

pytestmark = pytest.mark.chaos


def spy_minutes() -> pl.DataFrame:
    """SPY 1-minute bars of 2024-03-08 (EST) and 2024-03-11 (EDT), extended hours included."""
    raw = pl.read_csv(DATA / "spy_1min_2024-03-08_2024-03-11.csv")
    return raw.select(
        pl.lit("SPY").alias("symbol"),
        pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%z").dt.convert_time_zone("UTC")
        .alias("start"),
        "open", "high", "low", "close", pl.col("volume").cast(pl.Float64),
    ).cast(MINUTE_SCHEMA)  # type: ignore[arg-type]  # fmt: skip


def test_session_bars_across_the_dst_change(sessions: Sessions) -> None:
    """Across the 2024-03-10 DST change, each session bar closes at 16:00 New York (21:00 then
    20:00 UTC) and aggregates exactly that session's 390 regular-hours minutes."""
    minutes = spy_minutes()
    engine = Engine(RulesFile(), sessions)
    batch = FeedBatch.empty("spy")
    batch.minute_bars = minutes
    engine.ingest(batch)
    before = engine.advance(dt.datetime(2024, 3, 8, 21, 0, 1, tzinfo=dt.UTC))
    assert before.daily_bars.height == 0  # closes with its last minute, after the close delay
    first = engine.advance(dt.datetime(2024, 3, 8, 21, 0, 5, tzinfo=dt.UTC)).daily_bars
    second = engine.advance(dt.datetime(2024, 3, 11, 20, 0, 5, tzinfo=dt.UTC)).daily_bars
    for day, got, open_utc in [
        (dt.date(2024, 3, 8), first, dt.datetime(2024, 3, 8, 14, 30, tzinfo=dt.UTC)),
        (dt.date(2024, 3, 11), second, dt.datetime(2024, 3, 11, 13, 30, tzinfo=dt.UTC)),
    ]:
        regular = minutes.filter(
            pl.col("start").is_between(open_utc, open_utc + dt.timedelta(minutes=389))
        ).sort("start")
        assert regular.height == 390
        want = (
            day,
            regular["open"][0],
            regular["high"].max(),
            regular["low"].min(),
            regular["close"][-1],
            regular["volume"].sum(),
        )
        assert got.select("session", "open", "high", "low", "close", "volume").rows() == [want]


def test_a_week_with_one_session(sessions: Sessions) -> None:
    """The week of 2001-09-10 (markets closed after the attacks of 9/11) is a one-session week:
    labelled 2001-09-10, flagged short, its bar that session's."""
    bars = read_daily(
        DataSpec(path=str(RUT), symbol="^RUT"),
        start=dt.date(2001, 8, 27),
        end=dt.date(2001, 9, 28),
    ).bars
    engine = Engine(RulesFile(), sessions)
    engine.ingest_daily(bars)
    engine.advance(sessions.close_of(dt.date(2001, 9, 28)))
    weeks = engine.weekly()
    labels = weeks.get_column("session").to_list()
    assert labels == [
        dt.date(2001, 8, 31),
        dt.date(2001, 9, 7),
        dt.date(2001, 9, 10),
        dt.date(2001, 9, 21),
        dt.date(2001, 9, 28),
    ]
    week = weeks.filter(pl.col("session") == dt.date(2001, 9, 10)).to_dicts()[0]
    day = bars.filter(pl.col("session") == dt.date(2001, 9, 10)).to_dicts()[0]
    assert week["short_week"] is True
    assert (week["open"], week["close"], week["volume"]) == (
        day["open"],
        day["close"],
        day["volume"],
    )


def test_daily_rules_wait_for_an_early_close(sessions: Sessions) -> None:
    """A bar for the day after Thanksgiving 2024 counts from the 13:00 New York early close,
    not 16:00."""
    engine = Engine(RulesFile(), sessions)
    bar = pl.DataFrame(
        {"symbol": ["X"], "session": [dt.date(2024, 11, 29)], "open": [1.0], "high": [1.0],
         "low": [1.0], "close": [1.0], "volume": [1.0]},
    )  # fmt: skip
    engine.ingest_daily(bar)
    assert engine.advance(dt.datetime(2024, 11, 29, 17, 59, tzinfo=dt.UTC)).daily_bars.height == 0
    assert engine.advance(dt.datetime(2024, 11, 29, 18, 0, tzinfo=dt.UTC)).daily_bars.height == 1
