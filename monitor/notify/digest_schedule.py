"""When the daily digest goes out: at `[digest] at` (APScheduler), and again when it failed.

The digest's content is monitor/notify/digest.py (and the Composer); this is its timing. It goes
out once a day per receiver (the delivery log keeps it so, whatever the starts): a notifier
started after today's time sends today's at once. One whose delivery failed (after its
`[delivery]` attempts) is queued again `[delivery] backoff_cap_s` later, by the ticker
(`retry_due`), until it is sent or its day ends: alerts dropped to the digest by quiet hours
were acknowledged, so the digest is the only place they are told.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from monitor.clock import Clock
from monitor.notify.compose import Composer, Prepared, digest_key
from monitor.notify.config import NotifyConfig
from monitor.notify.inbox import pause
from monitor.notify.ledger import retrying
from monitor.notify.payload import entry_alert


class DigestSchedule:
    """Builds the digest when it is due and queues it (`put`) for each digest receiver."""

    def __init__(
        self,
        config: NotifyConfig,
        redis: aioredis.Redis,
        composer: Composer,
        put: Callable[[str, Prepared], None],
        *,
        clock: Clock,
        log: Any,
    ) -> None:
        self._config = config
        self._redis = redis
        self._composer = composer
        self._put = put
        self._clock = clock
        self._log = log
        self.due = asyncio.Event()  # set: build and queue the digest now
        # Digests that could not be sent: (when to try again, receiver, job).
        self._retries: list[tuple[dt.datetime, str, Prepared]] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: the digest at `[digest] at` each day, in `[digest] tz`."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        d = self._config.digest
        hour, minute = (int(x) for x in d.at.split(":")[:2])
        scheduler = AsyncIOScheduler(timezone=d.tz)
        trigger = CronTrigger(hour=hour, minute=minute, timezone=d.tz)
        scheduler.add_job(self.due.set, trigger, misfire_grace_time=3600)
        # Started after today's time (down then, or restarted since): today's digest now. The
        # delivery log sends it once a day whatever the starts.
        local = self._clock.now().astimezone(zoneinfo.ZoneInfo(d.tz))
        if (local.hour, local.minute) >= (hour, minute):
            self.due.set()
        scheduler.start()
        try:
            while not stop.is_set():
                await pause(stop, 3600.0, self.due)
                if self.due.is_set():
                    self.due.clear()
                    await self.build()
        finally:
            scheduler.shutdown(wait=False)

    def failed(self, receiver: str, job: Prepared) -> None:
        """`receiver` could not be sent the digest `job` (or another notifier was sending it):
        try again `[delivery] backoff_cap_s` from now (the courier's longest wait between two
        attempts)."""
        at = self._clock.now() + dt.timedelta(seconds=self._config.delivery.backoff_cap_s)
        self._retries.append((at, receiver, job))

    def retry_due(self, now: dt.datetime) -> None:
        """Queue again the failed digests whose wait is over, as long as their day (in `[digest]
        tz`) lasts; the delivery log, checked before the send, keeps it once a day."""
        if not self._retries:
            return
        today = digest_key(now.astimezone(zoneinfo.ZoneInfo(self._config.digest.tz)).date())
        due = [r for r in self._retries if r[0] <= now]
        self._retries = [r for r in self._retries if r[0] > now]
        for _, receiver, job in due:
            if job.key == today:
                self._log.info("digest_retry", receiver=receiver, key=job.key)
                self._put(receiver, job)
            else:
                self._log.error("digest_abandoned", receiver=receiver, key=job.key)

    async def build(self, *, queue: bool = True) -> list[tuple[str, Prepared]]:
        """Build today's digest from the last day's alerts in the stream, and queue it for the
        digest receivers (`queue`) or not (`notify digest` sends it itself)."""
        now = self._clock.now()
        since_ms = int((now - dt.timedelta(days=1)).timestamp() * 1000)
        stream = self._config.redis.stream

        async def read() -> Any:
            return await self._redis.xrange(stream, min=f"{since_ms}-0", max="+")

        entries: Any = await retrying(read, self._log, "redis_unavailable")
        alerts = []
        for _, f in entries:
            with contextlib.suppress(KeyError, msgspec.DecodeError, msgspec.ValidationError):
                alerts.append(entry_alert(f))
        day, jobs = await self._composer.digest(alerts, now)
        if queue:
            for name, job in jobs:
                self._put(name, job)
        self._log.info("digest_built", day=day.isoformat(), alerts=len(alerts))
        return jobs
