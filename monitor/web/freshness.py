"""How current the daemon's data is, for /api/state: its newest bar, how old that is, and how
many sessions have closed since without a bar (what the board and `watch` show amber for, as
they do a daemon degraded: a clock years past the data's end read "live" before)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from monitor.core.sessions import Sessions

MINUTE = dt.timedelta(minutes=1)
# A session's bars may come this long after its close (a provider's session bars, a backfill)
# before the data counts as a session behind.
GRACE = dt.timedelta(hours=4)


class Freshness:
    """The newest bars the daemon holds: `note` each step's (and the history's at the start)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.session: dt.date | None = None  # the newest session bar's session
        self.minute_end: dt.datetime | None = None  # the newest minute bar's end

    def note(self, daily: pl.DataFrame, minutes: pl.DataFrame) -> None:
        """Session bars (`session`) and minute bars (`start`) the daemon now holds."""
        session = daily.get_column("session").max() if daily.height else None
        if isinstance(session, dt.date) and (self.session is None or session > self.session):
            self.session = session
        start = minutes.get_column("start").max() if minutes.height else None
        if isinstance(start, dt.datetime):
            end = start + MINUTE
            if self.minute_end is None or end > self.minute_end:
                self.minute_end = end

    def document(self, now: dt.datetime) -> dict[str, Any]:
        """`latest_bar`: when the newest bar ended (ISO 8601 UTC: a minute bar's end, or the
        close of the newest session bar's session; null with no bar); `latest_bar_age_s`: how
        long ago that was; `sessions_behind`: the sessions closed more than GRACE ago after
        the newest session bar's (0 when the data is current, or there is none)."""
        ends = [self.minute_end] if self.minute_end is not None else []
        if self.session is not None:
            ends.append(self.sessions.close_of(self.session))
        latest = max(ends, default=None)
        behind = 0
        last = self.sessions.last_closed(now - GRACE)
        if self.session is not None and last is not None and last > self.session:
            after = self.session + dt.timedelta(days=1)
            behind = self.sessions.between(after, last).height
        return {
            "latest_bar": latest.astimezone(dt.UTC).isoformat() if latest else None,
            "latest_bar_age_s": round((now - latest).total_seconds(), 1) if latest else None,
            "sessions_behind": behind,
        }
