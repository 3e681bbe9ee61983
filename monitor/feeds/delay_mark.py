"""DelayMark: a delayed stream's gap, owed while it runs, so that a kill -9 loses none of it.

A delayed stream (its data ending well before it comes: Alpaca's delayed_sip, 15 minutes) owes,
while it runs, from the minute its data ends in (`mark`), moved on once a minute once the engine
loop has on disk the step that took that data in (a marker's ack), so that a kill -9 leaves owed
the minutes it had not delivered. The start after one backfills from the newest data the daemon
took in otherwise (`Intraday.resumed_from`): a real-time feed's, or the clock of the last save
of the sessions under way, up to 15 minutes past the stream's; those minutes, which the stream
does not send again, were lost. A graceful stop owes what the stream is behind itself, and
drops the mark (`unmark`).

Why apart from `monitor.feeds.gap_fill`, whose `GapFill` owns and drives it: it owes a gap that
is not open (the stream is up), with its own state (the minute queued, the gap owed for it),
and fetches nothing; a real-time stream never marks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from functools import partial

from monitor.core.model import FeedBatch
from monitor.feeds.owed import Owed
from monitor.feeds.wire import Wire

__all__ = ["DelayMark"]


class DelayMark:
    """The minute a delayed stream's data ends in, owed in the store (`owe`, then `settle` of
    the one before) once the engine loop acknowledges a marker queued on `queue` after the
    data. Inert when gaps are not owed in the store (`owe` or `settle` None)."""

    def __init__(
        self,
        name: str,
        queue: asyncio.Queue[FeedBatch | Wire],
        owe: Callable[[Owed], None] | None,
        settle: Callable[[list[Owed]], None] | None,
    ) -> None:
        self._name = name
        self._queue = queue
        self._owe = owe
        self._settle = settle
        self._marking: dt.datetime | None = None  # the minute last queued
        self._marked: Owed | None = None  # the gap owed for it

    async def mark(self, behind: dt.datetime | None) -> None:
        """The minute a delayed stream's data ends in (None: it is not behind): owed as a
        gap, in place of the one before, once the engine loop acknowledges a marker queued
        after the data (on disk by then: a kill -9 loses none of it). A no-op unless it
        changed (once a minute at most), or when gaps are not owed in the store."""
        if behind == self._marking or self._owe is None or self._settle is None:
            return
        self._marking = behind
        await self._queue.put(Wire(self._name, [], ack=partial(self._owe_marked, behind)))

    def _owe_marked(self, behind: dt.datetime | None) -> None:
        """A marker's ack: owe from `behind` (the new gap first, then the old one settled:
        the store never owes less), unless a later mark was queued since, or the feed has
        stopped (`unmark`)."""
        if behind != self._marking or self._owe is None or self._settle is None:
            return
        old, self._marked = self._marked, Owed(behind) if behind is not None else None
        if self._marked is not None:
            self._owe(self._marked)
        if old is not None:
            self._settle([old])

    def unmark(self) -> None:
        """At a graceful stop, which owes what the stream is behind itself: the mark is no
        longer owed, nor one still queued."""
        self._marking = None
        self._owe_marked(None)
