"""What keeps a rule from firing besides the number its progress measures: a row that does not
hold never reads a full 1.0, and says what blocks it where the rule's family knows."""

from __future__ import annotations

import datetime as dt

import msgspec
import polars as pl
import pytest

from monitor.cli import load_rules
from monitor.core.engine import Engine
from monitor.core.progress import SHORT_OF_FIRING, Progress
from monitor.core.rules.spec import (
    BreadthRule,
    MoversRule,
    RotationRule,
    Rule,
    RulesFile,
    SqueezeRule,
)
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_daily
from monitor.replay import build_engine
from monitor.short_interest_io import read_short_interest
from tests.conftest import RULES, RUT, SHORT_INTEREST, SQUEEZE

END = dt.date(2024, 7, 16)


def progress_of(
    sessions: Sessions, rule: Rule, closes: dict[str, list[float | None]]
) -> dict[str, Progress]:
    """`rule`'s progress rows by symbol over daily `closes` ending on END (None: no bar)."""
    days = sessions.frame.filter(pl.col("session") <= END).get_column("session").to_list()
    rows = [
        {"symbol": s, "session": d, "open": c, "high": c, "low": c, "close": c, "volume": 1e6}
        for s, series in closes.items()
        for d, c in zip(days[-len(series) :], series, strict=True)
        if c is not None
    ]
    engine = Engine(RulesFile(rules=[rule]), sessions)
    engine.track_progress = True
    engine.ingest_daily(pl.DataFrame(rows).sort("symbol", "session"))
    engine.advance(sessions.close_of(END))
    return {p.symbol: p for p in engine.progress[rule.id]}


MOVERS = MoversRule(id="movers.top2", universe=True, window=1, top=2)
UP = [10.0, 10.0, 10.0]
CASES = [
    (
        MOVERS,
        {"A": [10.0, 13.0], "B": [10.0, 12.0], "C": [10.0, 11.0], "D": [10.0, 9.0]},
        {"A": (1.0, None), "B": (1.0, None), "C": (SHORT_OF_FIRING, "ranked #3, needs the top 2"),
         "D": (0.0, "not up")},
    ),
    (
        BreadthRule(id="breadth.thin", universe=True, window=1, min_share=0.5, min_symbols=3),
        {**{f"S{i}": [*UP, None] for i in range(9)}, "LAST": [*UP, 11.0]},
        {"universe": (SHORT_OF_FIRING, "bars of 10.0% of the symbols in, needs 90.0%")},
    ),
    (
        BreadthRule(id="breadth.few", universe=True, window=1, min_share=0.5, min_symbols=3),
        {"A": [10.0, 11.0], "B": [10.0, 11.0]},
        {"universe": (SHORT_OF_FIRING, "2 symbols with a return over one session, needs 3")},
    ),
    (
        RotationRule(id="rotation.down", window=1, min_spread=0.01, max_large_return=0.0),
        {"IWM": [100.0, 105.0], "QQQ": [100.0, 102.0]},
        {"IWM": (SHORT_OF_FIRING, "QQQ +2.0%, needs at most 0.0%")},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "closes", "want"), CASES, ids=[c[0].id for c in CASES])
def test_what_blocks_a_rule_besides_its_measure(
    sessions: Sessions,
    rule: Rule,
    closes: dict[str, list[float | None]],
    want: dict[str, tuple[float, str | None]],
) -> None:
    """A mover outside the top N or not up, breadth over a period with too few bars in or too
    few symbols, a rotation whose large caps rose past `max_large_return`: each reads short of
    1.0 (however far its measure went) and says why; a row that holds reads 1.0."""
    got = progress_of(sessions, rule, closes)
    assert {s: (p.progress, p.blocked) for s, p in got.items()} == want
    assert all(p.holds == (p.progress == 1.0) for p in got.values())


def test_a_squeeze_without_short_interest_or_under_its_line_is_blocked(
    sessions: Sessions,
) -> None:
    """On 2021-01-13 GME's +57% holds with the short interest as published, and without any
    (no file) is short of firing, blocked for it; a retailer under the 30% line, and AMC on
    1.4x its volume, or 1.2 days to cover where 5 are asked for, say so."""
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    squeeze = next(r for r in rules.rules if isinstance(r, SqueezeRule))
    day = dt.date(2021, 1, 13)
    bars = read_daily(DataSpec(path=str(SQUEEZE)), end=day).bars
    figures = read_short_interest(SHORT_INTEREST).figures
    got = {}
    for known, rule, si in (
        ("without", squeeze, None),
        ("with", squeeze, figures),
        ("days", msgspec.structs.replace(squeeze, min_days_to_cover=5.0), figures),
    ):
        engine = build_engine(RulesFile(rules=[rule]), sessions, short_interest=si)
        engine.track_progress = True
        engine.ingest_daily(bars)
        engine.advance(sessions.close_of(day))
        rows = {p.symbol: p for p in engine.progress["squeeze.daily"]}
        got[known] = {s: (rows[s].progress, rows[s].blocked) for s in ("GME", "AEO", "AMC")}
    assert got == {
        "without": {
            "GME": (SHORT_OF_FIRING, "short interest unknown"),
            "AEO": (0.0, "short interest unknown"),
            "AMC": (0.0, "short interest unknown"),
        },
        "with": {
            "GME": (1.0, None),
            "AEO": (0.0, "short interest 16.0%, needs 30.0%"),
            "AMC": (0.0, "volume 1.4x, needs 3.0x"),
        },
        "days": {
            "GME": (1.0, None),
            "AEO": (0.0, "short interest 16.0%, needs 30.0%"),
            "AMC": (0.0, "days to cover 1.2, needs 5.0"),
        },
    }


@pytest.mark.parametrize(
    ("day", "want"),
    [
        (dt.date(2024, 4, 12), (SHORT_OF_FIRING, False, "rise to the peak +4.9%, needs 10.0%")),
        (dt.date(2024, 8, 2), (1.0, True, None)),
        (dt.date(2024, 8, 5), (SHORT_OF_FIRING, False, "faded from its 2024-07-16 peak already")),
    ],
)
def test_a_fade_without_a_rally_or_already_fired_from_its_peak_is_blocked(
    sessions: Sessions, day: dt.date, want: tuple[float, bool, str | None]
) -> None:
    """^RUT's fade.10d: 5.7% off a peak in April 2024 that no 10% rally led to is blocked for
    it; the fade of 2024-08-02 holds; on 2024-08-05, 9.9% off the same peak, it cannot fire
    again from it."""
    rules = load_rules(RULES)
    assert isinstance(rules, RulesFile)
    engine = Engine(rules, sessions)
    engine.track_progress = True
    engine.ingest_daily(read_daily(DataSpec(path=str(RUT), symbol="^RUT"), end=day).bars)
    engine.advance(sessions.close_of(day))
    fade = engine.progress["fade.10d"][0]
    assert (fade.session, (fade.progress, fade.holds, fade.blocked)) == (day.isoformat(), want)
