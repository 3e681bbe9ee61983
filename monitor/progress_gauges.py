"""The `rule_progress` gauges of /metrics: per rule, symbol and variant, how close the rule is to
firing (the engine's progress, see `monitor.core.progress`), for the rules with at most
MAX_PROGRESS_GAUGES rows (a universe-wide rule's are on /api/state, counted and cut).

Rebuilt whole from the engine's progress whenever it changed (each evaluation gives a rule a new
list): at the start, at every step and after a reload. So a rule that grows past the cap, a
symbol it no longer has, a rule removed take their series with them, and none stays at a value
the engine has since left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitor.core.counters import Counters
from monitor.core.progress import Progress

MAX_PROGRESS_GAUGES = 50  # rows of a rule, past which it has no series


class ProgressGauges:
    """The gauges of the progress `refresh` was last given."""

    def __init__(self, counters: Counters, cap: int = MAX_PROGRESS_GAUGES) -> None:
        self._counters = counters
        self._cap = cap
        self._shown: dict[str, Sequence[Progress]] | None = None  # (rule id -> its rows)

    def refresh(self, progress: Mapping[str, Sequence[Progress]]) -> None:
        """Make the gauges those of `progress` (nothing to do when no rule has new rows)."""
        current = dict(progress)  # (a copy: the engine replaces a rule's rows as it evaluates)
        shown = self._shown
        if (
            shown is not None
            and shown.keys() == current.keys()
            and all(current[rule] is rows for rule, rows in shown.items())
        ):
            return
        self._counters.replace(
            "rule_progress",
            (
                ({"rule": rule, "symbol": p.symbol, "variant": p.variant}, p.progress)
                for rule, rows in current.items()
                if len(rows) <= self._cap
                for p in rows
            ),
        )
        self._shown = current
