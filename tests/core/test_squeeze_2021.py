"""The January 2021 meme-stock squeeze, replayed with short interest as it was published."""

from __future__ import annotations

import msgspec
import pytest

from monitor.cli import load_rules
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
    si = read_short_interest(SHORT_INTEREST)
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
    si = read_short_interest(SHORT_INTEREST)
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
