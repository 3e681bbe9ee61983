"""Feed health shared by the notifiers of a consumer group, in Redis.

Each entry of the stream goes to one notifier of the group, so a feed's `feed_stale` and its
`feed_recovered` may go to two different ones. Inhibition is per notifier (its router's state),
so each notifier tells the others what it read: the hash `{stream}:notify:{group}:feeds` holds,
per feed, the `ts` of the latest `feed_stale` (field `stale:{feed}`) and of the latest
`feed_recovered` (`recovered:{feed}`) any of them read. A field only moves forward in time
(WATCH, compare, MULTI/EXEC: two notifiers writing at once cannot put an older one back).
The notifier writes what it read before it acknowledges it, and reads the hash before it routes
what it read and every second (`Router.shared_feeds` takes it in).

The hash holds two fields per feed, and no alert: it is never trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from monitor.core.model import Alert
from monitor.notify.guard_state import alert_instant

# Per feed: the `ts` of the latest `feed_stale` and of the latest `feed_recovered` (None: none).
FeedEvents = tuple[str | None, str | None]
_FIELD = {"feed_stale": "stale", "feed_recovered": "recovered"}
WRITE_ATTEMPTS = 10  # (another notifier writing the hash at the same moment: try again)


class SharedFeeds:
    """The feed health of one consumer group (see the module)."""

    def __init__(self, redis: aioredis.Redis, stream: str, group: str) -> None:
        self._redis = redis
        self.key = f"{stream}:notify:{group}:feeds"

    async def read(self) -> dict[str, FeedEvents]:
        """Per feed, the latest `feed_stale` and `feed_recovered` the group read. Fields that
        are not ours (another name, not text) are left out."""
        raw: Any = await self._redis.hgetall(self.key)
        return _events(raw)

    async def record(self, alerts: Sequence[Alert]) -> None:
        """Record the feed-health alerts among `alerts` (others are ignored), each field only
        where it is later than the group's."""
        latest: dict[str, str] = {}
        for alert in alerts:
            kind = _FIELD.get(alert.kind)
            if kind is None:
                continue
            name = f"{kind}:{alert.symbol}"
            if name not in latest or alert_instant(alert.ts) > alert_instant(latest[name]):
                latest[name] = alert.ts
        if not latest:
            return
        for _ in range(WRITE_ATTEMPTS):
            if await self._write_later(latest):
                return
        raise RuntimeError(f"{self.key}: written by others {WRITE_ATTEMPTS} times in a row")

    async def _write_later(self, latest: dict[str, str]) -> bool:
        """Set the fields of `latest` that are later than the hash's; False: the hash changed
        meanwhile (nothing written)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.key)
            current: Any = await pipe.hgetall(self.key)
            have = _texts(current)
            later = {
                name: ts
                for name, ts in latest.items()
                if name not in have or alert_instant(ts) > alert_instant(have[name])
            }
            if not later:
                return True  # (leaving the block sends UNWATCH)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(self.key, mapping=later)  # type: ignore[arg-type]
            try:
                await pipe.execute()
            except WatchError:
                return False
        return True


def _texts(raw: dict[bytes, bytes]) -> dict[str, str]:
    """The hash's fields and values that are text (others are not ours: left alone)."""
    out = {}
    for field, value in raw.items():
        try:
            out[field.decode()] = value.decode()
        except UnicodeDecodeError:
            continue
    return out


def _events(raw: dict[bytes, bytes]) -> dict[str, FeedEvents]:
    found: dict[str, list[str | None]] = {}
    for name, text in _texts(raw).items():
        kind, _, feed = name.partition(":")
        if kind not in ("stale", "recovered") or not feed:
            continue
        slot = found.setdefault(feed, [None, None])
        slot[0 if kind == "stale" else 1] = text
    return {feed: (stale, recovered) for feed, (stale, recovered) in found.items()}
