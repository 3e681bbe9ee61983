"""The lines a step hands out (`Emitted.new`): in LINE_ORDER (ts, period, rule, a movers rule's
rank, symbol, id) whatever order they come in, each id once."""

from __future__ import annotations

import random

import polars as pl

from monitor.core.emitted import Emitted
from monitor.core.payload import LINE_SCHEMA

Key = tuple[str, int, str, int, str, str]  # (ts, period, rule, order, symbol, id)


def lines(rows: list[Key]) -> pl.DataFrame:
    """Alert lines of LINE_ORDER's keys, the json a copy of the id."""
    return pl.DataFrame(
        [(*row, f'{{"id":"{row[5]}"}}') for row in rows], schema=LINE_SCHEMA, orient="row"
    )


def test_lines_come_out_in_line_order() -> None:
    """Three rules' lines, each in time order (an instant's by symbol, as the engine makes
    them), or shuffled, or with a rule's variants out of id order: the same sorted lines; a
    movers rule's by rank (not by symbol, as they come), a minute rule's before the daily
    ones' of the same instant; an id seen twice passes once."""
    instants = [f"2024-07-{d:02d}T20:00:00Z" for d in (15, 16, 17)]
    rank = {"AAA": 3, "BBB": 1, "^RUT": 2}
    rules = {"streak.daily": (1, False), "drawdown.high": (1, False), "m.movers": (0, True)}
    keys: list[Key] = [
        (ts, period, rule, rank[symbol] if movers else 0, symbol, f"{rule}-{symbol}-{ts}-{v}")
        for ts in instants
        for rule, (period, movers) in rules.items()
        for symbol in ("AAA", "BBB", "^RUT")
        for v in ("b", "a")  # (out of id order within a symbol)
    ]
    expected = sorted(keys)
    by_rule = [[k for k in keys if k[2] == rule] for rule in rules]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    for parts in (
        by_rule,
        by_rule[::-1],
        [shuffled],
        [*by_rule, by_rule[1][:4]],
    ):
        out = Emitted().new([lines(p) for p in parts])
        assert out.select("ts", "period", "rule", "order", "symbol", "id").rows() == expected
        assert out.get_column("json").to_list() == [f'{{"id":"{k[5]}"}}' for k in expected]
    firsts = [k[4] for k in expected if k[2] == "m.movers" and k[0] == instants[0]]
    assert firsts == ["BBB", "BBB", "^RUT", "^RUT", "AAA", "AAA"]
