"""How current the daemon's bars are, as /api/state says it: the newest bar, its age and the
sessions closed since without one."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, empty
from monitor.core.sessions import Sessions
from monitor.web.freshness import Freshness

UTC = dt.UTC
FRIDAY_CLOSE = "2024-07-12T20:00:00+00:00"


def through_friday(sessions: Sessions) -> Freshness:
    """The freshness of session bars up to Friday 2024-07-12, no minute bars."""
    rows = [{"symbol": "IWM", "session": d, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
             "volume": 1.0} for d in (dt.date(2024, 7, 11), dt.date(2024, 7, 12))]  # fmt: skip
    fresh = Freshness(sessions)
    fresh.note(pl.DataFrame(rows, schema=DAILY_SCHEMA), empty(MINUTE_SCHEMA))
    return fresh


@pytest.mark.parametrize(
    ("now", "age_s", "behind"),
    [
        (dt.datetime(2024, 7, 14, 12, tzinfo=UTC), 144_000.0, 0),  # (Sunday: no session since)
        (dt.datetime(2024, 7, 15, 22, tzinfo=UTC), 266_400.0, 0),  # (Monday, 2 h past close)
        (dt.datetime(2024, 7, 16, 1, tzinfo=UTC), 277_200.0, 1),  # (5 h past it)
    ],
)
def test_the_data_is_a_session_behind_once_a_close_passed_without_its_bars(
    sessions: Sessions, now: dt.datetime, age_s: float, behind: int
) -> None:
    """With session bars up to Friday's, the data is current over the weekend and until a few
    hours (GRACE) past Monday's close, then a session behind; the newest bar is Friday's
    close, its age counted from it."""
    got = through_friday(sessions).document(now)
    assert got == {"latest_bar": FRIDAY_CLOSE, "latest_bar_age_s": age_s, "sessions_behind": behind}


def test_a_clock_years_past_the_data_is_hundreds_of_sessions_behind(sessions: Sessions) -> None:
    """A clock on 2026-11-30 over bars that end on 2024-07-12 counts every session closed
    between (the board said "live")."""
    got = through_friday(sessions).document(dt.datetime(2026, 11, 30, 15, tzinfo=UTC))
    missed = sessions.between(dt.date(2024, 7, 15), dt.date(2026, 11, 27)).height
    assert missed > 500
    assert (got["latest_bar"], got["sessions_behind"]) == (FRIDAY_CLOSE, missed)


def test_a_minute_bar_is_newer_than_the_last_close_and_no_bar_is_none(sessions: Sessions) -> None:
    """A minute bar of Monday's session makes the newest bar its end; a daemon without bars
    says none, and nothing behind."""
    fresh = through_friday(sessions)
    row = {"symbol": "IWM", "start": dt.datetime(2024, 7, 15, 14, 30, tzinfo=UTC), "open": 1.0,
           "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}  # fmt: skip
    fresh.note(empty(DAILY_SCHEMA), pl.DataFrame([row]).cast(MINUTE_SCHEMA))  # type: ignore[arg-type]
    got = fresh.document(dt.datetime(2024, 7, 15, 14, 32, tzinfo=UTC))
    assert got == {"latest_bar": "2024-07-15T14:31:00+00:00", "latest_bar_age_s": 60.0,
                   "sessions_behind": 0}  # fmt: skip
    none = Freshness(sessions).document(dt.datetime(2024, 7, 15, 14, 32, tzinfo=UTC))
    assert none == {"latest_bar": None, "latest_bar_age_s": None, "sessions_behind": 0}
