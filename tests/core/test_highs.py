"""Rules that name a high (fade's peak, drawdown's high over a lookback) against loops over
the closes: the firings, the high, its date and the rise to it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from monitor.core.rules.spec import DrawdownRule, FadeRule, RulesFile
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_many
from monitor.replay import build_engine, replay
from tests.conftest import RUT

RULE = FadeRule(id="fade.t", universe=True, rise=0.08, rise_window=5, drop=0.05, within=6)


def walks(sessions: Sessions, seed: int) -> pl.DataFrame:
    """Three symbols' closes on a grid of 0.5 (equal closes are common) over 150 sessions,
    swinging enough for rallies and fades."""
    days = sessions.frame.get_column("session")
    days = days.filter(days.dt.year() == 2019).head(150)
    rng = np.random.default_rng(seed)
    rows = []
    for symbol in ("AAA", "BBB", "CCC"):
        steps = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5], size=len(days))
        closes = np.maximum(20.0 + np.cumsum(steps), 5.0)
        rows += [(symbol, d, c) for d, c in zip(days, closes, strict=True)]
    bars = pl.DataFrame(rows, schema=["symbol", "session", "close"], orient="row")
    return bars.with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1000.0)
    )


def expected(bars: pl.DataFrame, rule: FadeRule) -> set[tuple[str, str, float, str, float]]:
    """(symbol, session, peak, peak date, rise to the peak) of every onset of the condition:
    the latest highest close of the last `within` periods and the current one, risen to by at
    least `rise` from the lowest close of the `rise_window` periods before it and the peak
    itself (two closes at least), and `drop` or more above the current close; once per peak
    (a fade that recovers and fades again from the same peak fires once)."""
    within = rule.within or rule.rise_window
    out = set()
    for (symbol,), group in bars.group_by("symbol"):
        closes, days = group["close"].to_list(), group["session"].to_list()
        before = True  # (a condition true at the first period is no onset)
        faded_from: set[object] = set()  # peaks already faded from
        for i, close in enumerate(closes):
            first = max(0, i - within)
            peak = max(closes[first : i + 1])
            j = max(k for k in range(first, i + 1) if closes[k] == peak)
            low = min(closes[max(0, j - rule.rise_window) : j + 1])
            rise = peak / low - 1.0 if j > 0 else None
            cond = rise is not None and rise >= rule.rise and close / peak - 1.0 <= -rule.drop
            began = cond and not (i > 0 and before)
            if began and days[j] not in faded_from and i > 0:
                out.add((str(symbol), str(days[i]), peak, str(days[j]), round(rise, 12)))
            if began:
                faded_from.add(days[j])
            before = cond
    return out


@pytest.mark.parametrize("seed", range(6))
def test_fade_fires_as_a_loop_over_the_closes_says(sessions: Sessions, seed: int) -> None:
    bars = walks(sessions, seed)
    engine = build_engine(RulesFile(rules=[RULE]), sessions)
    got = {
        (
            a.symbol,
            a.session,
            a.metrics["high"],
            a.metrics["high_date"],
            round(a.metrics["rise"], 12),
        )
        for a in replay(engine, bars)
    }
    want = expected(bars, RULE)
    assert len(want) >= 3  # (the walks do rally and fade)
    assert got == want


def test_drawdown_over_a_lookback_names_the_window_high_and_its_date(sessions: Sessions) -> None:
    """A drawdown rule with `lookback` on ^RUT since 1987: every alert's high is the highest
    close of the last `lookback` sessions and `high_date` its latest session, and every text
    names them (a high set below an earlier, since dropped, high once gave no date and no text)."""
    rule = DrawdownRule(
        id="dd.t", symbols=["^RUT"], max_below_high=0.02, min_below_high=0.15, lookback=252
    )
    bars = read_many([DataSpec(path=str(RUT), symbol="^RUT")]).bars
    closes, days = bars["close"].to_list(), [str(d) for d in bars["session"]]
    row = {day: i for i, day in enumerate(days)}
    alerts = list(replay(build_engine(RulesFile(rules=[rule]), sessions), bars))
    onsets = set()
    for variant, holds in (
        ("near_high", lambda d: d >= -0.02),
        ("below_high", lambda d: d <= -0.15),
    ):
        before = True  # (a condition true at the first period is no onset)
        for i, close in enumerate(closes):
            now = holds(close / max(closes[max(0, i - 251) : i + 1]) - 1.0)
            if now and not before:
                onsets.add((days[i], variant))
            before = now
    assert {(a.session, a.metrics["variant"]) for a in alerts} == onsets
    assert len(alerts) > 100
    for alert in alerts:
        i = row[alert.session]
        window = closes[max(0, i - 251) : i + 1]
        at = max(0, i - 251) + max(k for k, c in enumerate(window) if c == max(window))
        assert (alert.metrics["high"], alert.metrics["high_date"]) == (closes[at], days[at])
        assert f"{closes[at]:,.2f} on {days[at]}" in alert.text
