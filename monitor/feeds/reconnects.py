"""What a feed does between two connections: the pause before the next attempt, counted and
logged. MqttFeed and WebSocketFeed each keep their own connection loop (what a connection is,
and what its loss means, differ), and share this part of it."""

from __future__ import annotations

import asyncio
from typing import Any

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.feeds.rejections import RejectionLog


class Reconnects:
    """The attempts of one feed's reconnect loop. The delays grow by `backoff` from one failed
    attempt to the next, and start over once a connection has lasted `stable_after_s` (a
    feed dropped once a day reconnects at once, one that cannot stay up backs off)."""

    def __init__(
        self,
        feed: str,
        backoff: Backoff,
        stable_after_s: float,
        *,
        counters: Counters,
        log: Any,  # (a bound structlog logger)
        rejections: RejectionLog,
    ) -> None:
        self._feed = feed
        self._backoff = backoff
        self._stable_after_s = stable_after_s
        self._counters = counters
        self._log = log
        self._rejections = rejections
        self.attempt = 0  # attempts since the last stable connection
        self.last_error: str | None = None  # why the last connection was lost or refused

    async def pause(self, error: str, connected_for_s: float | None) -> None:
        """After a connection was lost (having lasted `connected_for_s`) or could not be made
        (None): gauge `feed_connected` 0, counter `feed_reconnects`, a `feed_reconnecting`
        line with the attempt and delay, the rejections counted so far logged, then the
        delay slept."""
        self._counters.set("feed_connected", 0, feed=self._feed)
        self.last_error = error
        if connected_for_s is not None and connected_for_s >= self._stable_after_s:
            self.attempt = 0
        delay = self._backoff.delay(self.attempt)
        self.attempt += 1
        self._counters.inc("feed_reconnects", feed=self._feed)
        self._log.warning(
            "feed_reconnecting", error=error, attempt=self.attempt, delay_s=round(delay, 3)
        )
        self._rejections.flush()
        await asyncio.sleep(delay)
