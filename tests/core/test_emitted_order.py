"""The lines a step hands out (`Emitted.new`): sorted by ts, rule, symbol and id whatever order
they come in, each id once."""

from __future__ import annotations

import random

import polars as pl

from monitor.core.emitted import Emitted
from monitor.core.payload import LINE_SCHEMA


def lines(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    """Alert lines of (ts, rule, symbol, id), the json a copy of the id."""
    return pl.DataFrame(
        [(*row, f'{{"id":"{row[3]}"}}') for row in rows], schema=LINE_SCHEMA, orient="row"
    )


def test_lines_come_out_sorted_by_ts_rule_symbol_and_id() -> None:
    """Two rules' lines, each in time order (an instant's by symbol, as the engine makes
    them), or shuffled, or with a rule's variants out of id order: the same sorted lines;
    an id seen twice passes once."""
    instants = [f"2024-07-{d:02d}T20:00:00Z" for d in (15, 16, 17)]
    keys = [
        (ts, rule, symbol, f"{rule}-{symbol}-{ts[8:10]}-{variant}")
        for ts in instants
        for rule in ("streak.daily", "drawdown.high")
        for symbol in ("AAA", "BBB", "^RUT")
        for variant in ("b", "a")  # (out of id order within a symbol)
    ]
    expected = sorted(keys)
    streak = [k for k in keys if k[1] == "streak.daily"]
    drawdown = [k for k in keys if k[1] == "drawdown.high"]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    for parts in (
        [streak, drawdown],
        [drawdown, streak],
        [shuffled],
        [streak, drawdown[:4], drawdown],
    ):
        out = Emitted().new([lines(p) for p in parts])
        assert out.select("ts", "rule", "symbol", "id").rows() == expected
        assert out.get_column("json").to_list() == [f'{{"id":"{k[3]}"}}' for k in expected]
