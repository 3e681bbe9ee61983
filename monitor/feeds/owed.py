"""What a feed's REST backfill owes, symbol by symbol, and the requests that fetch it.

An owed entry (`Owed`) is either an open gap, every symbol from when the data stopped until
the connection came back (`end` None: its window ends at the minute the backfill runs in), or
the window of a backfill that failed, for the symbols that failed only. `plan` turns what is
owed at a subscription into requests: per symbol, the union of the windows it lacks, cut at
the engine's horizon (`reach`), the symbols lacking the same window asked together.

Why per symbol: a backfill that failed for one symbol an hour ago used to be folded into the
next reconnect's gap, and every symbol was fetched from an hour ago (at 2,000 symbols, a
multiple of the REST calls, and rate limits). Now that symbol is asked for its hour, and
every symbol for the new gap only.

Why a horizon: minutes older than the oldest session the engine keeps (the session under
way, the latest closed one and the one before; from 04:00 New York with `extended_hours`) are
rejected as late, so the part of a failed window before `reach` (that session's open, else
`backfill_max_s` back) is given up (`Plan.given_up`), not fetched again and again. An open
gap older than `reach` is cut there, and its part before `reach`, never asked for, is given up
too (`Plan.cut`: the feed counts and says it, as it does a failed window's; it used to be cut
without a word, and a feed down for three sessions, or a daemon stopped as long, lost a
session of minutes that no counter or log line named).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "GAP_OLDER_THAN_KEPT",
    "GIVEN_UP",
    "OLDER_THAN_KEPT",
    "REFUSED",
    "SYMBOL_REMOVED",
    "Owed",
    "Plan",
    "Request",
    "floor_minute",
    "plan",
    "some",
]

_MINUTE = dt.timedelta(minutes=1)

# backfill_given_up's reasons (README): a failed window's minutes older than the engine keeps
# by the time they are asked for again; an open gap's older than that when it is filled (never
# asked for); a window owed at the last stop for a symbol no longer among the feed's; a
# symbol's window that the provider refuses for that symbol (its request alone answered 400,
# 404 or 422 while the others' were answered: see `monitor.feeds.given_up`)
OLDER_THAN_KEPT = "older_than_kept"
GAP_OLDER_THAN_KEPT = "gap_older_than_kept"
SYMBOL_REMOVED = "symbol_removed"
REFUSED = "refused"
GIVEN_UP = (OLDER_THAN_KEPT, GAP_OLDER_THAN_KEPT, SYMBOL_REMOVED, REFUSED)


@dataclass(frozen=True, slots=True)
class Owed:
    """Minutes a feed lacks: from `start`, until `end` (None: an open gap, whose window ends
    at the minute its backfill runs in), of `symbols` (None: every symbol of the feed)."""

    start: dt.datetime
    end: dt.datetime | None = None
    symbols: tuple[str, ...] | None = None

    def window(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """The minutes to fetch at `now`, [start, end): an open gap's from the minute before
        it opened (that minute may be part-built) to the current one (the stream builds it);
        a failed window's as it was asked."""
        if self.end is None:
            return floor_minute(self.start) - _MINUTE, floor_minute(now)
        return self.start, self.end


@dataclass(frozen=True, slots=True)
class Request:
    """One backfill request: `symbols` over [start, end)."""

    start: dt.datetime
    end: dt.datetime
    symbols: tuple[str, ...]


@dataclass(slots=True)
class Plan:
    """The requests that fetch what is owed, the failed windows (or their parts) given up as
    older than the engine keeps, and the parts of open gaps before the reach (never asked
    for, and not to be: as old)."""

    requests: list[Request] = field(default_factory=list)
    given_up: list[Request] = field(default_factory=list)
    cut: list[Request] = field(default_factory=list)


def plan(
    owed: Sequence[Owed], symbols: Sequence[str], now: dt.datetime, reach: dt.datetime
) -> Plan:
    """The requests for `owed` at `now`: per symbol (`symbols`: the feed's, for the open gaps),
    its windows from `reach` on, merged where they overlap or touch; one request per distinct
    window, of the symbols that lack it (in the feed's order)."""
    lacks: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    given_up: list[Request] = []
    cut: list[Request] = []
    for entry in owed:
        start, end = entry.window(now)
        names = tuple(symbols) if entry.symbols is None else entry.symbols
        if start < min(reach, end) and names:
            (cut if entry.end is None else given_up).append(Request(start, min(reach, end), names))
        start = max(start, reach)
        if start >= end:
            continue
        for name in names:
            lacks.setdefault(name, []).append((start, end))
    order = {name: i for i, name in enumerate(symbols)}
    by_window: dict[tuple[dt.datetime, dt.datetime], list[str]] = {}
    for name in sorted(lacks, key=lambda n: (order.get(n, len(order)), n)):
        for window in _merged(lacks[name]):
            by_window.setdefault(window, []).append(name)
    requests = [Request(s, e, tuple(names)) for (s, e), names in sorted(by_window.items())]
    return Plan(requests, given_up, cut)


def _merged(
    windows: list[tuple[dt.datetime, dt.datetime]],
) -> list[tuple[dt.datetime, dt.datetime]]:
    """`windows` as the fewest disjoint ones covering the same minutes."""
    merged: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def floor_minute(when: dt.datetime) -> dt.datetime:
    """The start of the minute `when` is in."""
    return when.replace(second=0, microsecond=0)


def some(symbols: Sequence[str], most: int = 20) -> str:
    """The first `most` of `symbols`, for a log line or /healthz ("A, B, ... and 12 more")."""
    more = f" and {len(symbols) - most} more" if len(symbols) > most else ""
    return ", ".join(symbols[:most]) + more
