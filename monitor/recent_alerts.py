"""The last alerts, for the live view (/api/state's `alerts`, the charts' markers), kept across
a restart: a daemon stopped (SIGTERM) or killed (kill -9) comes back with the list it had, not
"no alerts yet" beside a rule that holds.

Kept in the store's `alerts_recent.json` (the alerts, oldest first), rewritten whole and
atomically after each step that fired any, so a kill loses none it had written. A file that
cannot be read or written is logged, and the daemon goes on: the list is a view, the alerts
themselves are on the Redis stream. (Not read back from the stream: Redis may be down at the
start, the stream may be shared, trimmed or renamed since, and a feed's health alerts the
notifier never saw belong in the list too; the store is the daemon's own, at hand.)
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from typing import Any

from monitor.core.model import Alert
from monitor.store import Store, StoreError

RECENT_ALERTS = 50


class RecentAlerts:
    """The last `size` alerts, oldest first, as the store keeps them."""

    def __init__(self, store: Store, log: Any, size: int = RECENT_ALERTS) -> None:
        self._store = store
        self._log = log
        self.alerts: collections.deque[Alert] = collections.deque(maxlen=size)
        try:
            self.alerts.extend(store.load_recent_alerts())
        except StoreError as exc:
            log.warning("recent_alerts_unreadable", error=str(exc))

    def __iter__(self) -> Iterator[Alert]:
        return iter(self.alerts)

    def __len__(self) -> int:
        return len(self.alerts)

    def extend(self, alerts: Sequence[Alert]) -> None:
        """Alerts a step fired (feed health alerts among them), written at once."""
        if not alerts:
            return
        self.alerts.extend(alerts)
        try:
            self._store.save_recent_alerts(list(self.alerts))
        except StoreError as exc:
            self._log.warning("recent_alerts_not_saved", error=str(exc))
