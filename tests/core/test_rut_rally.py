"""The Reuters account of the July 2024 small-cap rally, replayed through config/rules.toml.

Oracles are written independently of the engine: plain Python over the CSV's closes.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import statistics

import pytest

from monitor.cli import load_rules
from monitor.core.model import Alert
from monitor.core.payload import alert_id
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_daily
from monitor.replay import build_engine, replay
from tests.conftest import RULES, RUT

RALLY_DAY = "2024-07-16"


@pytest.fixture(scope="module")
def alerts(sessions: Sessions) -> list[Alert]:
    """Every alert of a replay of ^RUT 1987-2026 through the shipped rules."""
    bars = read_daily(DataSpec(path=str(RUT), symbol="^RUT")).bars
    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    return list(replay(engine, bars))


@pytest.fixture(scope="module")
def closes() -> list[tuple[dt.date, float]]:
    """(date, close) of ^RUT straight from the CSV."""
    with RUT.open() as f:
        return [(dt.date.fromisoformat(r["Date"]), float(r["Close"])) for r in csv.DictReader(f)]


def on(alerts: list[Alert], rule: str, session: str) -> Alert:
    found = [a for a in alerts if a.rule == rule and a.session == session]
    assert len(found) == 1, f"{rule} on {session}: {len(found)} alerts"
    return found[0]


def test_surge_is_largest_since_april_2020(alerts: list[Alert]) -> None:
    """The 5-session gain to 2024-07-16 is over 11.5%, the largest since April 2020."""
    a = on(alerts, "surge.5d", RALLY_DAY)
    assert a.metrics["return"] == pytest.approx(0.1154, abs=5e-4)
    assert a.metrics["return"] > 0.115
    assert str(a.metrics["largest_since"]).startswith("2020-04")
    assert a.text == (
        "Russell 2000 rose 11.5% in 5 sessions, its largest 5-session gain since "
        f"{a.metrics['largest_since']}."
    )


def test_five_sessions_up_and_how_often_before(
    alerts: list[Alert], closes: list[tuple[dt.date, float]]
) -> None:
    """Five sessions each up more than 1% end on 2024-07-16; the earlier runs match an oracle,
    and so does what the index did in the month (21 sessions) after each of them."""
    a = on(alerts, "streak.daily", RALLY_DAY)
    assert a.metrics["streak"] == 5
    run, starts = 0, []
    for i in range(1, len(closes)):
        run = run + 1 if closes[i][1] / closes[i - 1][1] - 1 > 0.01 else 0
        if run == 5 and closes[i][0] < dt.date(2024, 7, 16):
            starts.append(i)
    assert a.history is not None
    assert a.history.prior_occurrences == len(starts) == 4
    assert a.history.prior_dates == [closes[i][0].isoformat() for i in starts]
    month = [closes[i + 21][1] / closes[i][1] - 1 for i in starts]
    stats = {h.periods: h for h in a.history.forward}
    assert stats[21].count == 4
    assert stats[21].mean == pytest.approx(statistics.mean(month), rel=1e-9)
    assert stats[21].median == pytest.approx(statistics.median(month), rel=1e-9)
    assert stats[21].share_positive == sum(r > 0 for r in month) / 4
    assert a.history.summary.startswith("4 earlier times since 1998; over the next 21 sessions")


def test_distance_from_the_2021_high(alerts: list[Alert]) -> None:
    """On 2024-07-16 the index closed 7.3% below its 2021 closing high of 2442.74."""
    a = on(alerts, "drawdown.high", RALLY_DAY)
    assert a.metrics["variant"] == "near_high"
    assert a.metrics["high_date"] == "2021-11-08"
    assert a.metrics["high"] == pytest.approx(2442.74, abs=0.01)
    assert a.metrics["drawdown"] == pytest.approx(-0.073, abs=5e-4)


def test_alert_ids_are_deterministic_and_unique(alerts: list[Alert]) -> None:
    """No two alerts of a replay share an id."""
    assert len({a.id for a in alerts}) == len(alerts)


def test_alert_ids_are_those_alert_id_makes(alerts: list[Alert]) -> None:
    """Each alert's id is `alert_id` of its rule, symbol, timeframe, bar close and variant (a
    whole frame's ids are hashed in a loop of their own: the same ids)."""
    for a in alerts:
        ts = dt.datetime.fromisoformat(a.ts.replace("Z", "+00:00"))
        variant = str(a.metrics.get("variant") or "")
        assert a.id == alert_id(a.rule, a.symbol, a.timeframe, ts, variant), a


def test_alerts_only_fire_once_per_run(alerts: list[Alert]) -> None:
    """A run that goes on past five sessions does not fire the streak rule again."""
    streaks = [a for a in alerts if a.rule == "streak.daily"]
    days = [dt.date.fromisoformat(a.session) for a in streaks]
    assert all((b - a).days > 5 for a, b in itertools.pairwise(days))
