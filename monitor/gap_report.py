"""Sessions missing inside a symbol's history, said as the daemon's session bars open them: a
window or a streak does not reach across them (warning `daily_bars_missing`, counter
`daily_sessions_missing`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from monitor.core.counters import Counters
from monitor.core.sessions import Sessions
from monitor.replay import new_gaps

MAX_SAID = 100_000  # gaps remembered as said (years of a large universe's holes), then forgotten


class GapReport:
    """Each gap said once: the bars after it come again as the session's bar is corrected (late
    ticks, a provider's revision)."""

    def __init__(self, counters: Counters, log: Any) -> None:
        self._counters = counters
        self._log = log
        self._said: set[tuple[str, dt.date]] = set()  # (symbol, first session missing)

    def note(self, daily: pl.DataFrame, daily_bars: pl.DataFrame, sessions: Sessions) -> None:
        """Warn of the gaps in `daily` (the history) that a step's `daily_bars` open."""
        found = [
            g
            for g in new_gaps(daily, daily_bars, sessions)
            if (g.symbol, g.first) not in self._said
        ]
        if not found:
            return
        if len(self._said) > MAX_SAID:
            self._said.clear()
        self._said.update((g.symbol, g.first) for g in found)
        missing = sum(g.missing for g in found)
        self._counters.inc("daily_sessions_missing", missing)
        self._log.warning(
            "daily_bars_missing",
            sessions=missing,
            symbols=len(found),
            first=[f"{g.symbol} {g.missing} from {g.first}" for g in found[:5]],
            note="a window or streak does not reach across them",
        )
