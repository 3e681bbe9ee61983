"""The notifier service: builds the notifier's parts from a NotifyConfig and runs them. Entries
come in through the inbox (monitor/notify/inbox.py: the consumer group, claims, XACK), are
routed here (silences, grouping, quiet hours: monitor/notify/routing.py), and go out through the
dispatch (monitor/notify/dispatch.py: a queue, courier and task per receiver). What it sends is
made in monitor/notify/compose.py; the delivery log and dead letters are monitor/notify/ledger.py.

    async with Notifier(config) as notifier:
        await notifier.run(stop)

Exactly once per channel: an entry is XACKed only when every receiver it was routed to has it
(sent, dead-lettered, or dropped to the digest by quiet hours). Silenced, inhibited and
throttled alerts are acked at once (inhibited and throttled ones are kept in the saved state,
saved before the ack; so is their summary, until every receiver has it: `_complete`, and
`Router.resume` at start). Claiming, the delivery log and per-receiver tasks: see the inbox and
the dispatch.

Each notifier saves its state under its own key, with a lease while it runs; the state of one
that stopped is adopted by another, or by the next start (monitor/notify/custody.py, over
monitor/notify/states.py).

The digest goes out at `[digest] at`, once a day per receiver (the delivery log). One whose
delivery failed (after its `[delivery]` attempts) is queued again `[delivery] backoff_cap_s`
later by the ticker, until it is sent or its day ends: alerts dropped to the digest by quiet
hours were acked, so the digest is the only place they are told (monitor/notify/digest_schedule.py).

Bad entries: an entry that is not an alert the notifier can use (no `alert` field, not JSON, not
the schema, or a `ts` / `session` / prior date it cannot read: monitor/notify/payload.py) is
dead-lettered for receiver `*` and acked; so is an alert whose routing raises (a bug: logged as
`alert_route_failed` with its id and entry). Either way the other alerts go on: one entry never
stops the notifier, nor, left pending, every restart.

Redis faults: at start, an unreachable Redis is `SinkUnavailable` (the service waits and enters
again: monitor/notify/main.py; a one-off command exits 69) and a refused login or command a
`ConfigError` (exit 78), see `redis_failure` (monitor/notify/inbox.py; a stream key of another
type is named, with what to do: `wrong_type_error`). A failed entry leaves
nothing open, so the Notifier may be entered again. Once running, `_check_redis` tells /healthz
whether Redis answers (monitor/notify/health.py); reads wait and retry; writes an
acknowledgement depends on (delivery log, dead letters, saved state, XACK) are retried until
Redis answers (monitor/notify/ledger.py `retrying`), so an outage delays but never loses or
crashes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Any, Self

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, RedisError

from monitor import logs
from monitor.clock import Clock, SystemClock
from monitor.core.counters import Counters
from monitor.core.model import Alert
from monitor.errors import ConfigError
from monitor.notify.compose import Composer, Prepared, body_format
from monitor.notify.config import NotifyConfig, http_warnings, placeholder_warnings, resolve_url
from monitor.notify.custody import Custody
from monitor.notify.delivery import Outcome, Sender
from monitor.notify.digest_schedule import DigestSchedule
from monitor.notify.dispatch import Dispatcher, open_couriers
from monitor.notify.grouping import Batch
from monitor.notify.health import Health
from monitor.notify.inbox import (
    Entries,
    Inbox,
    is_wrong_type,
    key_type,
    pause,
    redis_client,
    redis_failure,
    wrong_type_error,
)
from monitor.notify.ledger import DeadLetters, DeliveryLog, retrying
from monitor.notify.payload import entry_alert
from monitor.notify.render import Message
from monitor.notify.routing import FEED_KINDS, GuardState, Router
from monitor.notify.shared_feeds import SharedFeeds
from monitor.notify.silences import SilenceStore
from monitor.notify.states import StateStore
from monitor.redis_errors import is_temporary

STOP_GRACE_S = 2.0  # past block_ms: how long a stopping reader may finish what it read
FEEDS_EVERY_S = 1.0  # how often the ticker looks at the group's feed health (shared_feeds.py)
FEEDS_GRANT = "+hgetall +hset +watch +unwatch +multi +exec"  # what shared feed health needs
REDIS_CHECK_S = 2.0  # how often /healthz learns whether Redis answers, as the daemon's


class Notifier:
    """Everything the running notifier holds; built from a NotifyConfig."""

    delivered: DeliveryLog  # these inside the `async with`
    dead: DeadLetters
    inbox: Inbox
    dispatch: Dispatcher
    states: StateStore
    custody: Custody
    digest: DigestSchedule

    def __init__(
        self,
        config: NotifyConfig,
        *,
        clock: Clock | None = None,
        counters: Counters | None = None,
        environ: dict[str, str] | None = None,
        senders: dict[str, Sender] | None = None,
        tick_s: float = 0.05,
        delivery_grace_s: float | None = None,  # (None: [delivery] stop_grace_s)
        consume: bool = True,  # False: no consumer group, lease or state (`notify dead`)
        # The receivers it may send to (their URLs resolved, their secrets needed); None: all.
        # `notify dead list` sends to none, `dead resend` to those of the letters it resends.
        receivers: Collection[str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock if clock is not None else SystemClock()
        self.counters = counters if counters is not None else Counters()
        self.stream = config.redis.stream
        self.group = config.redis.group
        self.consumer = config.redis.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._environ = environ
        self._tick_s = tick_s
        self._delivery_grace_s = (
            config.delivery.stop_grace_s if delivery_grace_s is None else delivery_grace_s
        )
        self._log = logs.get("notifier").bind(consumer=self.consumer)
        self._senders = dict(senders or {})
        self._given = set(self._senders)  # (those made at entry are dropped at exit)
        self._consume = consume
        self.health = Health(self.counters)
        self._urls: dict[str, str] = {}
        for i, r in enumerate(config.receivers):
            if receivers is None or r.name in receivers:
                self._urls[r.name] = str(resolve_url(r, f"receivers[{i}].url", environ))
        for line in placeholder_warnings(config):
            self._log.warning("receiver_placeholder_unfilled", detail=line)
        for line in http_warnings(config):
            self._log.warning("http_settings_ignored", detail=line)
        self._client: aioredis.Redis | None = None
        self._silences: SilenceStore | None = None
        self._unreadable_silences: dict[str, str] = {}  # (logged: `_silences_unreadable`)
        self._silences_error: str | None = None  # (the last logged: `_silences_failed`)
        self.router = Router(config.route, config.receivers, config.runaway, name=self.consumer)
        self._feeds: SharedFeeds | None = None  # (None: not shared, see `_group_feeds`)
        self._feeds_at = 0.0  # (event-loop time the ticker last looked at them)
        self._feeds_error: str | None = None  # (the last logged: `_feeds_failed`)
        self._wake = asyncio.Event()
        formats = {r.name: body_format(r, self._urls.get(r.name, "")) for r in config.receivers}
        self.composer = Composer(config, formats, self._senders)
        for name, text in (
            ("notify_read", "Stream entries read (or claimed) by this notifier"),
            ("notify_sent", "Messages delivered, per receiver"),
            ("notify_alerts_sent", "Alerts delivered, per receiver"),
            ("notify_already_sent", "Alerts skipped because the delivery log had them"),
            ("notify_dead_lettered", "Alerts sent to the dead-letter stream, per receiver"),
            ("notify_dropped", "Alerts not sent, per reason (silenced, inhibited, ...)"),
            ("notify_acked", "Stream entries acknowledged"),
            ("notify_trimmed_unread", "Alerts trimmed from the stream before this group read them"),
            ("notify_trimmed_pending", "Alerts read, then trimmed from the stream before delivery"),
            ("notify_stream_unread", "Alerts in the stream this group has not read yet"),
            ("notify_stream_pending", "Alerts this group read and has not acknowledged"),
            ("notify_waiting", "Alerts waiting in groups or quiet hours"),
            ("notify_held", "Alerts held back, per reason (inhibited: a feed stale; throttled)"),
            ("notify_stale_feeds", "Feeds this notifier holds alerts back for (stale)"),
            ("notify_state_adopted", "Saved states of stopped notifiers adopted by this one"),
            (
                "notify_dead_letters_trimmed",
                "Dead letters trimmed to make room ([redis] dead_maxlen)",
            ),
        ):
            self.counters.describe(name, text)
        # At 0 from the start in /metrics (a Prometheus `rate()` needs the series).
        for name in (
            "notify_read",
            "notify_acked",
            "notify_already_sent",
            "notify_trimmed_unread",
            "notify_trimmed_pending",
            "notify_state_adopted",
            "notify_dead_letters_trimmed",
        ):
            self.counters.zero(name)
        for receiver in config.receivers:
            for name in ("notify_sent", "notify_alerts_sent", "notify_dead_lettered"):
                self.counters.zero(name, receiver=receiver.name)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            couriers = open_couriers(self.config, self._urls, self._senders)
        except ConfigError:
            await self.__aexit__(None, None, None)
            raise
        self._client = redis_client(self.config, self._environ)
        self._silences = SilenceStore(self._client, f"{self.stream}:silences")
        self.delivered = DeliveryLog(
            self._client, self.stream, self.config.redis.delivery_log_ttl_s, self._log
        )
        self.dead = DeadLetters(
            self._client,
            self.config.dead_stream,
            self.counters,
            self._log,
            self.clock,
            self.config.redis.dead_maxlen,
        )
        self.inbox = Inbox(
            self._client, self.config.redis, self.consumer, self._process, self.counters, self._log
        )
        self.dispatch = Dispatcher(
            couriers,
            self.composer,
            self.delivered,
            self.dead,
            self._complete,
            lambda receiver, job: self.digest.failed(receiver, job),
            self.counters,
            self._log,
        )
        self.digest = DigestSchedule(
            self.config,
            self._client,
            self.composer,
            self.dispatch.put,
            clock=self.clock,
            log=self._log,
        )
        lease_s, holder = self.config.redis.claim_idle_s, f"{socket.gethostname()}-{os.getpid()}"
        self.states = StateStore(
            self._client, self.stream, self.group, self.consumer, lease_s, holder
        )
        self.custody = Custody(
            self._client,
            self.states,
            self.router,
            claim_interval_s=self.config.redis.claim_interval_s,
            claim_idle_s=lease_s,
            clock=self.clock,
            counters=self.counters,
            log=self._log,
            wake=self._wake,
        )
        self._feeds = SharedFeeds(self._client, self.stream, self.group)
        self.health.receivers = self.dispatch.failing
        self.health.writes = self._writes_refused
        self.health.stream = lambda: self.inbox.stream_problem
        if not self._consume:
            return self
        try:
            await self._join_group()
            await self.inbox.sweep()  # (others' consumers holding nothing; never fatal)
            await self.states.hold_lease()  # (first: no other adopts our state while we read it)
            self.custody.lease_at = asyncio.get_running_loop().time()
            raw: Any = await self._client.get(self.custody.key)
        except RedisError as exc:
            error = redis_failure(exc, self.config.redis.url)
            if is_wrong_type(exc) and await key_type(self.redis, self.stream) != "stream":
                error = await wrong_type_error(self.redis, self.stream, self.config.redis.url)
            await self.__aexit__(None, None, None)
            raise error from None
        self.health.redis_answered()
        if raw:
            self.router.state = msgspec.json.decode(raw, type=GuardState)
            self.custody.saved = raw
            self.router.resume(self.clock.now())
        self.composer.check_charts()
        return self

    async def reachable(self) -> None:
        """For a command that does not consume (`notify test`, `notify digest`): fail as a
        start does (one line naming Redis; exit 69 unreachable, 78 refused) when Redis does
        not answer, instead of waiting on it."""
        try:
            await self.redis.ping()
        except RedisError as exc:
            raise redis_failure(exc, self.config.redis.url) from None

    async def _join_group(self) -> None:
        """Join the consumer group, or create it at `redis.start`. Created at "$" over a stream
        that holds alerts (a first start, or a group lost with Redis's data before this
        notifier ran), those alerts are not read: a warning says how many."""
        start = self.config.redis.start
        if not await self.inbox.create(start) or start != "$":
            return
        skipped = await self.inbox.stream_length()
        if skipped:
            self._log.warning(
                "notify_group_created",
                stream=self.stream,
                group=self.group,
                start=start,
                skipped=skipped,
                hint='set [redis] start = "0" to read the alerts already in the stream',
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sender in self._senders.values():
            await sender.aclose()
        for name in set(self._senders) - self._given:  # (made again at the next entry)
            del self._senders[name]
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client (inside the `async with`)."""
        if self._client is None:
            raise RuntimeError("Notifier used outside its `async with`")
        return self._client

    async def run(self, stop: asyncio.Event) -> None:
        """Read, route, deliver and acknowledge until `stop` is set."""
        self._log.info(
            "notifier_started",
            stream=self.stream,
            group=self.group,
            receivers=[r.name for r in self.config.receivers],
        )
        async with asyncio.TaskGroup() as tg:
            workers = {
                name: tg.create_task(self.dispatch.worker(name), name=f"notify_receiver_{name}")
                for name in self.dispatch.queues
            }
            ticker = tg.create_task(self._ticker(stop), name="notify_ticker")
            drained = asyncio.Event()  # (the deliveries in flight at the stop finished)
            claimer = tg.create_task(self.inbox.claim(stop, drained), name="notify_claimer")
            custody = tg.create_task(self.custody.run(stop), name="notify_custody")
            digest = None
            if self.config.digest.enabled:
                digest = tg.create_task(self.digest.run(stop), name="notify_digest")
            reader = tg.create_task(self.inbox.read(stop), name="notify_reader")
            redis_check = tg.create_task(self._check_redis(stop), name="notify_redis_check")
            self.health.phase = "running"
            await stop.wait()
            self.health.phase = "stopping"
            # Workers take no new job from now on, and finish the one in hand (`finish`).
            finishing = tg.create_task(
                self.dispatch.finish(workers, self._delivery_grace_s), name="notify_finish"
            )
            # The reader returns within block_ms of `stop`, unless Redis is down and it waits
            # on a write: then it is cancelled (its entries stay pending for the next start).
            grace_s = self.config.redis.block_ms / 1000 + STOP_GRACE_S
            await asyncio.wait([reader], timeout=grace_s)
            for task in [reader, ticker, digest, redis_check]:
                if task is not None:
                    task.cancel()
            await finishing
            # (last: the claimer keeps our entries ours, and custody our lease, while the
            # deliveries in flight finish)
            drained.set()
            claimer.cancel()
            custody.cancel()
        await self.custody.hand_over()
        await self.inbox.leave()  # (only with no entry pending: those stay for others to claim)
        self._log.info("notifier_stopped", waiting=self.router.waiting())

    def _writes_refused(self) -> tuple[str, bool] | None:
        """Why Redis refuses our writes, and whether our lease lapsed meanwhile (see Health)."""
        refused = self.custody.refused
        return None if refused is None else (refused, not self.custody.lease_held())

    async def _check_redis(self, stop: asyncio.Event) -> None:
        """Until `stop` is set, ask Redis every REDIS_CHECK_S whether it answers (EXISTS on the
        stream: a command the notifier's ACL user has, docs/security.md), for /healthz and
        `market_monitor_notify_redis_up`. A refusal (NOPERM...) is an answer."""
        while not stop.is_set():
            try:
                await self.redis.exists(self.stream)
            except RedisError as exc:
                if is_temporary(exc):
                    self.health.redis_failed(str(redis_failure(exc, self.config.redis.url)))
                else:
                    self.health.redis_answered()
            else:
                self.health.redis_answered()
            await pause(stop, REDIS_CHECK_S)

    # -- routing -------------------------------------------------------------------------------

    async def _process(self, entries: Entries) -> None:
        assert self._silences is not None
        now = self.clock.now()
        store = self._silences
        try:
            silences = await retrying(lambda: store.active(now), self._log, "redis_unavailable")
        except RedisError as exc:  # (WRONGTYPE, NOPERM: not ours to mend; alerts still go)
            self._silences_failed(exc)
            silences = []
        else:
            self._silences_error = None
            self._silences_unreadable(store.unreadable)
        await self._group_feeds(now)
        to_ack: list[str] = []
        feed_health: list[Alert] = []  # (told to the group before they are acked)
        for raw_id, fields in entries:
            entry = raw_id.decode()
            self.inbox.saw(entry)
            if entry in self.inbox.outstanding:
                continue
            self.counters.inc("notify_read")
            try:
                alert = entry_alert(fields)
            except KeyError:
                reason = "undecodable entry: no `alert` field"
                await self.dead.add(entry, None, "*", reason, 0, fields)
                to_ack.append(entry)
                continue
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.dead.add(entry, None, "*", f"undecodable entry: {exc}", 0, fields)
                to_ack.append(entry)
                continue
            if alert.kind in FEED_KINDS:
                feed_health.append(alert)
            try:
                decision = self.router.accept(entry, alert, now, silences)
            except Exception as exc:  # (a bug on one alert must not stop every receiver)
                error = f"{type(exc).__name__}: {exc}"
                self._log.error(
                    "alert_route_failed", id=alert.id, entry=entry, error=error, exc_info=True
                )
                await self.dead.add(entry, alert, "*", f"routing failed: {error}", 0)
                to_ack.append(entry)
                continue
            if decision.receivers:
                self.inbox.outstanding[entry] = set(decision.receivers)
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
            self._noticed(decision.notices)
        await self._tell_feeds(feed_health, now)
        await self.custody.save()
        await self.inbox.ack(to_ack)
        self._gauges()
        self._wake.set()

    def _silences_failed(self, exc: RedisError) -> None:
        """The silences cannot be read (the key holds something else, an ACL without HGETALL):
        alerts are routed as if none were set, rather than the notifier stopping at every
        read; logged once per error."""
        error = f"{type(exc).__name__}: {exc}"
        if error != self._silences_error:
            self._silences_error = error
            key = self._silences.key if self._silences is not None else None
            self._log.error("silences_failed", key=key, error=error)

    def _silences_unreadable(self, unreadable: dict[str, str]) -> None:
        """A value of the silences hash that is no silence silences nothing: said once (each
        time it changes), with how to remove it."""
        for key, error in unreadable.items():
            if self._unreadable_silences.get(key) != error:
                self._log.error(
                    "silence_unreadable",
                    key=self._silences.key if self._silences is not None else None,
                    silence=key,
                    error=error,
                    fix=f"market-monitor silence expire {key} (removes it)",
                )
        self._unreadable_silences = dict(unreadable)

    def _gauges(self) -> None:
        """What /metrics says is waiting and held back (and for which stale feeds)."""
        state = self.router.state
        self.counters.set("notify_waiting", self.router.waiting())
        self.counters.set("notify_held", len(state.inhibited), reason="inhibited")
        throttled = sum(len(held) for held in state.throttled.values())
        self.counters.set("notify_held", throttled, reason="throttled")
        self.counters.set("notify_stale_feeds", len(state.stale_feeds))

    def _noticed(self, notices: Sequence[Alert]) -> None:
        for notice in notices:
            self._log.warning(
                "notify_notice", kind=notice.kind, rule=notice.rule, title=notice.title
            )

    # -- feed health, shared by the group (monitor/notify/shared_feeds.py) ---------------------

    async def _group_feeds(self, now: dt.datetime) -> None:
        """Take in the feed health the group's notifiers read. Redis away: left for the next
        look (the ticker's, within FEEDS_EVERY_S of it answering again). Not while our lease
        may have lapsed: another notifier may have adopted our held alerts, and summarising
        them here too would tell them twice (custody sorts that out first: custody.py)."""
        feeds = self._feeds
        if feeds is None or not self.custody.lease_held():
            return
        try:
            group = await feeds.read(now)
        except NoPermissionError as exc:
            self._refused_feeds(exc)
            return
        except RedisError as exc:  # (WRONGTYPE...: not ours to mend; delivery goes on)
            if not is_temporary(exc):
                self._feeds_failed(exc)
            return
        self._feeds_error = None
        self._noticed(self.router.shared_feeds(group, now))

    async def _tell_feeds(self, alerts: Sequence[Alert], now: dt.datetime) -> None:
        """Tell the group the feed-health alerts read (retried until Redis answers: before
        they are acknowledged)."""
        feeds = self._feeds
        if feeds is None or not alerts:
            return
        try:
            await retrying(lambda: feeds.record(alerts, now), self._log, "redis_unavailable")
        except NoPermissionError as exc:
            self._refused_feeds(exc)
        except RedisError as exc:
            self._feeds_failed(exc)

    def _refused_feeds(self, exc: NoPermissionError) -> None:
        """An ACL rule of before (without WATCH): feed health stays this notifier's own."""
        self._log.error("feed_sharing_refused", error=str(exc), grant=FEEDS_GRANT)
        self._feeds = None

    def _feeds_failed(self, exc: RedisError) -> None:
        """The group's feed health cannot be read or written (the key holds something else,
        Redis out of memory): logged once per error, and tried again at the next look."""
        error = f"{type(exc).__name__}: {exc}"
        if error != self._feeds_error:
            self._feeds_error = error
            key = self._feeds.key if self._feeds is not None else None
            self._log.error("feed_sharing_failed", key=key, error=error)

    # -- grouping and quiet hours ------------------------------------------------------------

    async def _ticker(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()
            now = self.clock.now()
            if loop.time() >= self._feeds_at + FEEDS_EVERY_S:
                self._feeds_at = loop.time()
                await self._group_feeds(now)
            self.digest.retry_due(now)
            for batch in self.router.due(now):
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
                    self.dispatch.put(batch.receiver, batch)
            await self.custody.save()
            self._gauges()
            await pause(stop, self._tick_s, self._wake)

    # -- delivery ------------------------------------------------------------------------------

    async def _complete(self, batch: Batch) -> None:
        """`batch.receiver` has the batch (sent, dead-lettered or dropped to the digest): the
        entries no other receiver waits for are acked, and summaries of held alerts every
        receiver has leave the state (saved by the ticker, which this wakes)."""
        self.router.completed(batch.receiver, batch.alerts)
        self._wake.set()
        await self.inbox.complete(batch)

    async def deliver_prepared(self, receiver: str, job: Prepared) -> str:
        """Send a pre-rendered message (the digest) once to `receiver`; what became of it."""
        return await self.dispatch.deliver_prepared(receiver, job)

    async def message(self, receiver: str, alerts: Sequence[Alert]) -> Message:
        """The message for `alerts` on `receiver` (see Composer.message)."""
        return await self.composer.message(receiver, alerts)

    async def send_now(self, receiver: str, message: Message) -> Outcome:
        """Deliver `message` to `receiver` at once: no grouping, no delivery log."""
        return await self.dispatch.send_now(receiver, message)

    async def send_digest(self, *, queue: bool = True) -> list[tuple[str, Prepared]]:
        """Build today's digest and queue it for the digest receivers (once per day each)."""
        return await self.digest.build(queue=queue)
