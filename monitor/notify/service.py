"""The notifier service: the consumer-group loop, per-receiver couriers, the delivery log.

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
- The delivery log is a Redis key per (receiver, alert id), `{stream}:notify:sent:{receiver}:{id}`,
  set (with a TTL) only after a successful send and checked before every send. It lives in Redis
  rather than a local SQLite file because the notifier that takes over after a crash may run on
  another host; Redis already holds the stream and the group. The one window left is a crash
  between the provider accepting a message and the SET: that message is sent again.
- Each receiver has its own queue and task, so a slow or broken channel delays only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor import logs
from monitor.clock import Clock, SystemClock
from monitor.config import secret
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import Alert, decode_alert, encode_alert
from monitor.errors import ConfigError, DeliveryError
from monitor.notify.chart import BarsFile, alert_chart, rally_chart
from monitor.notify.config import NotifyConfig, ReceiverConfig, resolve_url
from monitor.notify.delivery import Courier, Outcome, Sender, make_sender
from monitor.notify.digest import build_digest
from monitor.notify.render import BodyFormat, Message, render
from monitor.notify.routing import Batch, GuardState, Router
from monitor.notify.silences import SilenceStore

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)
DEAD_MAXLEN = 10_000


@dataclass(frozen=True)
class Prepared:
    """A message already rendered (the digest), sent once per receiver under `key`."""

    key: str
    message: Message


def body_format(r: ReceiverConfig, url: str) -> BodyFormat:
    """The receiver's body format: as configured, else HTML for email, Markdown for the rest."""
    if r.format != "auto":
        return r.format
    return "html" if url.partition("://")[0].lower() in ("mailto", "mailtos") else "markdown"


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


class Notifier:
    """Everything the running notifier holds; built from a NotifyConfig."""

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
        self._formats = {r.name: body_format(r, self._urls[r.name]) for r in config.receivers}
        self._client: aioredis.Redis | None = None
        self._silences: SilenceStore | None = None
        self.router = Router(config.route, config.receivers, config.runaway)
        self._queues: dict[str, asyncio.Queue[Batch | Prepared]] = {
            r.name: asyncio.Queue() for r in config.receivers
        }
        self._couriers: dict[str, Courier] = {}
        self._outstanding: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._bars = BarsFile(config.bars_path)
        self._charts: OrderedDict[tuple[str, ...], bytes | None] = OrderedDict()
        self._saved_state = b""
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
        self._client = redis_client(self.config, self._environ)
        self._silences = SilenceStore(self._client, f"{self.stream}:silences")
        try:
            await self._client.xgroup_create(
                self.stream, self.group, id=self.config.redis.start, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        raw: Any = await self._client.get(self._state_key)
        if raw:
            self.router.state = msgspec.json.decode(raw, type=GuardState)
            self._saved_state = raw
        backoff = Backoff(
            self.config.delivery.backoff_base_s,
            max(self.config.delivery.backoff_cap_s, self.config.delivery.backoff_base_s),
            jitter=self.config.delivery.jitter,
        )
        for r in self.config.receivers:
            sender = self._senders.get(r.name) or make_sender(
                self._urls[r.name], r.sender, r.timeout_s
            )
            self._senders[r.name] = sender
            self._couriers[r.name] = Courier(
                r.name,
                sender,
                backoff=backoff,
                max_attempts=r.max_attempts or self.config.delivery.max_attempts,
                min_interval_s=r.min_interval_s,
            )
        return self

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
        return f"{self.stream}:notify:sent:{receiver}:{alert_id}"

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
            await self._reader(stop)
            for task in [ticker, claimer, digest, *workers]:
                if task is not None:
                    task.cancel()
        self._log.info("notifier_stopped", waiting=self.router.waiting())

    # -- reading -------------------------------------------------------------------------------

    async def _reader(self, stop: asyncio.Event) -> None:
        await self._claim_others()
        start: Any = "0"
        while True:  # our own pending entries (a restart under the same consumer name)
            got: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=self.config.redis.batch
            )
            entries = got[0][1] if got else []
            if not entries:
                break
            await self._process(entries)
            start = entries[-1][0]
        failures = 0
        while not stop.is_set():
            try:
                got_new: Any = await self.redis.xreadgroup(
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
            if got_new:
                await self._process(got_new[0][1])

    async def _process(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        assert self._silences is not None
        now = self.clock.now()
        silences = await self._silences.active(now)
        to_ack: list[str] = []
        for raw_id, fields in entries:
            entry = raw_id.decode()
            if entry in self._outstanding:
                continue
            self.counters.inc("notify_read")
            try:
                alert = decode_alert(fields[b"alert"])
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._dead(entry, None, "*", f"undecodable entry: {exc}", 0, fields)
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
        if not entries:
            return
        await self.redis.xack(self.stream, self.group, *entries)
        self.counters.inc("notify_acked", len(entries))

    async def _save_state(self) -> None:
        data = msgspec.json.encode(self.router.state)
        if data != self._saved_state:
            await self.redis.set(self._state_key, data)
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
        alerts = batch.alerts
        flags = await self._retrying(self._sent_flags, receiver, [a.id for a in alerts])
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
                await self._retrying(self._mark_sent, receiver, [a.id for a in todo])
                self.counters.inc("notify_sent", receiver=receiver)
                self.counters.inc("notify_alerts_sent", len(todo), receiver=receiver)
                self._log.info(
                    "alert_delivered",
                    receiver=receiver,
                    ids=[a.id for a in todo],
                    attempts=outcome.attempts,
                )
            else:
                entries = {i.alert.id: i.entry for i in batch.items}
                for a in todo:
                    await self._dead(
                        entries.get(a.id), a, receiver, outcome.reason, outcome.attempts
                    )
        await self._complete(batch)

    async def deliver_prepared(self, receiver: str, job: Prepared) -> None:
        """Send a pre-rendered message (the digest) once to `receiver`."""
        (sent,) = await self._retrying(self._sent_flags, receiver, [job.key])
        if sent:
            return
        outcome = await self._couriers[receiver].deliver(job.message)
        if outcome.ok:
            await self._retrying(self._mark_sent, receiver, [job.key])
            self.counters.inc("notify_sent", receiver=receiver)
            self._log.info("digest_delivered", receiver=receiver, key=job.key)
        else:
            self._log.error("digest_failed", receiver=receiver, key=job.key, reason=outcome.reason)

    async def _sent_flags(self, receiver: str, ids: list[str]) -> list[bool]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert_id in ids:
                pipe.exists(self.sent_key(receiver, alert_id))
            return [bool(x) for x in await pipe.execute()]

    async def _mark_sent(self, receiver: str, ids: list[str]) -> list[bool]:
        ttl = self.config.redis.delivery_log_ttl_s
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert_id in ids:
                pipe.set(self.sent_key(receiver, alert_id), "1", ex=ttl)
            await pipe.execute()
        return []

    async def _retrying(self, op: Any, receiver: str, ids: list[str]) -> list[bool]:
        """Delivery-log reads and writes are retried until Redis answers (never skipped)."""
        attempt = 0
        while True:
            try:
                result: list[bool] = await op(receiver, ids)
                return result
            except REDIS_ERRORS as exc:
                attempt += 1
                self._log.warning("delivery_log_unavailable", error=str(exc), attempt=attempt)
                await asyncio.sleep(min(30.0, 0.2 * 2**attempt))

    async def _dead(
        self,
        entry: str | None,
        alert: Alert | None,
        receiver: str,
        reason: str,
        attempts: int,
        fields: dict[bytes, bytes] | None = None,
    ) -> None:
        payload = (
            encode_alert(alert)
            if alert is not None
            else msgspec.json.encode(
                {
                    k.decode(errors="replace"): v.decode(errors="replace")
                    for k, v in (fields or {}).items()
                }
            )
        )
        await self.redis.xadd(
            self.config.dead_stream,
            {
                "id": alert.id if alert is not None else "",
                "entry": entry or "",
                "receiver": receiver,
                "reason": reason,
                "attempts": attempts,
                "ts": self.clock.now().isoformat(),
                "alert": payload,
            },
            maxlen=DEAD_MAXLEN,
            approximate=True,
        )
        self.counters.inc("notify_dead_lettered", receiver=receiver)
        self._log.error(
            "alert_dead_lettered",
            receiver=receiver,
            id=alert.id if alert else None,
            entry=entry,
            reason=reason,
            attempts=attempts,
        )

    # -- rendering -------------------------------------------------------------------------------

    async def message(self, receiver: str, alerts: Sequence[Alert]) -> Message:
        """The message for `alerts` on `receiver`, with a chart when it takes attachments."""
        fmt = self._formats[receiver]
        title, body = render(alerts, fmt, self.config.templates)
        r = self.config.receiver(receiver)
        attachments: tuple[tuple[str, bytes], ...] = ()
        if (
            self.config.charts.enabled
            and r.attach_chart
            and self._senders[receiver].takes_attachments
        ):
            png = await self.chart(alerts)
            if png is not None:
                attachments = ((f"{_safe_name(alerts[0].symbol)}.png", png),)
        return Message(title, body, fmt, attachments)

    async def chart(self, alerts: Sequence[Alert]) -> bytes | None:
        """The chart PNG for a message (cached briefly: receivers of one group share it)."""
        key = tuple(a.id for a in alerts)
        if key in self._charts:
            return self._charts[key]
        bars = self._bars.load()
        png = None
        if bars.height and alerts[0].history is not None:
            png = await asyncio.to_thread(alert_chart, bars, alerts, self.config.charts.sessions)
        self._charts[key] = png
        while len(self._charts) > 64:
            self._charts.popitem(last=False)
        return png

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
        d = self.config.digest
        now = self.clock.now()
        since_ms = int((now - dt.timedelta(days=1)).timestamp() * 1000)
        entries: Any = await self.redis.xrange(self.stream, min=f"{since_ms}-0", max="+")
        alerts = []
        for _, f in entries:
            with contextlib.suppress(KeyError, msgspec.DecodeError, msgspec.ValidationError):
                alerts.append(decode_alert(f[b"alert"]))
        bars = self._bars.load()
        day = now.astimezone(_zone(d.tz)).date()
        digest = build_digest(alerts, bars, d, day)
        png = await asyncio.to_thread(rally_chart, bars, d.small, d.large) if bars.height else None
        jobs: list[tuple[str, Prepared]] = []
        for name in d.receivers or self.config.route.receivers:
            fmt = self._formats[name]
            attach = (
                ((f"digest-{day}.png", png),)
                if png and self._senders[name].takes_attachments
                else ()
            )
            msg = Message(digest.title, digest.bodies[fmt], fmt, attach)
            jobs.append((name, Prepared(f"digest:{day.isoformat()}", msg)))
            if queue:
                self._queues[name].put_nowait(jobs[-1][1])
        self._log.info("digest_built", day=day.isoformat(), alerts=len(alerts))
        return jobs


def _zone(name: str) -> dt.tzinfo:
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


def _safe_name(symbol: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in symbol) or "chart"


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


SAMPLE = Alert(
    id="notify-test-sample",
    rule="streak.daily",
    kind="streak",
    symbol="^RUT",
    timeframe="1d",
    session="2024-07-16",
    ts="2024-07-16T20:00:00Z",
    severity="notice",
    title="Russell 2000: 5 straight sessions up more than 1.0% (test message)",
    text="Russell 2000 rose more than 1.0% in each of 5 sessions (+11.5% in all), "
    "closing at 2,263.67.",
    metrics={"streak": 5, "return": 0.1154, "close": 2263.67},
    history=None,
)


async def send_test(
    config: NotifyConfig, receiver: str, environ: dict[str, str] | None = None
) -> Outcome:
    """Send a sample alert to one receiver now (no grouping, no delivery log)."""
    config.receiver(receiver)
    notifier = Notifier(config, environ=environ)
    async with notifier:
        message = await notifier.message(receiver, [SAMPLE])
        return await notifier._couriers[receiver].deliver(message)


async def run(
    config: NotifyConfig,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    clock: Clock | None = None,
    notify: Callable[[str], None] | None = None,
) -> int:
    """Run the notifier until SIGTERM/SIGINT (or `stop`); the exit code. `notify` receives
    systemd's READY=1, WATCHDOG=1 (every half WatchdogSec) and STOPPING=1."""
    import signal

    from monitor.systemd import watchdog_interval_s

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            notifier = await stack.enter_async_context(Notifier(config, clock=clock))
            if config.http.enabled:
                from monitor.http import HttpServer

                routes = {
                    "/metrics": lambda: (
                        200,
                        "text/plain; version=0.0.4",
                        notifier.counters.render().encode(),
                    )
                }
                await stack.enter_async_context(
                    HttpServer(config.http.host, config.http.port, routes)
                )
            if notify is not None:
                notify("READY=1")
            every_s = watchdog_interval_s()
            async with asyncio.TaskGroup() as tg:
                if notify is not None and every_s is not None:
                    tg.create_task(_watchdog(notify, every_s, stop), name="systemd-watchdog")
                await notifier.run(stop)
                stop.set()
            if notify is not None:
                notify("STOPPING=1")
    except DeliveryError as exc:
        raise ConfigError(f"receivers: {exc}") from None
    return 0


async def _watchdog(notify: Callable[[str], None], every_s: float, stop: asyncio.Event) -> None:
    """WATCHDOG=1 while the event loop runs."""
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
