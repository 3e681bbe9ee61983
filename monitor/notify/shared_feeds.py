"""Feed health shared by the notifiers of a consumer group, in Redis.

Each entry of the stream goes to one notifier of the group, so a feed's `feed_stale` and its
`feed_recovered` may go to two different ones. Inhibition is per notifier (its router's state),
so each notifier tells the others what it read: the hash `{stream}:notify:{group}:feeds` holds,
per feed, the `ts` of the latest `feed_stale` (field `stale:{feed}`) and of the latest
`feed_recovered` (`recovered:{feed}`) any of them read. A field only moves forward in time
(WATCH, compare, MULTI/EXEC: two notifiers writing at once cannot put an older one back).
The notifier writes what it read before it acknowledges it, and reads the hash before it routes
what it read and every second (`Router.shared_feeds` takes it in).

A `ts` more than FUTURE_SLACK ahead of the clock (a daemon's clock set wrong) is neither
written nor read, and a field holding one is overwritten: moving only forward, such a field
would otherwise hold every later `ts` off, and its feed stale (or recovered) for the group, until
its time came.

The hash holds two fields per feed, and no alert: it is never trimmed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from monitor.core.model import Alert
from monitor.notify.guard_state import alert_instant

# Per feed: the `ts` of the latest `feed_stale` and of the latest `feed_recovered` (None: none).
FeedEvents = tuple[str | None, str | None]
_FIELD = {"feed_stale": "stale", "feed_recovered": "recovered"}
FUTURE_SLACK = dt.timedelta(minutes=5)  # a `ts` further ahead of the clock is not believed


class SharedFeeds:
    """The feed health of one consumer group (see the module)."""

    def __init__(self, redis: aioredis.Redis, stream: str, group: str) -> None:
        self._redis = redis
        self.key = f"{stream}:notify:{group}:feeds"

    async def read(self, now: dt.datetime) -> dict[str, FeedEvents]:
        """Per feed, the latest `feed_stale` and `feed_recovered` the group read (by `now`, the
        clock: see FUTURE_SLACK). Fields that are not ours (another name, not text) are left
        out."""
        raw: Any = await self._redis.hgetall(self.key)
        return _events(raw, now + FUTURE_SLACK)

    async def record(self, alerts: Sequence[Alert], now: dt.datetime) -> None:
        """Record the feed-health alerts among `alerts` (others are ignored), each field only
        where it is later than the group's (by `now`, the clock: see FUTURE_SLACK). Written by
        others meanwhile: tried again, after a few milliseconds, until it is written."""
        latest: dict[str, str] = {}
        ahead = now + FUTURE_SLACK
        for alert in alerts:
            kind = _FIELD.get(alert.kind)
            if kind is None or alert_instant(alert.ts) > ahead:
                continue
            name = f"{kind}:{alert.symbol}"
            if name not in latest or alert_instant(alert.ts) > alert_instant(latest[name]):
                latest[name] = alert.ts
        if not latest:
            return
        # (each round some writer gets through: no livelock, only a wait)
        while not await self._write_later(latest, ahead):  # noqa: ASYNC110 - a retry, not a poll
            await asyncio.sleep(random.uniform(0.001, 0.01))

    async def _write_later(self, latest: dict[str, str], ahead: dt.datetime) -> bool:
        """Set the fields of `latest` that are later than the hash's (or where it holds a `ts`
        past `ahead`); False: the hash changed meanwhile (nothing written)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.key)
            current: Any = await pipe.hgetall(self.key)
            have = _texts(current)
            later = {
                name: ts
                for name, ts in latest.items()
                if name not in have
                or alert_instant(ts) > alert_instant(have[name])
                or alert_instant(have[name]) > ahead
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


def _instant(ts: str, ahead: dt.datetime) -> bool:
    """Whether `ts` is an instant (as alerts write them) no later than `ahead`."""
    try:
        at = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return False
    return at.tzinfo is not None and at <= ahead


def _texts(raw: dict[bytes, bytes]) -> dict[str, str]:
    """The hash's fields and values that are text (others are not ours: left alone)."""
    out = {}
    for field, value in raw.items():
        try:
            out[field.decode()] = value.decode()
        except UnicodeDecodeError:
            continue
    return out


def _events(raw: dict[bytes, bytes], ahead: dt.datetime) -> dict[str, FeedEvents]:
    found: dict[str, list[str | None]] = {}
    for name, text in _texts(raw).items():
        kind, _, feed = name.partition(":")
        if kind not in ("stale", "recovered") or not feed or not _instant(text, ahead):
            continue
        slot = found.setdefault(feed, [None, None])
        slot[0 if kind == "stale" else 1] = text
    return {feed: (stale, recovered) for feed, (stale, recovered) in found.items()}
