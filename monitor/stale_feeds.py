"""Which feeds are stale, kept across a restart: a feed told `feed_stale` and not yet
`feed_recovered` when the daemon stops stays stale after its start, so its first data is a
`feed_recovered`. Without that the notifier, which holds per-symbol alerts back while any feed
is stale, would wait hours for a recovery no one sends (restarting the daemon is the usual cure
for a stale feed). A feed that is no longer in the config is told recovered at the start, once.

Kept in the store's `feeds_stale.json` (feed name -> when it went stale, ISO 8601), written at
each change; a file that cannot be read or written is logged, and the daemon goes on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from monitor.core.model import Alert
from monitor.core.payload import feed_health_alert
from monitor.store import Store, StoreError


class StaleFeeds:
    """The feeds stale now (`names`: feed name -> since when), as the store keeps them."""

    def __init__(self, store: Store, log: Any) -> None:
        self._store = store
        self._log = log
        try:
            self.names = store.load_stale_feeds()
        except StoreError as exc:
            log.warning("stale_feeds_unreadable", error=str(exc))
            self.names = {}

    def __contains__(self, feed: str) -> bool:
        return feed in self.names

    def gone(self, configured: Iterable[str], now: Callable[[], dt.datetime]) -> list[Alert]:
        """`feed_recovered` alerts for the feeds stale at the stop that are not among the
        `configured` ones, which are forgotten (the file rewritten: told once, not at every
        start)."""
        alerts = []
        for name in sorted(set(self.names) - set(configured)):
            self._log.info("stale_feed_gone", feed=name, stale_since=self.names.pop(name))
            alerts.append(feed_health_alert("feed_recovered", name, now(), None))
        if alerts:
            self._save()
        return alerts

    def note(self, kind: str, feed: str, at: dt.datetime) -> None:
        """A feed went stale (`feed_stale`) or recovered (`feed_recovered`)."""
        if kind == "feed_stale":
            self.names[feed] = at.isoformat()
        elif self.names.pop(feed, None) is None:
            return
        self._save()

    def _save(self) -> None:
        try:
            self._store.save_stale_feeds(self.names)
        except StoreError as exc:
            self._log.warning("stale_feeds_not_saved", error=str(exc))
