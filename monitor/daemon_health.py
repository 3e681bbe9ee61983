"""The daemon's /healthz: healthy, degraded (with reasons) or down.

Degraded: a feed crashed lately (CRASH_SHOWN_S), stopped for good, disconnected (with the cause
its broker or provider gave), refused a subscription by its broker, or stale; Redis unavailable
(with why, and the outbox's depth); the journal not written (a full disk: the messages of the
steps waiting are not acknowledged); session bars held back as cut short (a feed down through
the close: the daily rules wait).
Down: the engine loop has not stepped for 30 s.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from monitor.feeds.replay import ReplayFeed

if TYPE_CHECKING:
    from monitor.alerts.redis_sink import RedisPublisher
    from monitor.pipeline import Pipeline
    from monitor.service import Daemon

CRASH_SHOWN_S = 300.0  # a feed's crash is a /healthz reason this long (restarted meanwhile)


def health_report(daemon: Daemon, publisher: RedisPublisher, pipeline: Pipeline) -> dict[str, Any]:
    """The /healthz answer of `daemon`: `status`, `reasons`, `uptime_s`, `queue_depth`."""
    reasons: list[str] = []
    for feed in daemon.feeds:
        crashed = daemon.crashed_feeds.get(feed.name)
        if crashed is not None and time.monotonic() - crashed[0] < CRASH_SHOWN_S:
            times = int(daemon.counters.get("feed_crashes", feed=feed.name))
            reasons.append(f"feed {feed.name} crashed ({times} times), last: {crashed[1]}")
        if isinstance(feed, ReplayFeed):
            continue
        if feed.name in daemon.failed_feeds:
            reasons.append(f"feed {feed.name} stopped: {daemon.failed_feeds[feed.name]}")
        elif daemon.counters.get("feed_connected", feed=feed.name) != 1:
            # (the cause, as the broker or provider gave it: "not authorised", refused)
            cause = (feed.last_error or "").removeprefix(f"{feed.name}: ")
            reasons.append(f"feed {feed.name} disconnected" + (f": {cause}" if cause else ""))
        refused = getattr(feed, "refused_topics", None)
        if refused:
            reasons.append(
                f"feed {feed.name} gets nothing on {', '.join(refused)}: the broker refused"
                " the subscription (not authorised to read it?); asked again at its next connect"
            )
        if daemon.counters.get("feed_stale", feed=feed.name) == 1:
            reasons.append(f"feed {feed.name} stale")
        failed = getattr(feed, "backfill_error", None)
        if failed:
            reasons.append(
                f"feed {feed.name} backfill failed ({failed}): asked for again while it stays"
                " connected (after a minute, then longer), and at its next reconnect or start"
            )
    if not publisher.is_available:
        depth = int(daemon.counters.get("outbox_depth"))
        why = publisher.why_unavailable
        said = f" ({why})" if why else ""
        reasons.append(f"redis unavailable{said}, {depth} alerts waiting in the outbox")
    if daemon.intraday.journal_error is not None:
        waiting = daemon.intraday.unwritten
        steps = "1 step" if waiting == 1 else f"{waiting} steps"
        reasons.append(
            f"journal not written ({daemon.intraday.journal_error}): {steps} waiting, their"
            " messages not acknowledged"
        )
    if pipeline.held:
        held = ", ".join(f"{n} of {day}" for day, n in sorted(pipeline.held.items()))
        reasons.append(
            f"session bars held back as cut short ({held}): waiting for the minutes that make"
            " them whole (a feed's backfill)"
        )
    stalled = time.monotonic() - pipeline.last_step_at > 30
    status = "down" if stalled else ("degraded" if reasons else "healthy")
    if stalled:
        reasons.append("engine loop stalled")
    return {
        "status": status,
        "reasons": reasons,
        "uptime_s": round(time.monotonic() - daemon.started, 1),
        "queue_depth": daemon.queue.qsize(),
    }
