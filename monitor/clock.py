"""Time, injected: the live daemon reads the system clock; replay feeds drive a simulated one."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    """Where the daemon gets `now` (timezone-aware UTC)."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> dt.datetime:
        """The current instant, UTC."""
        return dt.datetime.now(dt.UTC)


class SimClock:
    """A clock that only moves when told to (never backwards)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start

    def now(self) -> dt.datetime:
        """The simulated instant."""
        return self._now

    def set(self, when: dt.datetime) -> None:
        """Move to `when` (ignored if it is earlier than now)."""
        if when > self._now:
            self._now = when
