"""The January 2021 meme-stock squeeze, replayed with short interest as it was published."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import polars as pl
import pytest

from monitor.calendar import nyse_sessions
from monitor.cli import load_rules, main
from monitor.core.model import Alert
from monitor.core.rules.spec import RulesFile, SqueezeRule
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_daily
from monitor.replay import build_engine, replay
from monitor.short_interest_io import read_short_interest
from tests.conftest import RULES, SHORT_INTEREST, SQUEEZE

RETAILERS = {"AEO", "ANF", "DKS", "GPRO", "JWN", "KSS"}


@pytest.fixture(scope="module")
def squeezes(sessions: Sessions) -> list[Alert]:
    """Squeeze alerts of a replay of the squeeze file through the shipped rules."""
    bars = read_daily(DataSpec(path=str(SQUEEZE))).bars
    si = read_short_interest(SHORT_INTEREST).figures
    engine = build_engine(load_rules(RULES), sessions, short_interest=si)  # type: ignore[arg-type]
    return [a for a in replay(engine, bars) if a.kind == "squeeze"]


def test_catches_gme_and_amc_in_january_2021(squeezes: list[Alert]) -> None:
    """The squeeze rule fires on GME and on AMC in January 2021."""
    jan = {a.symbol for a in squeezes if a.session.startswith("2021-01")}
    assert {"GME", "AMC"} <= jan


def test_gme_first_alert_uses_published_short_interest(squeezes: list[Alert]) -> None:
    """GME's first squeeze alert is 2021-01-13 (+57%), using the 2020-12-31 figure (138.4% of
    float), which counts from the 8th session after settlement: that very day."""
    first = next(a for a in squeezes if a.symbol == "GME")
    assert first.session == "2021-01-13"
    assert first.metrics["short_interest"] == pytest.approx(1.384)
    assert first.metrics["short_interest_date"] == "2020-12-31"
    assert first.metrics["return"] == pytest.approx(31.4 / 19.95 - 1)
    assert first.metrics["volume_ratio"] > 3.0


def test_a_longer_lag_uses_the_older_figure(sessions: Sessions) -> None:
    """With short_interest_lag = 9 the 2020-12-31 figure is not yet known on 2021-01-13, so the
    alert uses the 2020-12-15 one (135.74%); with lag 0 a figure counts from settlement."""
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    bars = read_daily(DataSpec(path=str(SQUEEZE), symbol="GME")).bars
    si = read_short_interest(SHORT_INTEREST).figures
    for lag, figure, settled in [(9, 1.3574, "2020-12-15"), (0, 1.384, "2020-12-31")]:
        squeeze = next(r for r in rules.rules if isinstance(r, SqueezeRule))
        only = RulesFile(rules=[msgspec.structs.replace(squeeze, short_interest_lag=lag)])
        engine = build_engine(only, sessions, short_interest=si)
        first = next(a for a in replay(engine, bars) if a.session == "2021-01-13")
        assert first.metrics["short_interest"] == pytest.approx(figure)
        assert first.metrics["short_interest_date"] == settled


def test_never_fires_on_ordinary_retailers(squeezes: list[Alert]) -> None:
    """None of the six ordinary retailers ever fires the squeeze rule."""
    assert [a for a in squeezes if a.symbol in RETAILERS] == []


def test_unknown_short_interest_is_skipped_by_default(squeezes: list[Alert]) -> None:
    """Every squeeze alert had a known short-interest figure (unknown ones are skipped)."""
    assert all(a.metrics["short_interest_known"] is True for a in squeezes)


def test_bars_starting_after_the_figures_use_the_latest_published_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay of GME's bars from 2021-01-04 with the short-interest file from 2020-11: the
    figures settled before the bars' first year count as they did (the calendar reaches back to
    them), so 2021-01-13 fires with the 2020-12-31 figure, as from the whole file. It used to
    give every earlier figure the same start, miss 2021-01-13 and report 2020-11-30's."""
    cut = tmp_path / "gme_2021.csv"
    read_daily(DataSpec(path=str(SQUEEZE), symbol="GME"), start=dt.date(2021, 1, 4)).bars.drop(
        "symbol"
    ).write_csv(cut)
    rules = tmp_path / "squeeze.toml"  # (a 5-session volume average: bars start in January)
    rules.write_text(
        '[[rules]]\nid = "sq"\nkind = "squeeze"\nsymbols = ["GME"]\nmin_return = 0.15\n'
        "volume_ratio = 3\nvolume_window = 5\nmin_short_interest = 0.30\n"
    )
    argv = ["replay", "--rules", str(rules), "--data", f"GME={cut}"]
    assert main([*argv, "--short-interest", str(SHORT_INTEREST)]) == 0
    alerts = [
        msgspec.json.decode(line, type=Alert) for line in capsys.readouterr().out.splitlines()
    ]
    first = next(a for a in alerts if a.kind == "squeeze")
    assert first.session == "2021-01-13"
    assert first.metrics["short_interest_date"] == "2020-12-31"
    assert first.metrics["short_interest"] == pytest.approx(1.384)


def test_a_calendar_starting_after_the_figures_takes_the_latest_of_them(sessions: Sessions) -> None:
    """Figures settled before the calendar's first session all count from its `lag`-th
    session (late rather than early); of those, the one settled last is the one used."""
    late_calendar = nyse_sessions(dt.date(2021, 1, 1))
    bars = read_daily(DataSpec(path=str(SQUEEZE), symbol="GME"), start=dt.date(2021, 1, 4)).bars
    si = read_short_interest(SHORT_INTEREST).figures
    rule = SqueezeRule(
        id="sq", symbols=["GME"], min_return=0.15, volume_ratio=3, volume_window=5,
        min_short_interest=0.30,
    )  # fmt: skip
    engine = build_engine(RulesFile(rules=[rule]), late_calendar, short_interest=si)
    squeezes = [a for a in replay(engine, bars) if a.kind == "squeeze"]
    jan = [a for a in squeezes if a.session < "2021-01-28"]  # (before the 01-15 figure counts)
    assert jan and {a.metrics["short_interest_date"] for a in jan} == {"2020-12-31"}


def test_a_figure_past_its_max_age_is_unknown(sessions: Sessions) -> None:
    """AMC's figures stop at 2021-01-15 here: with short_interest_max_age = 20, its spring 2021
    jumps (15-20% of float short: a rule asking 10%) have no figure (skipped; marked unknown
    with unknown_short_interest = "fire"), where the default 40 sessions would also have
    refused a figure five months old."""
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    squeeze = next(r for r in rules.rules if isinstance(r, SqueezeRule))
    bars = read_daily(DataSpec(path=str(SQUEEZE))).bars.filter(pl.col("symbol") == "AMC")
    si = read_short_interest(SHORT_INTEREST).figures
    cut = si.filter(
        (pl.col("symbol") != "AMC") | (pl.col("short_interest_date") <= dt.date(2021, 1, 15))
    )

    def run(short_interest: pl.DataFrame, **params: object) -> list[Alert]:
        rule = msgspec.structs.replace(squeeze, min_short_interest=0.10, **params)
        engine = build_engine(RulesFile(rules=[rule]), sessions, short_interest=short_interest)
        return list(replay(engine, bars))

    everything = run(si, unknown_short_interest="fire")
    assert any(a.session >= "2021-05-01" and a.metrics["short_interest_known"] for a in everything)
    stale = run(cut, unknown_short_interest="fire", short_interest_max_age=20)
    late = [a for a in stale if a.session >= "2021-05-01"]
    assert late and all(a.metrics["short_interest_known"] is False for a in late)
    assert all(a.metrics["short_interest"] is None for a in late)
    early = [a for a in stale if "2021-01-13" <= a.session <= "2021-02-10"]
    assert early and all(a.metrics["short_interest_known"] for a in early)
    skipped = run(cut, short_interest_max_age=20)
    assert not [a for a in skipped if a.session >= "2021-05-01"]


def test_a_max_age_not_above_the_lag_is_refused() -> None:
    from monitor.core.rules.spec import RuleError, parse_rules

    text = '[[rules]]\nid = "s"\nkind = "squeeze"\nuniverse = true\nshort_interest_max_age = 8\n'
    path = r'rules\[0\] \(id "s"\)\.short_interest_max_age'
    with pytest.raises(RuleError, match=path + ": must be more than"):
        parse_rules(text)


def test_a_figure_published_blank_is_unknown_and_so_is_its_date(sessions: Sessions) -> None:
    """GME's 2020-12-31 row with its percent_of_float blanked (as the file publishes ETFs and
    symbols without a float): on 2021-01-13, with unknown_short_interest = "fire", the squeeze
    is marked unknown, with no short interest and no settlement date (docs/alerts.md: null
    when unknown). It used to carry the blank row's date, 2020-12-31, beside `known: false`."""
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    squeeze = next(r for r in rules.rules if isinstance(r, SqueezeRule))
    bars = read_daily(DataSpec(path=str(SQUEEZE), symbol="GME")).bars
    si = read_short_interest(SHORT_INTEREST).figures
    blank = (pl.col("symbol") == "GME") & (pl.col("short_interest_date") == dt.date(2020, 12, 31))
    si = si.with_columns(pl.when(~blank).then(pl.col("percent_of_float")).alias("percent_of_float"))
    rule = msgspec.structs.replace(squeeze, unknown_short_interest="fire")
    engine = build_engine(RulesFile(rules=[rule]), sessions, short_interest=si)
    first = next(a for a in replay(engine, bars) if a.session == "2021-01-13")
    assert first.metrics["short_interest_known"] is False
    assert first.metrics["short_interest"] is None
    assert first.metrics["short_interest_date"] is None
