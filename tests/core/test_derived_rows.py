"""Stored bars: whether incoming bars are in order (`bar_history.checked_daily`), and the
rules' frame of them (`bar_history.derived`): `idx`, `reach` and `num` as their definitions
say, row by row, over symbols with sessions missing and a day that is no session."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.bar_history import checked_daily, derived
from monitor.core.model import DAILY_SCHEMA
from monitor.core.sessions import Sessions


def by_definition(symbols: list[str], numbers: list[int | None]) -> list[tuple[int, int]]:
    """Per row (sorted by symbol): `idx`, rows since the symbol's first; `reach`, rows since
    the latest row that opens a run of consecutive session numbers (a symbol's first row, or
    one whose number is not one more than the row before's; an unknown number opens none)."""
    out: list[tuple[int, int]] = []
    first = opened = 0
    for row, (symbol, number) in enumerate(zip(symbols, numbers, strict=True)):
        new_symbol = row == 0 or symbol != symbols[row - 1]
        before = numbers[row - 1] if row else None
        step = number is not None and before is not None and number - before != 1
        if new_symbol:
            first = row
        if new_symbol or step:
            opened = row
        out.append((row - first, row - opened))
    return out


def test_idx_reach_and_num_follow_their_definitions(sessions: Sessions) -> None:
    """Three symbols: A whole, B with sessions missing twice, C of one bar; and a Saturday
    among B's dates (no session: no number, and it neither opens nor breaks a run)."""
    days = sessions.frame.filter(pl.col("session") >= dt.date(2025, 6, 2)).get_column("session")
    a = [("A", d) for d in days[:12]]
    b = [("B", d) for i, d in enumerate(days[:20]) if i not in (3, 4, 11)]
    b.insert(8, ("B", dt.date(2025, 6, 14)))  # (a Saturday, between B's sessions)
    c = [("C", days[5])]
    rows = [(s, d, 10.0, 10.0, 10.0, 10.0, 1.0) for s, d in [*a, *b, *c]]
    frame = derived(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row"), "1d", sessions)

    numbers = frame.get_column("num").to_list()
    number_of = {d: n for n, d in enumerate(sessions.frame.get_column("session"))}
    assert numbers == [number_of.get(d) for _, d in [*a, *b, *c]]
    expected = by_definition(frame.get_column("symbol").to_list(), numbers)
    assert list(zip(frame["idx"], frame["reach"], strict=True)) == expected
    assert frame.schema["idx"] == frame.schema["reach"] == frame.schema["num"] == pl.Int64


def test_incoming_bars_are_said_to_be_in_order_only_when_they_are(sessions: Sessions) -> None:
    """`checked_daily` says bars are strictly in order by symbol and session exactly when they
    are (and hold no null symbol or session): then they are stored as they come, else sorted."""
    day = [d for d in sessions.frame.get_column("session") if d >= dt.date(2025, 6, 2)][:3]
    cases: list[tuple[list[tuple[str | None, dt.date | None]], bool]] = [
        ([("A", day[0]), ("A", day[1]), ("B", day[0]), ("BB", day[2])], True),
        ([("A", day[0])], True),
        ([("A", day[0]), ("A", day[0])], False),  # (a repeat)
        ([("A", day[1]), ("A", day[0])], False),
        ([("B", day[0]), ("A", day[1])], False),
        ([("A", day[0]), ("B", day[1]), ("A", day[2])], False),  # (A's sessions apart)
        ([("B", day[0]), (None, day[1]), ("A", day[2])], False),
        ([("A", day[0]), ("A", None), ("A", day[1])], False),
    ]
    for keys, in_order in cases:
        rows = [(s, d, 10.0, 10.0, 10.0, 10.0, 1.0) for s, d in keys]
        frame = pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")
        assert checked_daily(frame, sessions)[2] is in_order, keys
