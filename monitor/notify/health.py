"""The notifier's health, for /healthz and `market_monitor_notify_redis_up`.

The same document and status codes as the daemon's /healthz (monitor/service.py
`Daemon.health`): `status` (`healthy`, `degraded` or `down`), `reasons` and `uptime_s`,
answered 503 when down, 200 otherwise, so that a container healthcheck, a load balancer and
`market-monitor status --url` read both alike. The daemon's rules live in its Daemon, so
they are not shared here; the HTTP route is (`monitor.http.json_route`).

- down: not running yet (waiting for Redis at start) or stopping, or Redis not answering
  while running. Without Redis the notifier can neither read alerts nor record what it sent,
  so nothing is delivered: a healthcheck must fail.
- down too: the alert stream's key holds another type (`DEL` then `SET` on it), so nothing
  new can be read (monitor/notify/inbox.py `Inbox.stream_problem`).
- degraded: a receiver's last attempt failed (it is retrying, or gave up and dead-lettered),
  until a message reaches it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from monitor.core.counters import Counters
from monitor.http import Route, json_route

REDIS_UP = "notify_redis_up"


class Health:
    """What /healthz says of one notifier; `redis_answered` and `redis_failed` keep it (and the
    gauge) up to date, `receivers` names the receivers failing and why."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._started = time.monotonic()
        self.phase = "starting"  # then "running", then "stopping"
        self.redis_error: str | None = None  # (None: Redis answered last time asked)
        self.receivers: Callable[[], dict[str, str]] = dict
        # Why Redis refuses our writes for now (read-only after a failover, out of memory, too
        # few replicas: it answers reads, so `redis_answered` is no sign), and whether our
        # lease has lapsed meanwhile; None while writes go through.
        self.writes: Callable[[], tuple[str, bool] | None] = lambda: None
        # Why the alert stream cannot be read (its key holds another type); None while it can.
        self.stream: Callable[[], str | None] = lambda: None
        counters.describe(REDIS_UP, "1 while Redis answers the notifier, else 0")
        counters.set(REDIS_UP, 0)

    def redis_answered(self) -> None:
        """Redis answered a command."""
        self.redis_error = None
        self._counters.set(REDIS_UP, 1)

    def redis_failed(self, error: str) -> None:
        """Redis did not answer (refused, lost, timed out): `error` says how (URL masked)."""
        self.redis_error = error
        self._counters.set(REDIS_UP, 0)

    def document(self) -> dict[str, Any]:
        """healthy, degraded (with reasons) or down."""
        reasons: list[str] = []
        if self.redis_error is not None:
            reasons.append(f"redis unavailable: {self.redis_error}")
        elif self.phase != "running":
            reasons.append(f"notifier {self.phase}")
        refused = self.writes() if self.redis_error is None else None
        if refused is not None:
            reasons.append(f"redis refusing writes for now: {refused[0]}")
        unreadable = self.stream() if self.redis_error is None else None
        if unreadable is not None:
            reasons.append(f"alert stream unreadable: {unreadable}")
        failing = self.receivers() if self.phase == "running" else {}
        reasons += [f"receiver {name} failing: {why}" for name, why in sorted(failing.items())]
        # (down: nothing can be acknowledged, or, writes refused past our lease, delivered)
        down = self.phase != "running" or self.redis_error is not None
        down = down or (refused is not None and refused[1]) or unreadable is not None
        return {
            "status": "down" if down else ("degraded" if reasons else "healthy"),
            "reasons": reasons,
            "uptime_s": round(time.monotonic() - self._started, 1),
        }

    def route(self) -> Route:
        """The /healthz route: the document as JSON, 503 when down."""
        return json_route(self.document, lambda h: 503 if h["status"] == "down" else 200)  # type: ignore[index]
