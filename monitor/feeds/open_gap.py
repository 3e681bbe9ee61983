"""OpenGap: where a WebSocket feed's gap opens, from the loss of its data to its next subscription.

The gap opens where the data stopped: when the last frame came, or its last tick's or minute's
time when that is earlier (`data_end`: a delayed stream's, Alpaca's delayed_sip ending 15
minutes before the clock; frames that waited while the engine's queue was full), by no more
than `MAX_DELAY` (data older still is no delay, but old data sent as it is, a test stream's, and
the clock says when it stopped). It is owed (`GapFill.owe`) from when it opens until its
backfill is on disk; the next subscription fills it (`GapFill.fill`). A gap owed at the last
stop opens the feed's first one (`gap_since`).

A delayed stream's is owed from where its data ends at a stop too (`owe_behind`: its data ends
more than `BEHIND_AT_STOP` behind when it came), and, while it runs, from the minute its data
ends in (`behind`, which the feed hands to `GapFill.mark`), in case of a kill -9.

Why apart from `monitor.feeds.websocket`: that module is the connection (handshake, frames,
reconnects); this is where its data stands by its own times, state of its own (the gap's start,
the data's end) that the connection only reports to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from monitor.feeds.events import QuietWatch
from monitor.feeds.gap_fill import GapFill
from monitor.feeds.owed import floor_minute

__all__ = ["BEHIND_AT_STOP", "MAX_DELAY", "OpenGap"]

MAX_DELAY = dt.timedelta(hours=1)  # the longest a stream's data is taken to be delayed by
# how far behind its arrival a feed's data may end at a stop (or, for a kill -9, as it comes)
# before the gap from there is owed (a start backfills from a minute before the daemon's saved
# clock in any case)
BEHIND_AT_STOP = dt.timedelta(minutes=1)


class OpenGap:
    """The feed's open gap (`start`, None: none is open), owed through `gaps`, and where the
    data received so far ends (`data_end`); when data last came is `quiet.last_data` (loop
    time), read on the feed's `clock`."""

    def __init__(
        self,
        gaps: GapFill,
        clock: Callable[[], dt.datetime],
        quiet: QuietWatch,
        since: dt.datetime | None,
    ) -> None:
        self._gaps = gaps
        self._clock = clock
        self._quiet = quiet
        # when data last came before the connection was lost (or, from `since`, before the
        # daemon stopped): the first subscription after it backfills from there
        self.start: dt.datetime | None = since
        # Where the data received so far ends, by its own times (its last tick or minute): a
        # delayed stream's (Alpaca's delayed_sip) ends well before the clock, and its gap
        # opens there, not when the last frame came.
        self.data_end: dt.datetime | None = None
        if since is not None:
            gaps.owe(since)

    def __repr__(self) -> str:
        return f"OpenGap(start={self.start}, data_end={self.data_end})"

    def took(self, end: dt.datetime | None) -> bool:
        """Data came ending at `end` (a batch's last tick or minute; None: no time): whether
        the data now ends later than before."""
        later = end is not None and (self.data_end is None or end > self.data_end)
        if later:
            self.data_end = end
        return later

    def open(self) -> None:
        """The connection is lost (or the feed crashed on it): the gap opens where the data
        stopped, owed until its backfill is on disk; the next subscription fills it. A no-op
        while one is open."""
        if self.start is not None:
            return
        self.start = self._stopped()
        ended = self.data_end
        if ended is not None and self.start - MAX_DELAY <= ended:
            # (a delayed feed's: see above; data older still is no delay, but old data sent
            # as it is, a test stream's, and the clock says when it stopped)
            self.start = min(self.start, ended)
        self._gaps.owe(self.start)

    def owe_behind(self) -> None:
        """At a stop: a feed whose data ended well before it came (a delayed stream's, or
        frames held up behind a full queue) owes the gap from where the data ends, so that
        the next start backfills from there, not from the daemon's saved clock, which is
        later: the minutes between, which the stream does not send again, used to be lost.
        (A feed quiet for long lost nothing: its data ended when it came.)"""
        ended = self.data_end
        if self.start is not None or ended is None:
            return
        if self.behind(self._stopped()) is not None:
            self.start = ended
            self._gaps.owe(ended)

    def behind(self, arrived: dt.datetime) -> dt.datetime | None:
        """The minute the data ends in, if it ends well behind `arrived` (when it came: a
        delayed stream's), else None."""
        ended = self.data_end
        if ended is None or not arrived - MAX_DELAY <= ended < arrived - BEHIND_AT_STOP:
            return None
        return floor_minute(ended)

    def filled(self) -> None:
        """The next subscription took the gap to fill: none is open."""
        self.start = None

    def _stopped(self) -> dt.datetime:
        """When data last came, by the feed's clock."""
        since_data = asyncio.get_running_loop().time() - self._quiet.last_data
        return self._clock() - dt.timedelta(seconds=since_data)
