"""GivenUp: the minutes a feed's backfill never fetches (again), counted and said once.

Counted in `backfill_given_up{reason}` (each reason at 0 from the start) and said once in the
warning `backfill_given_up`, with why, the window and the symbols:

- the minutes of a failed window older than the engine keeps (`reach`) are given up
  (`reason="older_than_kept"`), no longer owed, and no longer an error on /healthz; so are
  those of an open gap that began before the reach, never asked for
  (`reason="gap_older_than_kept"`), if the part cut off held minutes of a session (`traded`);
- a symbol the provider refuses as a symbol (an unknown or delisted ticker: its request for it
  alone, Polygon's always, Alpaca's once a group refused for it is asked one symbol at a time,
  answered 400, 404 or 422; asked again, it would be refused again, so it is not) is given up
  when the same backfill's requests for other symbols are answered (`Refusals`): its window
  counted (`reason="refused"`), said once (with the provider's words), not owed (nor a window
  of it that failed otherwise in that backfill), no error on /healthz. It is left out of the
  feed's later backfills until the daemon restarts (`refuse`, then `without`; each window it
  is left out of counted, not said again): asked at every reconnect, it would be refused
  again, and on Alpaca its group of 100 with it, then asked one symbol at a time. A refusal
  when no symbol is answered (every request refused: a wrong `rest_url`; or a backfill of that
  symbol only, a failed window of it asked for again) is a failure as any other: it may be the
  request the provider refuses, not the symbol.

Why apart from `monitor.feeds.gap_fill`, whose `GapFill` decides what is given up: the
counting and saying of it is one concern with its own words for each reason, and its own
state, the symbols refused (kept for the daemon's life, not owed in the store).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.core.counters import Counters
from monitor.feeds.owed import (
    GAP_OLDER_THAN_KEPT,
    GIVEN_UP,
    OLDER_THAN_KEPT,
    REFUSED,
    Request,
    some,
)

__all__ = ["GIVEN_UP_WHY", "GivenUp", "Refusals"]

GIVEN_UP_WHY = {  # (backfill_given_up's reasons here: see `monitor.feeds.owed`)
    OLDER_THAN_KEPT: "older than the oldest session the engine keeps: it would reject them",
    GAP_OLDER_THAN_KEPT: "the gap began before the oldest session the engine keeps: its"
    " minutes before then are not fetched (the engine would reject them as late)",
    REFUSED: "the provider refuses the symbol (its request alone refused, the others'"
    " answered): not asked for again until the daemon restarts",
}


@dataclass(slots=True)
class Refusals:
    """One backfill's symbols refused each in a request of its own (400, 404, 422), by
    window, with the provider's words (the first's); and whether any symbol's request was
    answered: then the provider takes the request, and refuses those symbols (a wrong URL is
    refused for every symbol)."""

    answered: bool = False
    alone: list[tuple[Request, str]] = field(default_factory=list)


class GivenUp:
    """What the backfills of the feed `name` give up (`give_up`, `refuse`), and the symbols
    the provider refused as symbols, left out of every later backfill (`without`) until the
    daemon restarts. `counting`: the feed has a REST backfill (then each reason's counter is
    at 0 from the start: a rate of it needs the 0 before it).

    Counter (label `feed`): backfill_given_up{reason}.
    """

    def __init__(self, name: str, counters: Counters, log: Any, *, counting: bool) -> None:
        self._name = name
        self._counters = counters
        self._log = log
        self._refused: set[str] = set()
        if counting:
            for reason in GIVEN_UP:
                counters.zero("backfill_given_up", feed=name, reason=reason)

    def __repr__(self) -> str:
        return f"GivenUp({self._name!r}, refused {sorted(self._refused)})"

    def give_up(self, part: Request, reason: str, **said: str) -> None:
        """Minutes never fetched (again), counted and said with `said`: older than the engine
        keeps, a failed window's (`OLDER_THAN_KEPT`) or an open gap's before the reach
        (`GAP_OLDER_THAN_KEPT`); or of symbols the provider refuses (`REFUSED`)."""
        self._counters.inc("backfill_given_up", len(part.symbols), feed=self._name, reason=reason)
        self._log.warning(
            "backfill_given_up",
            reason=GIVEN_UP_WHY[reason],
            **said,
            failed=len(part.symbols),
            symbols=some(part.symbols),
            start=part.start.isoformat(),
            end=part.end.isoformat(),
        )

    def refuse(self, refusals: Iterable[tuple[Request, str]]) -> None:
        """Symbols the provider refused as symbols, each part with the provider's words: given
        up, and never asked for again (`without`)."""
        for part, why in refusals:
            self._refused.update(part.symbols)
            self.give_up(part, REFUSED, error=why)

    def without(self, request: Request) -> Request | None:
        """`request` without the symbols the provider refused before (None: it had no other),
        not asked for again: each one's window counted as given up (said once, when it was
        refused)."""
        symbols = tuple(s for s in request.symbols if s not in self._refused)
        if out := len(request.symbols) - len(symbols):
            self._counters.inc("backfill_given_up", out, feed=self._name, reason=REFUSED)
            return Request(request.start, request.end, symbols) if symbols else None
        return request
