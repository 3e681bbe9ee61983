"""How close each rule is: progress on the last closed period, for the live view."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.cli import load_rules
from monitor.core.engine import Engine
from monitor.core.progress import fraction, measured, records
from monitor.core.rules.spec import RulesFile, StreakRule
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_daily
from tests.conftest import DATA, RULES, RUT

IWM = DATA / "iwm_daily_adj_2023_2024.csv"


@pytest.mark.parametrize(
    ("value", "threshold", "variant", "want"),
    [
        (3.0, 5.0, "", 0.6),
        (0.098, 0.10, "", pytest.approx(0.98)),
        (0.12, 0.10, "", 1.0),
        (-0.02, 0.10, "", 0.0),
        (None, 0.10, "", 0.0),
        (-0.125, -0.10, "near_high", pytest.approx(0.8)),
        (-0.05, -0.10, "near_high", 1.0),
        (-0.15, -0.20, "below_high", pytest.approx(0.75)),
        (0.01, -0.05, "", 0.0),
    ],
)
def test_fraction(value: float | None, threshold: float, variant: str, want: object) -> None:
    """Progress counts toward the threshold from zero, and toward the line for near_high."""
    frame = pl.DataFrame(
        {"value": [value], "threshold": [threshold], "variant": [variant]},
        schema={"value": pl.Float64, "threshold": pl.Float64, "variant": pl.String},
    )
    got = frame.select(fraction(pl.col("value"), pl.col("threshold"), pl.col("variant")))
    assert got.item() == want


def test_progress_the_day_before_the_july_2024_streak_fired(sessions: Sessions) -> None:
    """On 2024-07-15 ^RUT stood at 4 of 5 up sessions, its 5-session gain (+7.3%) short of the
    10% trigger, and more than 10% below its high, just outside the line."""
    bars = read_daily(DataSpec(path=str(RUT), symbol="^RUT"), end=dt.date(2024, 7, 15)).bars
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    engine = Engine(rules, sessions)
    engine.track_progress = True
    engine.ingest_daily(bars)
    engine.advance(sessions.close_of(dt.date(2024, 7, 15)))
    streak = engine.progress["streak.daily"][0]
    assert (streak.symbol, streak.session, streak.value, streak.threshold) == (
        "^RUT", "2024-07-15", 4.0, 5.0,
    )  # fmt: skip
    assert streak.progress == 0.8 and not streak.holds
    surge = engine.progress["surge.5d"][0]
    assert surge.value == pytest.approx(2187.02 / 2038.67 - 1, abs=1e-5)
    assert surge.progress == pytest.approx(surge.value / 0.10)
    near = next(p for p in engine.progress["drawdown.high"] if p.variant == "near_high")
    closes = bars.filter(pl.col("session") <= dt.date(2024, 7, 15)).get_column("close")
    assert near.value == pytest.approx(closes[-1] / closes.max() - 1)
    assert near.threshold == -0.10 and not near.holds


def test_a_symbol_that_missed_the_latest_session_is_stale(sessions: Sessions) -> None:
    """With IWM's bar of 2024-07-17 in and ^RUT's not, ^RUT's rows keep their session
    (2024-07-16, its 5 of 5 day) but are stale and hold nothing: the gap ended the run (a
    streak does not reach across it). IWM's rows are live."""
    rut = read_daily(DataSpec(path=str(RUT), symbol="^RUT"), end=dt.date(2024, 7, 16)).bars
    iwm = read_daily(DataSpec(path=str(IWM), symbol="IWM"), end=dt.date(2024, 7, 17)).bars
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    engine = Engine(rules, sessions)
    engine.track_progress = True
    engine.ingest_daily(pl.concat([iwm, rut]))
    engine.advance(sessions.close_of(dt.date(2024, 7, 17)))
    streak = {p.symbol: p for p in engine.progress["streak.daily"]}
    assert (streak["^RUT"].session, streak["^RUT"].value) == ("2024-07-16", 5.0)
    assert (streak["^RUT"].stale, streak["^RUT"].holds) == (True, False)
    assert (streak["IWM"].session, streak["IWM"].stale) == ("2024-07-17", False)
    near = [p for p in engine.progress["drawdown.high"] if p.variant == "near_high"]
    assert [(p.symbol, p.stale, p.holds) for p in near] == [
        ("IWM", False, True), ("^RUT", True, False),
    ]  # fmt: skip


def test_a_symbol_is_stale_against_the_rules_latest_in_every_piece() -> None:
    """A universe's progress comes a piece of symbols at a time: a symbol is stale against the
    latest session of the whole rule, not of its own piece (whose symbols may all lag)."""
    rule = StreakRule(id="streak.wide", universe=True, count=2)

    def piece(symbols: list[str], day: dt.date) -> pl.DataFrame:
        cond = pl.DataFrame(
            {"symbol": symbols, "variant": [""] * len(symbols), "session": [day] * len(symbols),
             "streak": [2] * len(symbols), "cond": [True] * len(symbols)},
        )  # fmt: skip
        return measured(cond, rule)

    rows = records([piece(["B", "C"], dt.date(2024, 7, 15)), piece(["A"], dt.date(2024, 7, 16))])
    assert [(p.symbol, p.session, p.stale, p.holds) for p in rows] == [
        ("A", "2024-07-16", False, True),
        ("B", "2024-07-15", True, False),
        ("C", "2024-07-15", True, False),
    ]
