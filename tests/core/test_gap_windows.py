"""Sessions missing inside a symbol's history: a window or a streak does not reach across them,
so no alert says "in 5 sessions" of a move that took more."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA, Bar, FeedBatch, bars_frame
from monitor.core.rules.spec import parse_rules
from monitor.core.sessions import Sessions

RULES = """
[[rules]]
id = "surge.5d"
kind = "surge"
symbols = ["X"]
timeframe = "1d"
window = 5
min_return = 0.10

[[rules]]
id = "streak.3d"
kind = "streak"
symbols = ["X"]
timeframe = "1d"
count = 3
min_return = 0.005
"""


def fired(sessions: Sessions, gap: bool) -> list[tuple[str, str, str]]:
    """X at 100 for 20 sessions from 2025-06-02, then 112, 113, 114, 115: with `gap`, the ten
    sessions before the 112 are missing from its history (the reviewer's case: 07-01 to
    07-15 missing, the rise to 112 made while no bar came)."""
    days = sessions.frame.filter(pl.col("session") >= dt.date(2025, 6, 2)).get_column("session")
    closes = [100.0] * 20 + [100.0] * 10 + [112.0, 113.0, 114.0, 115.0]
    rows = [
        ("X", day, close, close, close, close, 1000.0)
        for n, (day, close) in enumerate(zip(days, closes, strict=False))
        if not (gap and 20 <= n < 30)
    ]
    engine = Engine(parse_rules(RULES), sessions)
    engine.ingest_daily(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row"))
    step = engine.advance(dt.datetime(2025, 8, 1, tzinfo=dt.UTC))
    return [(a.rule, a.session, a.text) for a in step.alerts]


def test_no_window_or_streak_reaches_across_missing_sessions(sessions: Sessions) -> None:
    """With the ten sessions missing, X's rise to 112 happened somewhere in them: the surge
    ("+12% in 5 sessions") does not fire, and the streak counts only the sessions after the
    gap (113, 114, 115: three up, +2.7% in all), not the jump over it. Before, the surge fired
    ("X rose 14.2% in 5 sessions") and the streak fired a session early with the jump in it.
    With the sessions there (the rise made in one session), both fire on the jump."""
    assert fired(sessions, gap=True) == [
        (
            "streak.3d",
            "2025-07-21",
            "X rose more than 0.5% in each of 3 sessions (+2.7% in all), closing at 115.00.",
        )
    ]
    whole = fired(sessions, gap=False)
    assert [(rule, session) for rule, session, _ in whole] == [
        ("surge.5d", "2025-07-16"),
        ("streak.3d", "2025-07-18"),
    ]


JUMPS = """
[[rules]]
id = "jump"
kind = "streak"
symbols = ["X"]
timeframe = "1d"
count = 1
min_return = 0.04
horizons = [3, 5, 10]
"""


def jumps(sessions: Sessions, rules: str, closes: dict[int, float], missing: range) -> list:
    """The alerts of `rules` over X: session n (from 2025-06-02) closes at `closes[n]`, or at
    the last close before it; the sessions in `missing` are missing from its history."""
    days = sessions.frame.filter(pl.col("session") >= dt.date(2025, 6, 2)).get_column("session")
    rows, close = [], 100.0
    for n, day in enumerate(days[: max(closes) + 1]):
        close = closes.get(n, close)
        if n not in missing:
            rows.append(("X", day, close, close, close, close, 1000.0))
    engine = Engine(parse_rules(rules), sessions)
    engine.ingest_daily(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row"))
    return engine.advance(dt.datetime(2025, 12, 31, tzinfo=UTC)).alerts


UTC = dt.UTC
# X jumps to 110 in session 5 and to 131.25 in session 30; it rises by steps of under 4% from
# 110 to 120 in sessions 10 to 13, and by 1 a session to 125 in session 18.
PATH = {0: 100.0, 5: 110.0, 10: 113.0, 11: 116.0, 12: 119.0, 13: 120.0, 14: 121.0, 15: 122.0}
PATH |= {16: 123.0, 17: 124.0, 18: 125.0, 30: 131.25, 31: 131.25}


def test_what_followed_counts_sessions_not_rows_across_missing_sessions(
    sessions: Sessions,
) -> None:
    """With sessions 10 to 12 missing from X's history, what followed the jump of session 5 is
    taken 3 and 10 sessions on (sessions 8 and 15: +0.0% and +10.9%, as with every session
    there), and 5 sessions on is not known (session 10 is missing), so the jump of session 30
    says so. Before, "5 sessions on" was 5 rows on (session 13: +9.1%) and "10" was session
    18 (+13.6%)."""
    later = jumps(sessions, JUMPS, PATH, missing=range(10, 13))
    assert [a.session for a in later] == ["2025-06-09", "2025-07-16"]
    assert later[1].history is not None
    forward = {f.periods: f for f in later[1].history.forward}
    assert (forward[3].count, forward[3].mean) == (1, 0.0)
    assert forward[5].count == 0 and forward[5].mean is None
    assert forward[10].count == 1 and forward[10].mean == pytest.approx(122 / 110 - 1)
    # With every session there, the same sessions: session 10's close 5 sessions on.
    whole = jumps(sessions, JUMPS, PATH, missing=range(0))
    assert [a.session for a in whole] == ["2025-06-09", "2025-07-16"]
    forward = {f.periods: f for f in whole[1].history.forward}  # type: ignore[union-attr]
    assert forward[5].mean == pytest.approx(113 / 110 - 1)
    assert forward[10].mean == pytest.approx(122 / 110 - 1)


def test_a_cooldown_counts_the_sessions_missing_from_the_history(sessions: Sessions) -> None:
    """A cooldown of 8 sessions after the jump of session 5, sessions 8 to 10 missing: a jump
    in session 14 comes 9 sessions on (6 rows) and fires; one in session 13, 8 sessions on, is
    held back. Before, both were held back (rows, not sessions)."""
    rules = JUMPS.replace("horizons = [3, 5, 10]", "cooldown = 8")
    path = {0: 100.0, 5: 110.0, 6: 110.0, 13: 110.0, 14: 115.0, 15: 115.0}
    gap = range(8, 11)
    assert [a.session for a in jumps(sessions, rules, path, gap)] == ["2025-06-09", "2025-06-23"]
    assert [a.session for a in jumps(sessions, rules, path, range(0))] == [
        "2025-06-09",
        "2025-06-23",
    ]
    sooner = {0: 100.0, 5: 110.0, 6: 110.0, 12: 110.0, 13: 115.0, 14: 115.0}
    assert [a.session for a in jumps(sessions, rules, sooner, gap)] == ["2025-06-09"]


WEEKS = """
[[rules]]
id = "streak.weekly"
kind = "streak"
symbols = ["X"]
timeframe = "1w"
count = 3
min_return = 0.01
"""


def test_a_weekly_streak_does_not_reach_across_a_missing_week(sessions: Sessions) -> None:
    """X up 0.5% every session from 2025-06-02 (each week up more than 1%): three weeks up
    fire in the week to 06-27. With the week to 06-27 missing from X's history, the run
    starts again after it (the week to 07-03 has no return: its week before is missing) and
    fires in the week to 07-25. Before, the weeks to 06-13, 06-20 and 07-03 were "3 straight
    weeks", one of them two weeks long."""
    closes = {n: 100.0 * 1.005**n for n in range(40)}
    week = range(14, 19)  # (the sessions of 06-23 to 06-27)
    found = [(a.session, a.metrics["streak"]) for a in jumps(sessions, WEEKS, closes, week)]
    assert found == [("2025-07-25", 3)]
    whole = [(a.session, a.metrics["streak"]) for a in jumps(sessions, WEEKS, closes, range(0))]
    assert whole == [("2025-06-27", 3)]


ROTATION = """
[[rules]]
id = "rotation"
kind = "rotation"
small = "S"
large = "L"
timeframe = "1d"
window = 5
min_spread = 0.05
"""


def test_a_rotation_window_does_not_reach_across_a_missing_session(sessions: Sessions) -> None:
    """S rises from 100 to 112 while ten of its sessions are missing, L flat throughout: no
    "beat by 12 points over 5 sessions" (the rise took 15). With S's sessions there and the
    rise made in one, it fires on it."""
    days = sessions.frame.filter(pl.col("session") >= dt.date(2025, 6, 2)).get_column("session")

    def fired(gap: bool) -> list[str]:
        rows = []
        for n, day in enumerate(days[:40]):
            rows.append(("L", day, 100.0, 100.0, 100.0, 100.0, 1000.0))
            s = 100.0 if n < 20 else 112.0
            if not (gap and 20 <= n < 30):
                rows.append(("S", day, s, s, s, s, 1000.0))
        engine = Engine(parse_rules(ROTATION), sessions)
        engine.ingest_daily(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row").sort("symbol"))
        return [a.session for a in engine.advance(dt.datetime(2025, 12, 31, tzinfo=UTC)).alerts]

    assert fired(gap=True) == []
    assert fired(gap=False) == [str(days[20])]


def test_a_minute_rotation_counts_the_pairs_minutes(sessions: Sessions) -> None:
    """A 1m rotation's periods are the minutes both symbols traded: L without a trade at 13:34,
    what followed the beat of 13:31 is taken three paired minutes on (13:35), and by 13:39
    both earlier beats' are known. (The reviewer's case: with the small symbol's own minutes
    counted, 13:34 was missing and the returns were not known.)"""
    rules = ROTATION.replace('timeframe = "1d"', 'timeframe = "1m"').replace(
        "window = 5\nmin_spread = 0.05", "window = 1\nmin_spread = 0.005\nhorizons = [3]"
    )
    at = lambda m: dt.datetime(2024, 7, 2, 13, 30 + m, tzinfo=UTC)  # noqa: E731
    small = {0: 100.0, 1: 101.0, 2: 101.0, 3: 101.0, 4: 104.0, 5: 110.0, 6: 110.0, 7: 110.0}
    small |= {8: 111.2, 9: 111.2, 10: 111.2, 11: 111.2}
    large = {m: 100.0 for m in small if m != 4}
    engine = Engine(parse_rules(rules), sessions)
    engine.warm(at(0) - dt.timedelta(hours=1))
    batch = FeedBatch.empty("test")
    batch.minute_bars = bars_frame(
        [
            Bar(s, "1m", c, c, c, c, 100.0, start=at(m))
            for s, closes in (("L", large), ("S", small))
            for m, c in closes.items()
        ],
        "1m",
    )
    engine.ingest(batch)
    alerts = engine.advance(at(13)).alerts
    followed = {a.ts: [(f.count, f.mean) for f in a.history.forward] for a in alerts}  # type: ignore[union-attr]
    assert list(followed) == [
        "2024-07-02T13:32:00Z",
        "2024-07-02T13:36:00Z",
        "2024-07-02T13:39:00Z",
    ]
    assert followed["2024-07-02T13:36:00Z"] == [(1, pytest.approx(110 / 101 - 1))]
    assert followed["2024-07-02T13:39:00Z"][0][0] == 2


def test_a_drawdown_lookback_counts_the_sessions_missing_from_the_history(
    sessions: Sessions,
) -> None:
    """A high over the last 5 sessions: X closes at 120, then at 100 with the next ten sessions
    missing. The 120 is eleven sessions back at the next bar, out of the window: no "16.7%
    below its high". With the sessions there, the fall shows the next session."""
    rules = """
[[rules]]
id = "dd"
kind = "drawdown"
symbols = ["X"]
timeframe = "1d"
min_below_high = 0.10
lookback = 5
"""
    path = {0: 120.0, 1: 100.0, 15: 100.0}
    assert jumps(sessions, rules, path, missing=range(1, 11)) == []
    assert [a.session for a in jumps(sessions, rules, path, missing=range(0))] == ["2025-06-03"]


def test_a_fade_rise_window_counts_the_sessions_missing_from_the_history(
    sessions: Sessions,
) -> None:
    """A rise of 10% within 3 sessions, then a 5% drop: X at 100, ten sessions missing, then
    115 and 105. The rise took at least eleven sessions: no fade. With the sessions there
    (at 100), the rise is one session's, and the drop fires."""
    rules = """
[[rules]]
id = "fade"
kind = "fade"
symbols = ["X"]
timeframe = "1d"
rise = 0.10
rise_window = 3
drop = 0.05
"""
    path = {0: 100.0, 11: 115.0, 12: 105.0, 13: 105.0}
    assert jumps(sessions, rules, path, missing=range(1, 11)) == []
    assert [a.session for a in jumps(sessions, rules, path, missing=range(0))] == ["2025-06-18"]


def test_what_followed_a_breadth_alert_counts_sessions_missing_from_the_data(
    sessions: Sessions,
) -> None:
    """Three symbols all up in sessions 2, 4 and 10, flat otherwise, and sessions 5 to 7
    missing from the data: at session 10, what followed the session-4 alert two sessions on
    (session 6) is not known, and the session-2 alert's is (session 4). Before, "two
    sessions on" from session 4 was two rows on: session 8."""
    rules = """
[[rules]]
id = "breadth"
kind = "breadth"
universe = true
timeframe = "1d"
window = 1
min_share = 1.0
min_symbols = 3
horizons = [2]
"""
    days = sessions.frame.filter(pl.col("session") >= dt.date(2025, 6, 2)).get_column("session")
    closes = {0: 100.0, 2: 101.0, 4: 102.0, 10: 103.0}
    rows, close = [], 100.0
    for n, day in enumerate(days[:12]):
        close = closes.get(n, close)
        if not 5 <= n <= 7:
            rows += [(s, day, close, close, close, close, 1000.0) for s in ("A", "B", "C")]
    engine = Engine(parse_rules(rules), sessions)
    engine.ingest_daily(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row").sort("symbol"))
    alerts = engine.advance(dt.datetime(2025, 12, 31, tzinfo=UTC)).alerts
    assert [a.session for a in alerts] == [str(days[2]), str(days[4]), str(days[10])]
    assert alerts[2].history is not None
    [two] = alerts[2].history.forward
    assert (two.count, two.mean) == (1, pytest.approx(102 / 101 - 1))
