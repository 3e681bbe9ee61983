"""A period whose condition cannot be known (a window reaching across a session missing from a
symbol's history) neither starts nor ends an episode: a surge under way when the data has a hole
does not fire again when its window is whole again."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.model import decode_alert, encode_alert
from monitor.core.rules.spec import RulesFile, parse_rules
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_many
from monitor.replay import build_engine, replay
from tests.conftest import DEMO

SURGE = """
[[rules]]
id = "surge20"
kind = "surge"
symbols = ["^RUT"]
timeframe = "1d"
window = 20
min_return = 0.10
"""


def rut(missing: list[str]) -> pl.DataFrame:
    spec = DataSpec(path=str(DEMO / "rut_index_daily_1987_2026.csv"), symbol="^RUT")
    bars = read_many([spec], start=dt.date(2007, 1, 1)).bars
    gone = [dt.date.fromisoformat(d) for d in missing]
    return bars.filter(~pl.col("session").is_in(gone))


def surges(sessions: Sessions, bars: pl.DataFrame) -> dict[str, int]:
    """Session -> prior occurrences of each surge of 2009."""
    rules: RulesFile = parse_rules(SURGE)
    engine = build_engine(rules, sessions)
    alerts = [decode_alert(encode_alert(a)) for a in replay(engine, bars)]
    return {a.session: a.history.prior_occurrences for a in alerts if a.session.startswith("2009")}


def test_a_surge_under_way_across_a_missing_session_does_not_fire_again(
    sessions: Sessions,
) -> None:
    """^RUT without 2009-04-06: the surge that began on 2009-03-26 and held on each side of
    the sessions whose window reaches across the hole does not fire again on 2009-05-06, and
    the episodes the hole hid are not counted in the history of the next one."""
    whole = surges(sessions, rut([]))
    # ^RUT's 20-session return was above 10% from 2009-03-26 to 04-20 on the whole file,
    # then went below and above the line three times before May.
    assert list(whole)[:4] == ["2009-03-26", "2009-04-22", "2009-04-28", "2009-05-04"]
    holed = surges(sessions, rut(["2009-04-06"]))
    # Without 04-06, the window is unknown from 04-07 to 05-05; the surge held on 04-03 and
    # holds on 05-06 (+17%): the same episode, not a new one (it fired as one before the fix).
    assert "2009-05-06" not in holed
    assert list(holed)[:2] == ["2009-03-26", "2009-06-11"]
    # The episodes the hole hid are not counted in what history says either.
    assert holed["2009-06-11"] == whole["2009-06-11"] - 3


def test_a_condition_unknown_at_the_start_of_a_history_still_fires_on_its_first_known_period(
    sessions: Sessions,
) -> None:
    """The first `window` periods of a history are unknown too, and then the first period
    that holds is an onset (as before: not taken for a continuation of nothing)."""
    bars = rut([]).filter(pl.col("session") >= dt.date(2009, 3, 1))
    fired = surges(sessions, bars)
    assert next(iter(fired)) == "2009-03-30"  # (the first with a whole window: +13.1%)
