"""Alerts the stream dropped before the notifier's group read them: counted and logged.

The daemon adds alerts with `MAXLEN ~ [redis] maxlen`. A notifier stopped (or stuck) for longer
than the stream holds comes back to find the oldest of the alerts it never read trimmed away,
and XREADGROUP skips to what is left without a word. Redis keeps enough count to tell:
`entries-added` of the stream (XINFO STREAM) less `entries-read` of the group (XINFO GROUPS)
is what the group has not read; less the entries still in the stream after its last delivered
id, what it never will. That number is counted (`notify_trimmed_unread`) and logged
(`alerts_trimmed_unread`, a warning) once per loss, at start and at every claim interval, by one
notifier of the group: the loss reported at a position is kept in Redis
(`{stream}:notify:trimmed:{group}:{id}`, a day), so the others sharing the group see it was. The
same look gives how far behind the group is: the gauges `notify_stream_unread` (in the stream,
not read yet) and `notify_stream_pending` (read by the group, not acknowledged).

The check needs `+xinfo|stream +xinfo|groups` (docs/security.md). Refused, it says so once
(`trim_check_refused`) and the notifier goes on without it.

Entries a notifier had read, and not yet delivered when it stopped, stay pending in the group;
trimmed meanwhile, their content is gone too. The next read of them (a notifier restarted
under the same name reading its own pending entries, or another claiming them) gets only
their ids: `pending_lost` counts them (`notify_trimmed_pending`) and logs
`alerts_trimmed_pending`; the inbox acknowledges them so they are not asked for again.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from monitor.core.counters import Counters
from monitor.streams import EntryId, entry_id, text


class TrimWatch:
    """Watches `stream` for entries trimmed before the group `group` read them."""

    def __init__(
        self, redis: aioredis.Redis, stream: str, group: str, counters: Counters, log: Any
    ) -> None:
        self._redis = redis
        self.stream = stream
        self.group = group
        self._counters = counters
        self._log = log
        self.refused = False
        # What was reported for the group's position now: (last delivered id, entries lost).
        self._reported: tuple[EntryId, int | None] | None = None

    async def check(self) -> int | None:
        """Count and log entries lost since the last check; how many the group has lost at its
        position now (None: cannot tell). Redis errors other than a refusal propagate."""
        if self.refused:
            return None
        try:
            stream: Any = await self._redis.xinfo_stream(self.stream)
            groups: Any = await self._redis.xinfo_groups(self.stream)
        except NoPermissionError as exc:
            self.refused = True
            self._log.warning(
                "trim_check_refused",
                stream=self.stream,
                error=str(exc),
                hint="grant the notifier +xinfo|stream +xinfo|groups (docs/security.md) to be "
                "told of alerts trimmed before it read them",
            )
            return None
        except ResponseError:
            return None  # (no stream yet: nothing was trimmed)
        group = next((g for g in groups if text(g.get("name")) == self.group), None)
        if group is None:
            return None
        last = entry_id(group.get("last-delivered-id") or b"0-0") or (0, 0)
        lost = _lost(stream, group, last)
        await self._report(last, lost, stream)
        # How far behind the group is, for /metrics: alerts in the stream it has not read yet
        # (Redis's lag counts the trimmed ones too), and alerts read and not acknowledged.
        lag = group.get("lag")
        if lag is not None and lost is not None:
            self._counters.set("notify_stream_unread", max(0, int(lag) - lost))
        self._counters.set("notify_stream_pending", int(group.get("pending") or 0))
        return lost

    def pending_lost(self, entries: list[str]) -> None:
        """Pending entries found trimmed (read before, never delivered): count and log them."""
        if not entries:
            return
        self._counters.inc("notify_trimmed_pending", len(entries))
        self._log.warning(
            "alerts_trimmed_pending",
            stream=self.stream,
            group=self.group,
            count=len(entries),
            entries=entries[:10],
            hint="read by a notifier that stopped before delivering them, then trimmed past "
            "[redis] maxlen: their content is gone from Redis",
        )

    async def _report(self, last: EntryId, lost: int | None, stream: Any) -> None:
        """Count and log what is lost beyond what was reported at the same position (a group
        that has not moved on since keeps its loss; a loss counted once, here or by another
        notifier of the group, is not counted again)."""
        if lost == 0:
            return
        here = self._reported is not None and self._reported[0] == last
        counted = (self._reported[1] or 0) if here and self._reported else 0
        if here and (lost is None or lost <= counted):
            return
        self._reported = (last, lost)
        if lost is not None:
            counted = max(counted, await self._shared(last, lost))
            if lost <= counted:
                return
        new = None if lost is None else lost - counted
        if new:
            self._counters.inc("notify_trimmed_unread", new)
        first = stream.get("first-entry")
        self._log.warning(
            "alerts_trimmed_unread",
            stream=self.stream,
            group=self.group,
            count=new,
            last_delivered=f"{last[0]}-{last[1]}",
            oldest_left=text(first[0]) if first else None,
            hint="the stream holds [redis] maxlen alerts: the notifier was stopped or behind "
            "for longer than that; the alerts are gone from Redis (`market-monitor replay` or "
            "the daemon's logs have them)",
        )

    async def _shared(self, last: EntryId, lost: int) -> int:
        """How many of the group's losses at `last` a notifier reported already (0 when none,
        or when Redis refuses: then each reports its own); records `lost` as reported."""
        key = f"{self.stream}:notify:trimmed:{self.group}:{last[0]}-{last[1]}"
        try:
            before = await self._redis.set(key, lost, ex=REPORTED_TTL_S, get=True)
            if before is not None and int(before) > lost:  # (a notifier that looked later)
                await self._redis.set(key, int(before), ex=REPORTED_TTL_S)
        except (NoPermissionError, ResponseError, ValueError):
            return 0
        return int(before) if before is not None else 0


REPORTED_TTL_S = 86_400


def _lost(stream: Any, group: Any, last: EntryId) -> int | None:
    """Entries added after the group's last delivered one that the stream no longer holds
    (None: Redis cannot tell, as when the group was set to an arbitrary id)."""
    first = stream.get("first-entry")
    oldest = entry_id(first[0]) if first else None
    if oldest is not None and oldest <= last:
        return 0  # (everything after `last` is still there)
    deleted = entry_id(stream.get("max-deleted-entry-id") or b"0-0")
    if oldest is None and deleted is not None and deleted <= last:
        return 0  # (an empty stream, nothing deleted after `last`: a group set past it all)
    read = group.get("entries-read")
    if read is None and last == (0, 0):
        read = 0  # (a group that starts at the beginning and read nothing yet)
    added = stream.get("entries-added")
    if read is None or added is None:
        return None
    return max(0, int(added) - int(read) - int(stream.get("length") or 0))
