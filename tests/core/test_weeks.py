"""Trading weeks follow the NYSE calendar across holidays and year ends."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions


def daily_bars(sessions: Sessions, first: dt.date, last: dt.date) -> pl.DataFrame:
    """One bar per session for symbol X, close = 100 + session number."""
    days = sessions.between(first, last).get_column("session").to_list()
    n = len(days)
    closes = [100.0 + i for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": ["X"] * n,
            "session": days,
            "open": closes,
            "high": [c + 0.5 for c in closes],
            "low": [c - 0.5 for c in closes],
            "close": closes,
            "volume": [1000.0] * n,
        },
        schema=DAILY_SCHEMA,
    )


@pytest.fixture(scope="module")
def weeks(sessions: Sessions) -> pl.DataFrame:
    """Weekly bars of 2024-03-18 .. 2025-01-10 built by the engine."""
    engine = Engine(RulesFile(), sessions)
    engine.ingest_daily(daily_bars(sessions, dt.date(2024, 3, 18), dt.date(2025, 1, 10)))
    engine.advance(sessions.close_of(dt.date(2025, 1, 10)))
    return engine.weekly()


@pytest.mark.parametrize(
    ("label", "first_open", "sessions_in_week", "holiday"),
    [
        (dt.date(2024, 3, 28), dt.date(2024, 3, 25), 4, "Good Friday 2024-03-29"),
        (dt.date(2024, 7, 5), dt.date(2024, 7, 1), 4, "Independence Day 2024-07-04"),
        (dt.date(2024, 11, 29), dt.date(2024, 11, 25), 4, "Thanksgiving 2024-11-28"),
        (dt.date(2025, 1, 3), dt.date(2024, 12, 30), 4, "New Year's Day 2025-01-01"),
        (dt.date(2024, 12, 27), dt.date(2024, 12, 23), 4, "Christmas 2024-12-25"),
        (dt.date(2024, 4, 5), dt.date(2024, 4, 1), 5, "none"),
    ],
)
def test_week_label_and_short_flag(
    weeks: pl.DataFrame,
    sessions: Sessions,
    label: dt.date,
    first_open: dt.date,
    sessions_in_week: int,
    holiday: str,
) -> None:
    """A week is labelled by its last session, spans its sessions only, and is flagged short
    when a holiday removed a session."""
    row = weeks.filter(pl.col("session") == label).to_dicts()
    assert len(row) == 1, holiday
    week = row[0]
    assert week["short_week"] is (sessions_in_week < 5)
    assert week["ts"] == sessions.close_of(label)
    days = sessions.between(first_open, label).get_column("session").to_list()
    assert len(days) == sessions_in_week
    start = sessions.between(dt.date(2024, 3, 18), first_open).height - 1
    assert week["open"] == 100.0 + start
    assert week["close"] == 100.0 + start + sessions_in_week - 1
    assert week["volume"] == 1000.0 * sessions_in_week


def test_thanksgiving_week_closes_at_the_early_close(
    weeks: pl.DataFrame, sessions: Sessions
) -> None:
    """The Thanksgiving week ends on Friday's 13:00 New York early close (18:00 UTC)."""
    row = weeks.filter(pl.col("session") == dt.date(2024, 11, 29)).to_dicts()[0]
    assert row["ts"] == dt.datetime(2024, 11, 29, 18, 0, tzinfo=dt.UTC)


def test_an_unfinished_week_is_not_a_bar(sessions: Sessions) -> None:
    """Bars up to a Wednesday do not make a weekly bar for that week until Friday closes."""
    engine = Engine(RulesFile(), sessions)
    engine.ingest_daily(daily_bars(sessions, dt.date(2024, 7, 8), dt.date(2024, 7, 17)))
    engine.advance(sessions.close_of(dt.date(2024, 7, 17)))
    labels = engine.weekly().get_column("session").to_list()
    assert labels == [dt.date(2024, 7, 12)]


def test_minute_date_is_the_new_york_date_through_daylight_saving_changes() -> None:
    """Every minute from 04:00 to 20:00 New York, over three years of clock changes, gets the
    date a conversion to the zone gives."""
    from monitor.core.sessions import NEW_YORK, minute_date

    starts = pl.datetime_range(
        dt.datetime(2023, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "1m",
        eager=True,
    ).alias("start")
    local = starts.dt.convert_time_zone(NEW_YORK)
    frame = pl.DataFrame(starts).filter(local.dt.hour().is_between(4, 19))
    got = frame.select(
        minute_date(pl.col("start")).alias("fast"),
        pl.col("start").dt.convert_time_zone(NEW_YORK).dt.date().alias("zone"),
    )
    assert got.height > 1_000_000
    assert (got.get_column("fast") == got.get_column("zone")).all()


def test_weekly_alerts_flag_holiday_weeks(sessions: Sessions) -> None:
    """Every weekly alert of ^RUT since 1987 carries `short_week`: whether its trading week had
    fewer than five sessions, counted here from the calendar (Good Friday 2009 is one)."""
    from monitor.cli import load_rules
    from monitor.datafiles import DataSpec, read_many
    from monitor.replay import build_engine, replay
    from tests.conftest import RULES, RUT

    bars = read_many([DataSpec(path=str(RUT), symbol="^RUT")]).bars
    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    weekly = [a for a in replay(engine, bars) if a.timeframe == "1w"]
    days = sessions.frame.get_column("session")
    for alert in weekly:
        end = dt.date.fromisoformat(alert.session)  # (a week is labelled by its last session)
        monday = end - dt.timedelta(days=end.weekday())
        count = days.filter(days.is_between(monday, end)).len()
        assert alert.metrics["short_week"] is (count < 5), alert.session
    assert "2009-04-09" in {a.session for a in weekly if a.metrics["short_week"]}
