"""A rule's threshold against computed returns: float noise does not decide (rules/context.py
TOLERANCE)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.calendar import nyse_sessions
from monitor.core.rules.spec import parse_rules
from monitor.replay import build_engine, replay

RULES = """
[[rules]]
id = "streak.3"
kind = "streak"
symbols = ["X"]
count = 3
min_return = 0.01

[[rules]]
id = "surge.1"
kind = "surge"
symbols = ["Y"]
window = 1
min_return = 0.10
"""


def test_exactly_at_a_threshold_is_neither_above_nor_short_of_it() -> None:
    """X rises exactly 1.00% a session (10.00 -> 10.10 -> 10.201 -> ...: 0.010000000000000009
    in binary), which is not "each up more than 1%": no streak (it fired). Y rises exactly 10%
    (10.01 -> 11.011: 0.09999999999999987), which reaches 10%: a surge (it did not fire)."""
    sessions = nyse_sessions(dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    days = sessions.frame.get_column("session").head(6).to_list()
    x = [round(10.0 * 1.01**n, 6) for n in range(6)]
    y = [10.01, 10.01, 10.01, 10.01, 10.01, 11.011]
    rows = [("X", d, c) for d, c in zip(days, x, strict=True)]
    rows += [("Y", d, c) for d, c in zip(days, y, strict=True)]
    bars = pl.DataFrame(rows, schema=["symbol", "session", "close"], orient="row").with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    fired = list(replay(build_engine(parse_rules(RULES), sessions), bars))
    assert [(a.rule, a.symbol, a.session) for a in fired] == [("surge.1", "Y", str(days[5]))]


def test_an_equal_gain_in_other_prices_is_not_a_larger_one() -> None:
    """Y gains exactly 10% twice: 10 -> 11 (0.10000000000000009 in binary), then 10.01 -> 11.011
    (0.09999999999999987). The second is not "its largest since" the first: float noise does
    not make the first larger. A truly larger gain (10 -> 11.5) is named."""
    sessions = nyse_sessions(dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    days = sessions.frame.get_column("session").head(7).to_list()
    y = [10.0, 11.5, 10.0, 11.0, 10.0, 10.01, 11.011]
    bars = pl.DataFrame(
        [("Y", d, c) for d, c in zip(days, y, strict=True)],
        schema=["symbol", "session", "close"],
        orient="row",
    ).with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    fired = list(replay(build_engine(parse_rules(RULES), sessions), bars))
    since = [(a.session, a.metrics["largest_since"]) for a in fired if a.rule == "surge.1"]
    assert since == [
        (str(days[1]), None),
        (str(days[3]), str(days[1])),
        (str(days[6]), str(days[1])),  # (not days[3]: an equal gain)
    ]


def test_rotation_compares_returns_over_the_same_sessions() -> None:
    """IWM and QQQ close alike every session (both fall 10% on the 4th), but QQQ's history
    lacks the 6th session: no rotation. Each return over its own bars made QQQ's 5-session
    return reach back one session further, still holding the fall: a 10-point 'rotation'."""
    rules = (
        '[[rules]]\nid = "rot"\nkind = "rotation"\nsmall = "IWM"\nlarge = "QQQ"\n'
        "window = 5\nmin_spread = 0.03\n"
    )
    sessions = nyse_sessions(dt.date(2024, 1, 2), dt.date(2024, 2, 29))
    days = sessions.frame.get_column("session").head(14).to_list()
    closes = [100.0, 100.0, 100.0, 90.0, *[90.0] * 10]
    rows = [(s, d, c) for s in ("IWM", "QQQ") for d, c in zip(days, closes, strict=True)]
    rows = [r for r in rows if not (r[0] == "QQQ" and r[1] == days[5])]
    bars = pl.DataFrame(rows, schema=["symbol", "session", "close"], orient="row").with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    assert list(replay(build_engine(parse_rules(rules), sessions), bars)) == []


def test_movers_tied_share_a_rank_and_a_flat_symbol_is_no_mover() -> None:
    """AAA and ZZZ both gain exactly 10% in a session (10 -> 11, and 10.01 -> 11.011: equal but
    for float noise), BBB 5%, FLAT nothing. With `top = 1` both leaders are "#1" (one was left
    out for the other's name); with `top = 10` BBB is #3, and FLAT, not up, is never a mover."""
    sessions = nyse_sessions(dt.date(2024, 1, 2), dt.date(2024, 1, 31))
    days = sessions.frame.get_column("session").head(2).to_list()
    closes = {"AAA": (10.0, 11.0), "ZZZ": (10.01, 11.011), "BBB": (10.0, 10.5), "FLAT": (10.0,) * 2}
    bars = pl.DataFrame(
        [(s, d, c) for s, cs in closes.items() for d, c in zip(days, cs, strict=True)],
        schema=["symbol", "session", "close"],
        orient="row",
    ).with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    for top, expected in (
        (1, [("AAA", 1), ("ZZZ", 1)]),
        (10, [("AAA", 1), ("BBB", 3), ("ZZZ", 1)]),
    ):
        rules = f'[[rules]]\nid = "mv"\nkind = "movers"\nuniverse = true\nwindow = 1\ntop = {top}\n'
        fired = list(replay(build_engine(parse_rules(rules), sessions), bars))
        assert sorted((a.symbol, a.metrics["rank"]) for a in fired) == expected
