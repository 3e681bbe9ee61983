"""The notifier service: the consumer-group loop and per-receiver couriers. What it sends is
made in monitor/notify/compose.py; the delivery log and dead letters are monitor/notify/ledger.py.

    async with Notifier(config) as notifier:
        await notifier.run(stop)

Exactly once per channel:
- Alerts are read with XREADGROUP; an entry is XACKed only when every receiver it was routed to
  has it (sent, dead-lettered, or dropped to the digest by quiet hours). Silenced, inhibited and
  throttled alerts are acked at once (inhibited and throttled ones are kept in the saved state).
- While an entry waits (grouping, quiet hours, retries) the notifier re-claims it every
  `claim_interval_s` (XCLAIM JUSTID, which resets its idle time), so a live notifier's entries are
  never idle for `claim_idle_s`. A notifier that died stops doing that: another takes its
  entries over with XAUTOCLAIM and delivers them.
- The delivery log (monitor/notify/ledger.py) records each (receiver, alert id) in Redis only
  after a successful send, and is checked before every send. The one window left is a crash
  between the provider accepting a message and that record: that message is sent again.
- Each receiver has its own queue and task, so a slow or broken channel delays only itself.

Redis faults: at start, an unreachable Redis is `SinkUnavailable` (exit 69) and a refused login
or command a `ConfigError` (exit 78), see `redis_failure`. Once running, reads wait and retry;
writes an acknowledgement depends on (delivery log, dead letters, saved state, XACK) are retried
until Redis answers (monitor/notify/ledger.py `retrying`), so an outage delays but never loses
or crashes. A stream or consumer group deleted under us is created again (`_recreate_group`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError, ResponseError

from monitor import logs
from monitor.clock import Clock, SystemClock
from monitor.config import mask_url, secret
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import Alert, decode_alert
from monitor.errors import ConfigError, DeliveryError, SinkUnavailable
from monitor.notify.compose import Composer, Prepared, body_format
from monitor.notify.config import NotifyConfig, resolve_url
from monitor.notify.delivery import Courier, Outcome, Sender, make_sender
from monitor.notify.ledger import REDIS_ERRORS, DeadLetters, DeliveryLog, retrying
from monitor.notify.render import Message
from monitor.notify.routing import Batch, GuardState, Router
from monitor.notify.silences import SilenceStore

STOP_GRACE_S = 2.0  # past block_ms: how long a stopping reader may finish what it read


def redis_client(config: NotifyConfig, environ: dict[str, str] | None = None) -> aioredis.Redis:
    """A client for the configured Redis (password from `password_env` / `password_file`)."""
    r = config.redis
    password = secret(
        "redis.password", env_name=r.password_env, file_name=r.password_file, environ=environ
    )
    kwargs: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
    if password is not None:
        kwargs["password"] = str(password)
    return aioredis.Redis.from_url(r.url, **kwargs)


def redis_failure(exc: RedisError, url: str) -> SinkUnavailable | ConfigError:
    """What a command that cannot start on Redis reports: unreachable (refused, lost, timed out)
    is SinkUnavailable, exit 69, worth a retry later; a refused login or command (password, ACL,
    a key of another type) is a ConfigError, exit 78, which no restart fixes."""
    where = mask_url(url)
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return ConfigError(
            f"redis at {where} refused the login (check [redis] password_env / password_file): "
            f"{exc}"
        )
    if isinstance(exc, REDIS_ERRORS):
        return SinkUnavailable(f"redis at {where} unreachable: {exc}")
    return ConfigError(f"redis at {where}: {exc}")


def is_group_gone(exc: ResponseError) -> bool:
    """Whether Redis says our stream or consumer group no longer exists (deleted, or flushed):
    `NOGROUP ...`, or `UNBLOCKED ... no longer exists` for a read blocked at that moment."""
    text = str(exc)
    return text.startswith("NOGROUP") or (
        text.startswith("UNBLOCKED") and "no longer exists" in text
    )


class Notifier:
    """Everything the running notifier holds; built from a NotifyConfig."""

    delivered: DeliveryLog  # these two inside the `async with`
    dead: DeadLetters

    def __init__(
        self,
        config: NotifyConfig,
        *,
        clock: Clock | None = None,
        counters: Counters | None = None,
        environ: dict[str, str] | None = None,
        senders: dict[str, Sender] | None = None,
        tick_s: float = 0.05,
    ) -> None:
        self.config = config
        self.clock = clock if clock is not None else SystemClock()
        self.counters = counters if counters is not None else Counters()
        self.stream = config.redis.stream
        self.group = config.redis.group
        self.consumer = config.redis.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._environ = environ
        self._tick_s = tick_s
        self._log = logs.get("notifier").bind(consumer=self.consumer)
        self._senders = dict(senders or {})
        self._urls: dict[str, str] = {}
        for i, r in enumerate(config.receivers):
            url = resolve_url(r, f"receivers[{i}].url", environ)
            self._urls[r.name] = str(url)
        self._client: aioredis.Redis | None = None
        self._silences: SilenceStore | None = None
        self.router = Router(config.route, config.receivers, config.runaway)
        self._queues: dict[str, asyncio.Queue[Batch | Prepared]] = {
            r.name: asyncio.Queue() for r in config.receivers
        }
        self._couriers: dict[str, Courier] = {}
        self._outstanding: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        formats = {r.name: body_format(r, self._urls[r.name]) for r in config.receivers}
        self.composer = Composer(config, formats, self._senders)
        self._saved_state = b""
        self._last_read: tuple[int, int] | None = None  # the highest entry id read (ms, seq)
        self.digest_now = asyncio.Event()
        for name, text in (
            ("notify_read", "Stream entries read (or claimed) by this notifier"),
            ("notify_sent", "Messages delivered, per receiver"),
            ("notify_alerts_sent", "Alerts delivered, per receiver"),
            ("notify_already_sent", "Alerts skipped because the delivery log had them"),
            ("notify_dead_lettered", "Alerts sent to the dead-letter stream, per receiver"),
            ("notify_dropped", "Alerts not sent, per reason (silenced, inhibited, ...)"),
            ("notify_acked", "Stream entries acknowledged"),
            ("notify_waiting", "Alerts waiting in groups or quiet hours"),
        ):
            self.counters.describe(name, text)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            self._open_couriers()
        except ConfigError:
            await self.__aexit__(None, None, None)
            raise
        self._client = redis_client(self.config, self._environ)
        self._silences = SilenceStore(self._client, f"{self.stream}:silences")
        self.delivered = DeliveryLog(
            self._client, self.stream, self.config.redis.delivery_log_ttl_s, self._log
        )
        self.dead = DeadLetters(
            self._client, self.config.dead_stream, self.counters, self._log, self.clock
        )
        try:
            await self._create_group(self.config.redis.start)
            raw: Any = await self._client.get(self._state_key)
        except RedisError as exc:
            await self.__aexit__(None, None, None)
            raise redis_failure(exc, self.config.redis.url) from None
        if raw:
            self.router.state = msgspec.json.decode(raw, type=GuardState)
            self._saved_state = raw
        self.composer.check_charts()
        return self

    def _open_couriers(self) -> None:
        """A sender and courier per receiver; a URL no sender can use is a ConfigError naming
        the receiver's field (exit 78, as for any config error), checked before Redis."""
        backoff = Backoff(
            self.config.delivery.backoff_base_s,
            max(self.config.delivery.backoff_cap_s, self.config.delivery.backoff_base_s),
            jitter=self.config.delivery.jitter,
        )
        for i, r in enumerate(self.config.receivers):
            sender = self._senders.get(r.name)
            if sender is None:
                try:
                    sender = make_sender(self._urls[r.name], r.sender, r.timeout_s)
                except DeliveryError as exc:
                    raise ConfigError(f"receivers[{i}].url: {exc}") from None
            self._senders[r.name] = sender
            self._couriers[r.name] = Courier(
                r.name,
                sender,
                backoff=backoff,
                max_attempts=r.max_attempts or self.config.delivery.max_attempts,
                min_interval_s=r.min_interval_s,
            )

    async def _create_group(self, start: str) -> None:
        """The consumer group (and the stream, if there is none yet) from `start`."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sender in self._senders.values():
            await sender.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client (inside the `async with`)."""
        if self._client is None:
            raise RuntimeError("Notifier used outside its `async with`")
        return self._client

    @property
    def _state_key(self) -> str:
        return f"{self.stream}:notify:{self.group}:state"

    def sent_key(self, receiver: str, alert_id: str) -> str:
        """The delivery-log key of one alert on one receiver."""
        return self.delivered.key(receiver, alert_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Read, route, deliver and acknowledge until `stop` is set."""
        self._log.info(
            "notifier_started",
            stream=self.stream,
            group=self.group,
            receivers=[r.name for r in self.config.receivers],
        )
        async with asyncio.TaskGroup() as tg:
            workers = [
                tg.create_task(self._worker(name), name=f"notify_receiver_{name}")
                for name in self._queues
            ]
            ticker = tg.create_task(self._ticker(stop), name="notify_ticker")
            claimer = tg.create_task(self._claimer(stop), name="notify_claimer")
            digest = None
            if self.config.digest.enabled:
                digest = tg.create_task(self._digest_loop(stop), name="notify_digest")
            reader = tg.create_task(self._reader(stop), name="notify_reader")
            await stop.wait()
            # The reader returns within block_ms of `stop`, unless Redis is down and it waits
            # on a write: then it is cancelled (its entries stay pending for the next start).
            grace_s = self.config.redis.block_ms / 1000 + STOP_GRACE_S
            await asyncio.wait([reader], timeout=grace_s)
            for task in [reader, ticker, claimer, digest, *workers]:
                if task is not None:
                    task.cancel()
        self._log.info("notifier_stopped", waiting=self.router.waiting())

    # -- reading -------------------------------------------------------------------------------

    async def _reader(self, stop: asyncio.Event) -> None:
        caught_up = False
        failures = 0
        while not stop.is_set():
            try:
                if not caught_up:
                    await self._catch_up()
                    caught_up = True
                got: Any = await self.redis.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: ">"},
                    count=self.config.redis.batch,
                    block=self.config.redis.block_ms,
                )
                failures = 0
            except REDIS_ERRORS as exc:
                failures += 1
                self._log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}")
                await _wait(stop, min(30.0, 0.5 * 2**failures))
                continue
            except ResponseError as exc:
                if not is_group_gone(exc):
                    raise
                await self._recreate_group(exc)
                continue
            if got:
                await self._process(got[0][1])

    async def _catch_up(self) -> None:
        """Entries left by a dead notifier, then our own pending ones (a restart under the same
        consumer name), before reading new ones."""
        await self._claim_others()
        start: Any = "0"
        while True:
            got: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=self.config.redis.batch
            )
            entries = got[0][1] if got else []
            if not entries:
                return
            await self._process(entries)
            start = entries[-1][0]

    async def _recreate_group(self, exc: ResponseError) -> None:
        """The stream or the group was deleted (DEL, XGROUP DESTROY, FLUSHDB): create the group
        again and keep reading. A stream that is gone is new when it comes back, so the group
        starts at its beginning; a stream that is still there (only the group went) resumes
        after the last entry this notifier read (from `redis.start` if it read none yet), so
        none is delivered twice or skipped."""
        try:
            exists = await self.redis.exists(self.stream)
            start = "0"
            if exists:
                last = self._last_read
                start = f"{last[0]}-{last[1]}" if last else self.config.redis.start
            await self._create_group(start)
        except REDIS_ERRORS as retry:
            self._log.warning("redis_unavailable", error=f"{type(retry).__name__}: {retry}")
            return
        self._log.warning(
            "notify_group_recreated",
            stream=self.stream,
            group=self.group,
            start=start,
            reason=str(exc),
        )

    async def _process(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        assert self._silences is not None
        now = self.clock.now()
        store = self._silences
        silences = await retrying(lambda: store.active(now), self._log, "redis_unavailable")
        to_ack: list[str] = []
        for raw_id, fields in entries:
            entry = raw_id.decode()
            self._last_read = max(self._last_read or (0, 0), _entry_id(entry))
            if entry in self._outstanding:
                continue
            self.counters.inc("notify_read")
            try:
                alert = decode_alert(fields[b"alert"])
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.dead.add(entry, None, "*", f"undecodable entry: {exc}", 0, fields)
                to_ack.append(entry)
                continue
            decision = self.router.accept(entry, alert, now, silences)
            if decision.receivers:
                self._outstanding[entry] = set(decision.receivers)
            else:
                to_ack.append(entry)
                self.counters.inc("notify_dropped", reason=decision.verdict)
                self._log.info(
                    f"alert_{decision.verdict}",
                    id=alert.id,
                    rule=alert.rule,
                    symbol=alert.symbol,
                    silence=decision.silence.id if decision.silence else None,
                )
            for notice in decision.notices:
                self._log.warning(
                    "notify_notice", kind=notice.kind, rule=notice.rule, title=notice.title
                )
        await self._save_state()
        await self._ack(to_ack)
        self.counters.set("notify_waiting", self.router.waiting())
        self._wake.set()

    async def _ack(self, entries: list[str]) -> None:
        """XACK, retried until Redis answers (an entry left unacked is delivered again)."""
        if not entries:
            return

        async def ack() -> Any:
            return await self.redis.xack(self.stream, self.group, *entries)

        await retrying(ack, self._log, "redis_unavailable")
        self.counters.inc("notify_acked", len(entries))

    async def _save_state(self) -> None:
        """Save the router's state when it changed, retried until Redis answers: it must be
        saved before the entries it came from are acknowledged."""
        data = msgspec.json.encode(self.router.state)
        if data != self._saved_state:

            async def save() -> Any:
                return await self.redis.set(self._state_key, data)

            await retrying(save, self._log, "redis_unavailable")
            self._saved_state = data

    # -- claiming --------------------------------------------------------------------------------

    async def _claimer(self, stop: asyncio.Event) -> None:
        every = min(self.config.redis.claim_interval_s, self.config.redis.claim_idle_s / 3)
        while not stop.is_set():
            await _wait(stop, every)
            try:
                ids = list(self._outstanding)
                for i in range(0, len(ids), 500):
                    await self.redis.xclaim(
                        self.stream,
                        self.group,
                        self.consumer,
                        0,
                        list[Any](ids[i : i + 500]),
                        justid=True,
                    )
                await self._claim_others()
            except REDIS_ERRORS as exc:
                self._log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}")
            except ResponseError as exc:
                if not is_group_gone(exc):
                    raise
                # The reader creates the group again; nothing to claim until then.

    async def _claim_others(self) -> None:
        """Take over entries idle for `claim_idle_s` (left by a notifier that died)."""
        start: bytes | str = "0-0"
        idle_ms = int(self.config.redis.claim_idle_s * 1000)
        while True:
            claimed: Any = await self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                idle_ms,
                start,
                count=self.config.redis.batch,
            )
            nxt, entries = claimed[0], claimed[1]
            live = [(i, f) for i, f in entries if f is not None]
            if live:
                self._log.info("entries_claimed", count=len(live))
                await self._process(live)
            if nxt in (b"0-0", "0-0"):
                return
            start = nxt

    # -- grouping and quiet hours ------------------------------------------------------------

    async def _ticker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            for batch in self.router.due(self.clock.now()):
                if batch.dropped:
                    self.counters.inc("notify_dropped", len(batch.items), reason=batch.dropped)
                    self._log.info(
                        "alerts_to_digest",
                        receiver=batch.receiver,
                        ids=[a.id for a in batch.alerts],
                        reason=batch.dropped,
                    )
                    await self._complete(batch)
                else:
                    self._queues[batch.receiver].put_nowait(batch)
            await self._save_state()
            self.counters.set("notify_waiting", self.router.waiting())
            await _wait(stop, self._tick_s, self._wake)

    async def _complete(self, batch: Batch) -> None:
        done: list[str] = []
        for item in batch.items:
            if item.entry is None or item.entry not in self._outstanding:
                continue
            left = self._outstanding[item.entry]
            left.discard(batch.receiver)
            if not left:
                del self._outstanding[item.entry]
                done.append(item.entry)
        await self._ack(done)

    # -- delivery ------------------------------------------------------------------------------

    async def _worker(self, receiver: str) -> None:
        queue = self._queues[receiver]
        while True:
            job = await queue.get()
            if isinstance(job, Prepared):
                await self.deliver_prepared(receiver, job)
            else:
                await self._deliver(receiver, job)

    async def _deliver(self, receiver: str, batch: Batch) -> None:
        alerts: list[Alert] = []
        repeated: list[str] = []
        seen: set[str] = set()
        for a in batch.alerts:  # the same alert XADDed twice: send the first, ack both entries
            if a.id in seen:
                repeated.append(a.id)
            else:
                seen.add(a.id)
                alerts.append(a)
        if repeated:
            self.counters.inc("notify_already_sent", len(repeated), receiver=receiver)
            self._log.info("alert_already_sent", receiver=receiver, ids=repeated, repeated=True)
        flags = await self.delivered.sent(receiver, [a.id for a in alerts])
        todo = [a for a, sent in zip(alerts, flags, strict=True) if not sent]
        if len(todo) < len(alerts):
            self.counters.inc("notify_already_sent", len(alerts) - len(todo), receiver=receiver)
            self._log.info(
                "alert_already_sent",
                receiver=receiver,
                ids=[a.id for a, s in zip(alerts, flags, strict=True) if s],
            )
        if todo:
            message = await self.message(receiver, todo)
            outcome = await self._couriers[receiver].deliver(message)
            if outcome.ok:
                await self.delivered.mark(receiver, [a.id for a in todo])
                self.counters.inc("notify_sent", receiver=receiver)
                self.counters.inc("notify_alerts_sent", len(todo), receiver=receiver)
                self._log.info(
                    "alert_delivered",
                    receiver=receiver,
                    ids=[a.id for a in todo],
                    attempts=outcome.attempts,
                )
            else:
                entries: dict[str, str | None] = {}
                for i in batch.items:
                    entries.setdefault(i.alert.id, i.entry)
                for a in todo:
                    await self.dead.add(
                        entries.get(a.id), a, receiver, outcome.reason, outcome.attempts
                    )
        await self._complete(batch)

    async def deliver_prepared(self, receiver: str, job: Prepared) -> None:
        """Send a pre-rendered message (the digest) once to `receiver`."""
        (sent,) = await self.delivered.sent(receiver, [job.key])
        if sent:
            return
        outcome = await self._couriers[receiver].deliver(job.message)
        if outcome.ok:
            await self.delivered.mark(receiver, [job.key])
            self.counters.inc("notify_sent", receiver=receiver)
            self._log.info("digest_delivered", receiver=receiver, key=job.key)
        else:
            self._log.error("digest_failed", receiver=receiver, key=job.key, reason=outcome.reason)

    # -- rendering -------------------------------------------------------------------------------

    async def message(self, receiver: str, alerts: Sequence[Alert]) -> Message:
        """The message for `alerts` on `receiver` (see Composer.message)."""
        return await self.composer.message(receiver, alerts)

    async def send_now(self, receiver: str, message: Message) -> Outcome:
        """Deliver `message` to `receiver` at once: no grouping, no delivery log."""
        return await self._couriers[receiver].deliver(message)

    # -- digest --------------------------------------------------------------------------------

    async def _digest_loop(self, stop: asyncio.Event) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        d = self.config.digest
        hour, minute = (int(x) for x in d.at.split(":")[:2])
        scheduler = AsyncIOScheduler(timezone=d.tz)
        scheduler.add_job(self.digest_now.set, CronTrigger(hour=hour, minute=minute, timezone=d.tz))
        scheduler.start()
        try:
            while not stop.is_set():
                await _wait(stop, 3600.0, self.digest_now)
                if self.digest_now.is_set():
                    self.digest_now.clear()
                    await self.send_digest()
        finally:
            scheduler.shutdown(wait=False)

    async def send_digest(self, *, queue: bool = True) -> list[tuple[str, Prepared]]:
        """Build today's digest and queue it for the digest receivers (once per day each)."""
        now = self.clock.now()
        since_ms = int((now - dt.timedelta(days=1)).timestamp() * 1000)

        async def read() -> Any:
            return await self.redis.xrange(self.stream, min=f"{since_ms}-0", max="+")

        entries: Any = await retrying(read, self._log, "redis_unavailable")
        alerts = []
        for _, f in entries:
            with contextlib.suppress(KeyError, msgspec.DecodeError, msgspec.ValidationError):
                alerts.append(decode_alert(f[b"alert"]))
        day, jobs = await self.composer.digest(alerts, now)
        if queue:
            for name, job in jobs:
                self._queues[name].put_nowait(job)
        self._log.info("digest_built", day=day.isoformat(), alerts=len(alerts))
        return jobs


def _entry_id(entry: str) -> tuple[int, int]:
    """A stream entry id `1718000000000-3` as (ms, seq), to compare ids as Redis does."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


async def _wait(stop: asyncio.Event, timeout_s: float, also: asyncio.Event | None = None) -> None:
    """Sleep up to `timeout_s`, returning early when `stop` (or `also`) is set."""
    events = [stop] if also is None else [stop, also]
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
