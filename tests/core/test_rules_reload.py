"""Rules replaced in a running engine (the daemon's SIGHUP): from the next period on, the engine
emits exactly what an engine that had run the new rules all along emits, and nothing of the
periods already evaluated."""

from __future__ import annotations

import datetime as dt

import msgspec
import polars as pl

from monitor.cli import load_rules
from monitor.core.model import encode_alert
from monitor.core.rules.spec import RulesFile, StreakRule
from monitor.core.sessions import Sessions
from monitor.replay import build_engine, replay
from tests.conftest import RULES
from tests.core.test_two_paths import history as two_paths_history

SWITCH = dt.date(2023, 10, 31)  # the rules change after this session's close
BATCH = 10  # sessions per step after it


def history() -> pl.DataFrame:
    """test_two_paths' history (^RUT, IWM, QQQ and three small caps) to the end of 2024."""
    return two_paths_history().filter(pl.col("session") <= dt.date(2024, 12, 31))


def rule_sets() -> tuple[RulesFile, RulesFile]:
    """(before, after). Before: the shipped daily rules but fade, with `surge.5d` asking for a
    gain of 3%, and a rule that goes away. After: the shipped rules (surge.5d back at its 5%,
    fade and a weekly rule new, and with them the first weekly timeframe), without that rule."""
    shipped = load_rules(RULES)
    assert isinstance(shipped, RulesFile)
    daily = [r for r in shipped.rules if r.timeframe == "1d" and r.id != "fade.10d"]
    surge = next(r for r in daily if r.id == "surge.5d")
    changed = msgspec.structs.replace(surge, min_return=0.03)
    leaving = StreakRule(id="leaving.streak", symbols=["^RUT"], timeframe="1d", count=2)
    before = [changed if r is surge else r for r in daily] + [leaving]
    weekly = StreakRule(
        id="weekly.two", symbols=["^RUT", "IWM"], timeframe="1w", count=2, min_return=0.01
    )
    after = [r for r in shipped.rules if r.id != "streak.weekly"] + [weekly]
    return (
        msgspec.structs.replace(shipped, rules=before),
        msgspec.structs.replace(shipped, rules=after),
    )


def test_new_rules_fire_as_if_they_had_run_all_along(sessions: Sessions) -> None:
    bars = history()
    head = bars.filter(pl.col("session") <= SWITCH)
    tail = bars.filter(pl.col("session") > SWITCH)
    before, after = rule_sets()

    all_along = build_engine(after, sessions)
    list(replay(all_along, head))
    expected = [encode_alert(a) for a in replay(all_along, tail, batch_sessions=BATCH)]

    engine = build_engine(before, sessions)
    assert any(a.rule == "leaving.streak" for a in replay(engine, head))
    recorded = engine.replace_rules(after, build_engine(after, sessions).ctx)
    got = [encode_alert(a) for a in replay(engine, tail, batch_sessions=BATCH)]

    assert got == expected
    # Without the history's firings recorded, the first weekly rule would send every week it
    # ever fired on at the next step: every alert after the switch is of a later period.
    assert all(msgspec.json.decode(a)["session"] > SWITCH.isoformat() for a in got)
    rules = {msgspec.json.decode(a)["rule"] for a in got}
    # Not vacuous: new, changed and newly weekly rules fire after the switch; the rule that
    # left fired before it, and the weekly one had fired in the history (recorded, not sent).
    assert {"weekly.two", "fade.10d", "surge.5d"} <= rules
    assert "leaving.streak" not in rules
    assert recorded > 0
    assert {r.id for r in engine.rules} == {r.id for r in after.rules}


def test_unchanged_rules_are_not_evaluated_again(sessions: Sessions) -> None:
    """The same rules again (a reload of an unchanged file) record nothing and change nothing."""
    bars = history()
    before, _ = rule_sets()
    engine = build_engine(before, sessions)
    first = [encode_alert(a) for a in replay(engine, bars.filter(pl.col("session") <= SWITCH))]
    assert first
    assert engine.replace_rules(before, engine.ctx) == 0
    again = build_engine(before, sessions)
    list(replay(again, bars.filter(pl.col("session") <= SWITCH)))
    tail = bars.filter(pl.col("session") > SWITCH)
    assert [encode_alert(a) for a in replay(engine, tail)] == [
        encode_alert(a) for a in replay(again, tail)
    ]
