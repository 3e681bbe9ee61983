"""Rules that compare symbols (breadth, movers, rotation) compare the bars of one period (a
session, a week, a minute); breadth and movers wait for the universe's bars of a period: a
feed's daily bars come a symbol at a time, and the first few are not the universe."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from monitor.cli import load_rules
from monitor.core.model import decode_alert
from monitor.core.sessions import Sessions
from monitor.replay import build_engine, replay
from tests.core.test_two_paths import symbol_by_symbol

LAST = dt.date(2024, 7, 16)
SYMBOLS = [f"S{i:02d}" for i in range(20)]
RISERS = SYMBOLS[:5]  # +30%, +28%, ... on LAST; the rest -5%

RULES = """
[[rules]]
id = "breadth.5d"
kind = "breadth"
universe = true
timeframe = "1d"
window = 5
min_share = 0.8
min_symbols = 3
{extra}

[[rules]]
id = "movers.5d"
kind = "movers"
universe = true
timeframe = "1d"
window = 5
top = 3
min_return = 0.1
{extra}
"""


def universe(sessions: Sessions) -> pl.DataFrame:
    """Twenty symbols flat at 10 for 29 sessions, then on LAST five of them jumping (the more
    the lower their number) and the other fifteen falling 5%."""
    days = sessions.frame.filter(pl.col("session") <= LAST).tail(30).get_column("session")
    rows = []
    for i, symbol in enumerate(SYMBOLS):
        end = 10 * (1.30 - 0.02 * i) if symbol in RISERS else 9.5
        for day in days:
            close = end if day == LAST else 10.0
            rows.append((symbol, day, close, close, close, close, 1_000.0))
    columns = ["symbol", "session", "open", "high", "low", "close", "volume"]
    return pl.DataFrame(rows, schema=columns, orient="row").sort("symbol", "session")


def rules_file(tmp_path: Path, min_coverage: float | None = None) -> Path:
    extra = "" if min_coverage is None else f"min_coverage = {min_coverage}"
    path = tmp_path / f"rules-{min_coverage}.toml"
    path.write_text(RULES.format(extra=extra))
    return path


# The risers first, the lowest first: a movers' top 3 of the first few is not the universe's.
ORDER = [*reversed(RISERS), *SYMBOLS[5:]]


def test_the_first_bars_of_a_session_are_not_the_universe(
    sessions: Sessions, tmp_path: Path
) -> None:
    """The session's bars a symbol per step: breadth and movers fire as the whole session in
    one batch does (movers on S00, S01 and S02; breadth, 5 of 20 up, not at all) once 90% of
    the symbols are in, not on the first few."""
    bars = universe(sessions)
    expected, got, _ = symbol_by_symbol(sessions, rules_file(tmp_path), bars, LAST, ORDER)
    assert sorted(decode_alert(a).symbol for a in expected) == ["S00", "S01", "S02"]
    assert got == expected


def test_without_the_wait_the_first_bars_fire_falsely(sessions: Sessions, tmp_path: Path) -> None:
    """`min_coverage = 0`: the first three risers in are the top 3, and all five of five up is
    breadth: alerts the whole session does not make (what the wait is for)."""
    bars = universe(sessions)
    path = rules_file(tmp_path, 0.0)
    _, got, _ = symbol_by_symbol(sessions, path, bars, LAST, ORDER)
    fired = {(decode_alert(a).rule, decode_alert(a).symbol) for a in got}
    assert {("movers.5d", "S04"), ("movers.5d", "S03"), ("breadth.5d", "universe")} <= fired


@pytest.mark.parametrize(("missing", "fires"), [(10, False), (1, True)])
def test_a_session_with_too_few_bars_fires_no_cross_section(
    sessions: Sessions, tmp_path: Path, missing: int, fires: bool
) -> None:
    """Over history: a session whose file has bars of only half the symbols (a gap in the data)
    fires no movers alert; one missing a symbol (95% of the session before) still does."""
    bars = universe(sessions)
    gone = SYMBOLS[-missing:]
    bars = bars.filter(~((pl.col("session") == LAST) & pl.col("symbol").is_in(gone)))
    engine = build_engine(load_rules(rules_file(tmp_path)), sessions)  # type: ignore[arg-type]
    last = [a for a in replay(engine, bars) if a.session == str(LAST)]
    assert bool(last) is fires
    assert all(a.rule == "movers.5d" for a in last)


def test_a_session_not_evaluated_neither_ends_nor_starts_an_episode(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Every symbol rises every session, and a session in the middle has bars of only half of
    them: breadth and movers skip it (too few bars) and fire once each, at the first session
    their condition holds, not again after the hole. The skipped session used to end the
    episode: each fired a second time, with the first as its `prior_occurrences`."""
    days = sessions.frame.filter(pl.col("session") <= LAST).tail(30).get_column("session")
    hole = days[20]
    rows = [
        (symbol, day, close, close, close, close, 1_000.0)
        for i, symbol in enumerate(SYMBOLS)
        for n, day in enumerate(days)
        for close in [10.0 * (1.01 + 0.001 * i) ** n]
        if not (day == hole and i >= 10)
    ]
    columns = ["symbol", "session", "open", "high", "low", "close", "volume"]
    bars = pl.DataFrame(rows, schema=columns, orient="row").sort("symbol", "session")
    engine = build_engine(load_rules(rules_file(tmp_path)), sessions)  # type: ignore[arg-type]
    fired = replay(engine, bars)
    assert {(a.rule, a.session) for a in fired} == {
        ("breadth.5d", str(days[5])),
        ("movers.5d", str(days[5])),
    }
    assert all(a.history is not None and a.history.prior_occurrences == 0 for a in fired)


def test_min_coverage_must_be_a_share(tmp_path: Path) -> None:
    """`min_coverage` is a share: 1.5 is refused with the file and the rule's path."""
    from monitor.errors import ConfigError

    path = r'rules\[0\] \(id "breadth\.5d"\)\.min_coverage'
    with pytest.raises(ConfigError, match=path + r": Expected `float` <= 1\.0"):
        load_rules(rules_file(tmp_path, 1.5))


def test_replay_names_the_sessions_a_rule_did_not_evaluate(
    sessions: Sessions, tmp_path: Path
) -> None:
    """`replay` over a file missing half the symbols' bars of LAST says, per breadth and movers
    rule, how many sessions it did not evaluate and the first; a whole file says nothing."""
    from tests.test_commands import cli

    bars = universe(sessions)
    thin = bars.filter(~((pl.col("session") == LAST) & pl.col("symbol").is_in(SYMBOLS[10:])))
    for frame, name in ((thin, "thin.csv"), (bars, "whole.csv")):
        frame.write_csv(tmp_path / name)
    rules = str(rules_file(tmp_path))
    res = cli("replay", "--rules", rules, "--data", str(tmp_path / "thin.csv"))
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "did not evaluate" in line]
    tail = "(the first 2024-07-16): bars of fewer than 90% of the symbols of the periods before"
    assert said == [
        f"market-monitor: rule {rule} did not evaluate 1 session {tail} (min_coverage)"
        for rule in ("breadth.5d", "movers.5d")
    ]
    res = cli("replay", "--rules", rules, "--data", str(tmp_path / "whole.csv"))
    assert res.returncode == 0 and "did not evaluate" not in res.stderr


def test_minute_movers_and_breadth_compare_symbols_minute_by_minute(sessions: Sessions) -> None:
    """Minute rules compare the symbols' bars of each minute (not the whole day's at once):
    AAA's +5% in the sixth minute and BBB's +6% in the ninth are each the top mover of their
    minute, and breadth (two of three up over the minute) fires in both minutes."""
    from monitor.core.engine import Engine
    from monitor.core.model import MINUTE_SCHEMA, FeedBatch
    from monitor.core.rules.spec import BreadthRule, MoversRule, RulesFile

    movers = MoversRule(
        id="movers.1m", universe=True, timeframe="1m", window=1, top=1, min_return=0.03
    )
    breadth = BreadthRule(
        id="breadth.1m", universe=True, timeframe="1m", window=1, min_share=0.6, min_symbols=3
    )
    start = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)
    jumps = {("AAA", 5): 1.05, ("CCC", 5): 1.01, ("BBB", 8): 1.06, ("CCC", 8): 1.01}
    rows = []
    for symbol in ("AAA", "BBB", "CCC"):
        price = 10.0
        for m in range(10):
            price *= jumps.get((symbol, m), 1.0)
            at = start + dt.timedelta(minutes=m)
            rows.append((symbol, at, price, price, price, price, 100.0))
    batch = FeedBatch.empty("t")
    batch.minute_bars = pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")
    engine = Engine(RulesFile(rules=[movers, breadth]), sessions)
    engine.ingest(batch)
    alerts = engine.advance(start + dt.timedelta(minutes=10)).alerts
    assert sorted((a.rule, a.symbol, a.ts) for a in alerts) == [
        ("breadth.1m", "universe", "2024-07-16T14:06:00Z"),
        ("breadth.1m", "universe", "2024-07-16T14:09:00Z"),
        ("movers.1m", "AAA", "2024-07-16T14:06:00Z"),
        ("movers.1m", "BBB", "2024-07-16T14:09:00Z"),
    ]


def test_minute_rotation_pairs_each_minute_with_the_same_minute(sessions: Sessions) -> None:
    """A 1m rotation compares IWM's return over the minute with QQQ's over the same minute
    (not with every minute of the day): IWM's +2% in the sixth minute and QQQ's -2% in the
    ninth each fire, at that minute, with that spread."""
    from monitor.core.engine import Engine
    from monitor.core.model import MINUTE_SCHEMA, FeedBatch
    from monitor.core.rules.spec import RotationRule, RulesFile

    rule = RotationRule(
        id="rotation.1m", small="IWM", large="QQQ", timeframe="1m", window=1, min_spread=0.01
    )
    start = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)
    rows = []
    for symbol in ("IWM", "QQQ"):
        for m in range(10):
            price = 100.0
            if (symbol, m >= 5) == ("IWM", True) or (symbol, m >= 8) == ("QQQ", True):
                price = 102.0 if symbol == "IWM" else 98.0
            at = start + dt.timedelta(minutes=m)
            rows.append((symbol, at, price, price, price, price, 100.0))
    batch = FeedBatch.empty("t")
    batch.minute_bars = pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")
    engine = Engine(RulesFile(rules=[rule]), sessions)
    engine.ingest(batch)
    alerts = engine.advance(start + dt.timedelta(minutes=10)).alerts
    assert [(a.symbol, a.ts, round(a.metrics["spread"], 6)) for a in alerts] == [
        ("IWM", "2024-07-16T14:06:00Z", 0.02),
        ("IWM", "2024-07-16T14:09:00Z", 0.02),
    ]


def test_replay_names_the_weeks_a_weekly_rule_did_not_evaluate(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Weekly breadth and movers over a file missing half the symbols for the whole week to
    2024-07-12: `replay` names that week for each, once."""
    from tests.test_commands import cli

    bars = universe(sessions)
    week = pl.col("session").is_between(dt.date(2024, 7, 8), dt.date(2024, 7, 12))
    bars = bars.filter(~(week & pl.col("symbol").is_in(SYMBOLS[10:])))
    bars.write_csv(tmp_path / "thin.csv")
    rules = tmp_path / "weekly.toml"
    rules.write_text(RULES.format(extra="").replace('timeframe = "1d"', 'timeframe = "1w"'))
    res = cli("replay", "--rules", str(rules), "--data", str(tmp_path / "thin.csv"))
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "did not evaluate" in line]
    assert [line.split(": bars of")[0] for line in said] == [
        f"market-monitor: rule {rule} did not evaluate 1 week (the first 2024-07-12)"
        for rule in ("breadth.5d", "movers.5d")
    ]


def test_sessions_as_thin_as_the_one_before_are_not_evaluated_either(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Half the symbols missing three sessions in a row (a feed that lost them, a hole in the
    file): none of the three is a cross-section of the universe. Each used to be compared with
    the session before alone, so the second and third counted as whole and movers ranked the
    half that was left (S00-S02 on LAST)."""
    bars = universe(sessions)
    days = bars.get_column("session").unique().sort()
    thin = days.tail(3).to_list()  # (LAST and the two sessions before it)
    bars = bars.filter(~(pl.col("session").is_in(thin) & pl.col("symbol").is_in(SYMBOLS[10:])))
    engine = build_engine(load_rules(rules_file(tmp_path)), sessions)  # type: ignore[arg-type]
    assert [a for a in replay(engine, bars) if a.session >= str(thin[0])] == []
