"""Which session a minute belongs to, and whether it is in regular hours: the bar builder asks
of every minute start it sees, so the answers are cached.

A minute is accepted when it starts in its session's regular hours (09:30-16:00 New York, to
13:00 on an early close), or, with extended hours, between 04:00 and 20:00 New York on a
session's day (EXTENDED_HOURS); any other minute has no session (the builder rejects it as
`outside_session`).

Why apart from `monitor.core.bars`: the book decides what to do with a minute; this is the
calendar's answer about it, with a cache of its own.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.book_frames import STATE_SCHEMA
from monitor.core.model import TS
from monitor.core.sessions import NEW_YORK, Sessions

CACHE = 100_000  # minute starts whose session is remembered (cleared when exceeded)
EXTENDED_HOURS = (4, 20)  # New York hours [from, to) accepted with extended_hours=True


class MinuteClasses:
    """(session, regular) of minute starts, cached."""

    def __init__(self, sessions: Sessions, extended_hours: bool) -> None:
        self.extended_hours = extended_hours
        self._calendar = sessions.frame.select(
            pl.col("session").alias("day"), "session", "open_ts", "close_ts"
        )
        self._known: dict[dt.datetime, tuple[dt.date | None, bool]] = {}

    def classify(self, starts: list[dt.datetime]) -> dict[dt.datetime, tuple[dt.date | None, bool]]:
        """(session, regular) of minute starts; the session is None when the minute is not
        accepted (outside its session, or outside extended hours when those are on)."""
        missing = [s for s in starts if s not in self._known]
        if missing:
            if len(self._known) > CACHE:
                self._known.clear()
            local = pl.col("start").dt.convert_time_zone(NEW_YORK)
            table = (
                pl.DataFrame({"start": missing}, schema={"start": TS})
                .with_columns(day=local.dt.date(), hour=local.dt.hour())
                .join(self._calendar, on="day", how="left", maintain_order="left")
            )
            regular = pl.col("start").is_between("open_ts", "close_ts", closed="left")
            accept = regular.fill_null(False)
            if self.extended_hours:
                lo, hi = EXTENDED_HOURS
                in_hours = pl.col("session").is_not_null() & pl.col("hour").is_between(lo, hi - 1)
                accept = accept | in_hours
            rows = table.select(pl.when(accept).then("session"), regular.fill_null(False)).rows()
            self._known.update(zip(missing, rows, strict=True))
        return {s: self._known[s] for s in starts}

    def with_session(self, bars: pl.DataFrame, columns: list[str] | None = None) -> pl.DataFrame:
        """Minute bars (OPEN_SCHEMA) with their `session` and `regular` flag (STATE_SCHEMA;
        `columns`: those of `bars`, keys say, and the two)."""
        classes = self.classify(bars["start"].unique().to_list())
        table = pl.DataFrame(
            [list(classes), *zip(*classes.values(), strict=True)],
            schema={"start": TS, "session": pl.Date(), "regular": pl.Boolean()},
            orient="col",
        )
        wanted = list(STATE_SCHEMA) if columns is None else [*columns, "session", "regular"]
        return bars.join(table, on="start", how="left").select(wanted)
