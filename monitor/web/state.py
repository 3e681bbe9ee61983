"""/api/state, what the board and `watch` draw: the rules with how many symbols each watches and
how many hold now, the progress rows nearest to firing (a universe has too many to send them
all), the last alerts and the clock."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from monitor.core.model import Alert
from monitor.core.progress import Progress
from monitor.core.rules.spec import Rule, kind_of

MAX_ROWS = 500  # progress rows /api/state carries, nearest to firing first...
# ... and at least each rule's nearest this many, and as many of those that do not hold (the
# board shows 5 a rule: its near misses too when many hold)
RULE_ROWS = 5


def nearest_first(p: Progress) -> tuple[bool, bool, bool, float, str, str]:
    """The order of progress rows: those that hold, then the others nearest to firing first,
    those with nothing but their measure to go (`blocked` none) before the blocked; then by
    rule and symbol. Stale rows (a symbol that missed the rule's latest period) come last."""
    return (p.stale, not p.holds, p.blocked is not None, -p.progress, p.rule, p.symbol)


def newest_first(alerts: Iterable[Alert]) -> list[Alert]:
    """The alerts (oldest first, as they fired) newest first: those of a later instant before
    those of an earlier one, but those of one instant in the order they fired (a movers
    rule's #1 first, as the console, the stream and replay give them; the whole list reversed
    put its last rank first, and a view of the first few showed the lesser movers)."""
    runs: list[list[Alert]] = []
    for alert in alerts:
        if runs and runs[-1][0].ts == alert.ts:
            runs[-1].append(alert)
        else:
            runs.append([alert])
    return [alert for run in reversed(runs) for alert in run]


class Digest(NamedTuple):
    """One rule's rows, counted and cut."""

    rows: Sequence[Progress]  # what it was made from (the same list: the same rows)
    nearest: list[Progress]  # its first MAX_ROWS, nearest to firing first
    missing: list[Progress]  # its first RULE_ROWS of those that do not hold
    symbol_count: int
    row_count: int  # one per symbol and variant (a drawdown's near_high and below_high)
    holding_count: int  # (never a stale row: see `Progress`)
    stale_count: int


def digest(rows: Sequence[Progress], keep: int, keep_missing: int) -> Digest:
    """A rule's counts, its `keep` rows nearest to firing and its `keep_missing` nearest of
    those that do not hold."""
    return Digest(
        rows,
        heapq.nsmallest(keep, rows, key=nearest_first),
        heapq.nsmallest(keep_missing, (p for p in rows if not p.holds), key=nearest_first),
        len({p.symbol for p in rows}),
        len(rows),
        sum(p.holds for p in rows),
        sum(p.stale for p in rows),
    )


class StateView:
    """`document(...)` is /api/state. A rule's digest is kept until the engine gives the rule
    new rows (a new list at each evaluation), so a poll costs the rules whose bars closed since
    the last one, not a sort of a universe's rows every 2 s per open board."""

    def __init__(self, max_rows: int = MAX_ROWS, rule_rows: int = RULE_ROWS) -> None:
        self.max_rows = max_rows
        self.rule_rows = rule_rows
        self._digests: dict[str, Digest] = {}

    def document(
        self,
        now: dt.datetime,
        rules: Iterable[Rule],
        progress: Mapping[str, Sequence[Progress]],
        alerts: Iterable[Alert],
    ) -> dict[str, Any]:
        """`rules`, each with `symbol_count` (symbols it has progress for), `row_count` (its
        progress rows: one per symbol and variant), `holding_count` (of those, holding now) and
        `stale_count` (of those, stale); `progress`: the `max_rows` rows nearest to firing, and
        the `rule_rows` nearest of each rule and its `rule_rows` nearest that do not hold
        besides, in `nearest_first` order; `alerts`: newest first (`newest_first`); `now`."""
        # (list() copies in one go, under the GIL: the engine's thread may add a rule's rows)
        current = list(progress.items())
        digests = {rule_id: self._digest(rule_id, rows) for rule_id, rows in current}
        self._digests = digests  # (a rule gone takes its digest with it)
        merged = heapq.merge(*(d.nearest for d in digests.values()), key=nearest_first)
        top = list(itertools.islice(merged, self.max_rows))
        # (a row is one object: those already in are known by identity)
        chosen = {id(p): p for p in top}
        for d in digests.values():
            for p in itertools.chain(d.nearest[: self.rule_rows], d.missing):
                chosen.setdefault(id(p), p)
        rows = sorted(chosen.values(), key=nearest_first) if len(chosen) > len(top) else top
        none = Digest((), [], [], 0, 0, 0, 0)
        return {
            "now": now.isoformat(),
            "rules": [
                {
                    "id": r.id,
                    "kind": kind_of(r),
                    "timeframe": r.timeframe,
                    "description": r.description,
                    "symbol_count": digests.get(r.id, none).symbol_count,
                    "row_count": digests.get(r.id, none).row_count,
                    "holding_count": digests.get(r.id, none).holding_count,
                    "stale_count": digests.get(r.id, none).stale_count,
                }
                for r in rules
            ],
            "progress": msgspec.to_builtins(rows),
            "alerts": msgspec.to_builtins(newest_first(alerts)),
        }

    def _digest(self, rule_id: str, rows: Sequence[Progress]) -> Digest:
        kept = self._digests.get(rule_id)
        if kept is not None and kept.rows is rows:
            return kept
        return digest(rows, self.max_rows, self.rule_rows)
