"""Build the NYSE (XNYS) session calendar for a date range (exchange-calendars, cached)."""

from __future__ import annotations

import datetime as dt
import functools

from monitor.core.sessions import Sessions

EARLIEST = dt.date(1900, 1, 1)


def nyse_sessions(first: dt.date, last: dt.date | None = None) -> Sessions:
    """XNYS sessions from a little before `first` to a year past `last` (or past today)."""
    today = dt.datetime.now(dt.UTC).date()
    start = max(EARLIEST, dt.date(first.year, 1, 1))
    end_year = max(last or today, today).year + 1
    return _cached(start, dt.date(end_year, 12, 31))


@functools.lru_cache(maxsize=4)
def _cached(start: dt.date, end: dt.date) -> Sessions:
    import exchange_calendars as xc

    return Sessions(xc.get_calendar("XNYS", start=start.isoformat(), end=end.isoformat()))
