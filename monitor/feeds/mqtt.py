"""MqttFeed: an MQTT subscription in, batches of messages out, reconnecting for ever.

A connection lives exactly as long as its `async with aiomqtt.Client(...)`; `run()` loops over
connections with a backoff between them, resubscribes after every reconnect and counts the gap.
With `session_expiry_s` the feed keeps a persistent session (MQTT 3.1.1 clean_session off, or with
`protocol="5"` clean_start off plus the session expiry interval), so QoS 1
messages published while it was away are delivered when it comes back.

Messages do not go through aiomqtt's per-message queue and iterator (a Message object, a queue
put and a task wake-up each, ~10 µs): paho's `on_message` appends the payload to a list, the
socket reader reads a burst of packets per wake-up, and the reader task takes the whole list at
once. In raw mode that list goes on as one `Wire` (decoded downstream in one pass); otherwise each
message is decoded into its own FeedBatch.

Backpressure: the bytes received but not yet processed (the `Wire`'s ack has not run, or the
decoded batch is not on the queue yet) are bounded by `max_backlog_bytes`. Past it the feed stops
reading the socket (TCP pushes back on the broker, which queues, or past its limit drops and
says so on `$SYS`) and reads again once the backlog is below half. The client that does both is
in monitor/feeds/mqtt_client.py.

Quiet: with `quiet` settings, a feed whose topics bring nothing for `stale_after_s` of regular
hours (its source quiet, or its connection down) raises `feed_stale` (and `feed_recovered` at
the next message), as the WebSocket feeds do (`monitor.feeds.events.QuietWatch`).

Shutdown, when `stop` is set: the feed takes in no more messages, waits (up to `grace_s`) for
the engine to process and acknowledge the QoS 1 Wires it handed on, so that their PUBACKs leave
on the connection that received the messages, waits for the broker to confirm it has them, and
only then disconnects (see `Handoff` in monitor/feeds/wire.py and `InboxClient.confirm_sent`).
Disconnecting first would lose those acks, and the broker would deliver the messages again to
the next session, processed twice. What the engine has not started on by the end of the grace
period is withdrawn, left unacknowledged: delivered again, once; so is what was read and never
handed on (the client's inbox, a batch waiting for room on a full queue). If the connection is
lost meanwhile no ack can reach the broker any more, and the feed stops waiting at once: what
the engine still processes comes again next session (a duplicate).

aiomqtt and paho types stay in these two modules: a lost connection becomes `FeedDisconnected`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor import logs
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import ConfigError, FeedDisconnected
from monitor.feeds.events import QuietSettings, QuietWatch
from monitor.feeds.generic import decode_generic
from monitor.feeds.mqtt_client import DROPPED_TOPIC, Backlog, InboxClient, tls_context
from monitor.feeds.reconnects import Reconnects
from monitor.feeds.rejections import RejectionLog
from monitor.feeds.wire import Handoff, Wire, hand_on, put

__all__ = ["DROPPED_TOPIC", "Decoder", "MqttFeed"]

Decoder = Callable[[bytes], FeedBatch]
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
GRACE_S = 10.0
PAUSE_LOG_EVERY_S = 60.0


# Connections with a fixed client_id lost this soon after being made, this many times in a row:
# another client holds the same client_id (the broker ends one session for the other, back and
# forth), and the feed says so (`feed_client_id_in_use`, and in its error: /healthz).
TAKEN_OVER_S = 5.0
TAKEN_OVER_AFTER = 3


class MqttFeed:
    """Subscribe to `topics` and put what arrives on `queue` (awaiting if full): with `raw`, one
    `Wire` per wake-up holding every message read since the last (its `ack` is to be called once
    the engine has processed them); otherwise one decoded batch per message. Stopping waits up
    to `grace_s` for those acks (see the module).

    Counters (label `feed`): feed_messages, feed_ticks, feed_bars, feed_rejections{reason}
    (without `raw`: with it, the messages are decoded, and their rejections counted, by the
    daemon's pipeline, in `rejections`), feed_queue_full_waits, feed_connects, feed_subscribes,
    feed_reconnects, feed_gap_seconds, feed_read_pauses; gauges feed_connected, feed_paused,
    feed_backlog_bytes and broker_messages_dropped.
    """

    def __init__(
        self,
        name: str,
        url: str,
        topics: list[str],
        *,
        queue: asyncio.Queue[FeedBatch | Wire],
        counters: Counters,
        backoff: Backoff,
        qos: Literal[0, 1] = 0,
        client_id: str | None = None,
        session_expiry_s: int | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        decoder: Decoder | None = None,
        raw: bool = False,
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        watch_broker_drops: bool = False,
        stable_after_s: float = 30.0,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        grace_s: float = GRACE_S,
        rejection_log_interval_s: float = 10.0,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        quiet: QuietSettings | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"feed {name}: url must be mqtt://host[:port] or mqtts://...")
        if parts.username or parts.password:
            raise ConfigError(f"feed {name}: put credentials in username/password, not the url")
        if not topics:
            raise ConfigError(f"feed {name}: topics is empty")
        if session_expiry_s is not None and not client_id:
            raise ConfigError(f"feed {name}: session_expiry_s needs a fixed client_id")
        self.name = name
        self._tls = parts.scheme == "mqtts"
        self._host = parts.hostname
        self._port = parts.port or (8883 if self._tls else 1883)
        self._topics = list(topics)
        self._qos = qos
        self._client_id = client_id
        self._session_expiry_s = session_expiry_s
        self._username = username
        self._password = password
        self._ca_file = ca_file
        self._decode: Decoder = decoder or (lambda payload: decode_generic(payload, feed=name))
        self._raw = raw
        self._protocol = protocol
        self._queue = queue
        self._counters = counters
        self._watch_drops = watch_broker_drops
        self._grace_s = grace_s
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._log = logs.get("feed.mqtt").bind(
            feed=name, url=f"{parts.scheme}://{self._host}:{self._port}"
        )
        self._rejections = RejectionLog(
            self._log,
            counters,
            counter="feed_rejections",
            interval_s=rejection_log_interval_s,
            clock=clock,
            feed=name,
        )
        self._reconnects = Reconnects(
            name,
            backoff,
            stable_after_s,
            counters=counters,
            log=self._log,
            rejections=self._rejections,
        )
        self._broker_dropped: int | None = None
        self._connected_at: float | None = None
        self._backlog = Backlog(
            max_backlog_bytes, self._on_paused, self._on_resumed, self._on_backlog_released
        )
        self._pauses_logged_at: float | None = None
        self._pauses_unlogged = 0
        self._handoff = Handoff()
        self._unsent: list[tuple[list[bytes], list[int], int]] = []  # caught by the stop
        self._reading: asyncio.Timeout | None = None  # set while a connection hands messages on
        self._quiet = QuietWatch(name, quiet, counters, self._log) if quiet is not None else None
        # The topics the broker refused on this connection (not authorised to read them, say),
        # with its code: nothing comes on them, which /healthz says (the connection is up).
        self.refused_topics: list[str] = []

    @property
    def last_error(self) -> str | None:
        """Why the last connection was lost or refused (None: none was), for /healthz."""
        return self._reconnects.last_error

    def __repr__(self) -> str:
        return f"MqttFeed({self.name!r}, {self._host}:{self._port}, topics={self._topics!r})"

    async def run(self, stop: asyncio.Event) -> None:
        """Read until `stop` is set, reconnecting on every loss; then, connected, stop reading and
        disconnect once what was handed on is acknowledged (see the module); mid-backoff or
        mid-connect, stop at once."""
        try:
            async with asyncio.TaskGroup() as tg:
                loop = tg.create_task(self._reconnect_loop(stop), name=f"feed-{self.name}")
                watch = None
                if self._quiet is not None:
                    name = f"feed-{self.name}-watchdog"
                    watch = tg.create_task(self._quiet.watch(), name=name)
                await stop.wait()
                if watch is not None:
                    watch.cancel()
                if self._reading is not None:
                    self._reading.reschedule(asyncio.get_running_loop().time())
                else:
                    loop.cancel()
        finally:
            self._counters.set("feed_connected", 0, feed=self.name)
            self._counters.set("feed_paused", 0, feed=self.name)
            self._rejections.flush()
            self._log.info("feed_stopped")

    async def _reconnect_loop(self, stop: asyncio.Event) -> None:
        lost_at: float | None = None
        brief = 0  # connections in a row lost within TAKEN_OVER_S of being made
        while True:
            self._connected_at = None
            try:
                await self._connection(lost_at)
                return  # stopped
            except FeedDisconnected as exc:
                if stop.is_set():  # lost while draining: nothing left to acknowledge on
                    self._log.warning("feed_lost_while_draining", error=str(exc))
                    return
                lasted = None
                error = str(exc)
                if self._connected_at is not None:
                    lost_at = self._clock()
                    lasted = lost_at - self._connected_at
                    brief = brief + 1 if lasted < TAKEN_OVER_S else 0
                    if brief >= TAKEN_OVER_AFTER and self._client_id:
                        error += f" ({self._taken_over()})"
                        if brief == TAKEN_OVER_AFTER:
                            self._log.error("feed_client_id_in_use", hint=self._taken_over())
                await self._reconnects.pause(error, lasted)

    def _taken_over(self) -> str:
        """What connections lost one after the other within seconds of being made, with a
        fixed client_id, most likely are."""
        return (
            f"each connection ends within seconds: another client may be connected with "
            f"client_id {self._client_id!r} (the broker ends the older session for the newer "
            "one, and each gets part of the messages); give each daemon its own client_id"
        )

    async def _connection(self, lost_at: float | None) -> None:
        """One connection from connect to loss (raises FeedDisconnected) or to the stop."""
        persistent = self._session_expiry_s is not None
        v5 = self._protocol == "5"
        # MQTT 3.1.1 by default: paho builds a Properties object for every v5 message, which
        # costs about a third of the client's CPU (measured: bench/ingest.py). A 3.1.1
        # persistent session (clean_session off) lives until the broker expires it; MQTT 5
        # adds the session expiry interval.
        session = {"clean_start": not persistent} if v5 else {"clean_session": not persistent}
        client = InboxClient(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            properties=self._connect_properties() if v5 else None,
            **session,  # type: ignore[arg-type]
            keepalive=self._keepalive_s,
            timeout=self._timeout_s,
            tls_context=tls_context(self._ca_file) if self._tls else None,
        )
        # Acknowledge QoS 1 messages only once the engine has processed them (Wire.ack), not on
        # receipt: a crash in between makes the broker redeliver, nothing is lost.
        client.use_inbox(
            self._backlog,
            manual_ack=self._raw and self._qos > 0,
            on_dropped=self._on_broker_dropped if self._watch_drops else None,
        )
        self._backlog.client = client
        try:
            async with client:
                self._on_connected(client.session_present, lost_at)
                await self._subscribe(client)
                await self._read_until_stopped(client)
                await self._drain(client)
        except aiomqtt.MqttError as exc:
            raise FeedDisconnected(f"{self.name}: {exc}") from exc
        finally:
            self._backlog.client = None
            self._counters.set("feed_paused", 0, feed=self.name)

    def _connect_properties(self) -> Properties | None:
        if self._session_expiry_s is None:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry_s
        return props

    def _on_connected(self, session_present: bool, lost_at: float | None) -> None:
        self._connected_at = self._clock()
        self._counters.inc("feed_connects", feed=self.name)
        self._counters.set("feed_connected", 1, feed=self.name)
        self._log.info("feed_connected", session_present=session_present)
        if lost_at is not None:
            gap_s = self._clock() - lost_at
            self._counters.inc("feed_gap_seconds", gap_s, feed=self.name)
            self._log.warning("feed_gap", gap_s=round(gap_s, 3), session_present=session_present)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        wanted: list[tuple[str, int]] = [(topic, self._qos) for topic in self._topics]
        if self._watch_drops:
            wanted.append((DROPPED_TOPIC, 0))
        granted: list[int | ReasonCode] = list(await client.subscribe(wanted))
        refused: list[str] = []
        for (topic, _), code in zip(wanted, granted, strict=True):
            if code.is_failure if isinstance(code, ReasonCode) else code >= 0x80:
                self._counters.inc("feed_subscribe_refused", feed=self.name)
                self._log.error("feed_subscribe_refused", topic=topic, code=str(code))
                if topic != DROPPED_TOPIC:  # (the broker's drop count, not data: often private)
                    refused.append(f"{topic} ({code})")
        self.refused_topics = refused
        self._counters.inc("feed_subscribes", feed=self.name)
        self._log.info("feed_subscribed", topics=[t for t, _ in wanted], qos=self._qos)

    async def _read_until_stopped(self, client: InboxClient) -> None:
        """Hand messages on until `run` ends the read (stop), then take in no more: what was
        read and not handed on yet stays unacknowledged (the broker delivers it again)."""
        try:
            async with asyncio.timeout(None) as reading:
                self._reading = reading
                try:
                    await self._read(client)
                finally:
                    self._reading = None
        except TimeoutError:
            if not reading.expired():
                raise
        if not self._session_outlives_connection():
            await self._hand_on_rest(client)
        client.stop_taking()

    def _session_outlives_connection(self) -> bool:
        """Whether the broker keeps this feed's session (and its unacknowledged messages) for
        the next connection: a fixed client id with `session_expiry_s` (above 0 with MQTT 5)."""
        expiry = self._session_expiry_s
        return expiry is not None and (self._protocol != "5" or expiry > 0)

    async def _drain(self, client: InboxClient) -> None:
        """Wait for the engine to process and acknowledge what was handed on, then for the
        broker to confirm it has the acks, all while connected; if the connection is lost
        meanwhile, at once return (no ack can reach the broker any more). Without a session
        that outlives the connection the broker would deliver nothing again: the engine takes in
        all that was handed on (acknowledgements of a clean session go nowhere), withdrawing
        nothing.

        Logged: the QoS 1 messages left unacknowledged to the next session, those withdrawn
        from the engine's queue, those read but never handed on (`dropped`: in the client's
        inbox, waiting for room on a full queue, or delivered after the stop) and, when the
        connection was lost, those still out to the engine."""
        if not self._session_outlives_connection():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace_s  # (the whole drain: the outbox has its own)
        settled = await self._handoff.settle(self._grace_s, client.lost)
        dropped = client.dropped
        left = settled.withdrawn + settled.unacknowledged + dropped
        if client.lost.done():
            self._log.warning(
                "feed_lost_while_draining",
                error=_ending(client.lost),
                left_messages=left,
                unacknowledged_messages=settled.unacknowledged,
                withdrawn_messages=settled.withdrawn,
                dropped_messages=dropped,
                hint="left unacknowledged: a broker that kept the session delivers them again "
                "to the next one (those the engine processes now then come in twice, as "
                "duplicates); acks sent just before the loss may not have reached it either",
            )
            return
        if left:
            self._log.warning(
                "feed_drain_incomplete",
                left_messages=left,
                withdrawn_messages=settled.withdrawn,
                dropped_messages=dropped,
                grace_s=self._grace_s,
                hint="left unacknowledged: the broker delivers them again to the next session",
            )
        if self._raw and self._qos > 0:
            try:
                await client.confirm_sent(min(self._timeout_s, max(deadline - loop.time(), 1.0)))
            except aiomqtt.MqttError as exc:
                self._log.warning(
                    "feed_acks_unconfirmed",
                    error=str(exc),
                    hint="the broker may deliver again messages that were processed",
                )

    async def _read(self, client: InboxClient) -> None:
        while True:
            batch = await client.take()
            if self._quiet is not None and batch[0]:
                self._quiet.data()
            self._counters.inc("feed_messages", len(batch[0]), feed=self.name)
            self._counters.set("feed_backlog_bytes", self._backlog.size, feed=self.name)
            try:
                await self._hand_on(client, *batch)
            except asyncio.CancelledError:  # the stop, while the queue was full: not handed on
                if self._session_outlives_connection():
                    client.drop(*batch[1:])  # (the broker delivers it again)
                else:
                    self._unsent.append(batch)  # (it would not: `_hand_on_rest` takes it)
                raise

    async def _hand_on(
        self, client: InboxClient, payloads: list[bytes], mids: list[int], size: int
    ) -> None:
        """Put a batch read from the broker on the engine's queue, waiting while it is full."""
        counters, feed, queue = self._counters, self.name, self._queue
        on_full = functools.partial(counters.inc, "feed_queue_full_waits", feed=feed)
        if not self._raw:
            for payload in payloads:
                await hand_on(self._decode(payload), queue, counters, self._rejections, feed)
            self._backlog.release(size)
            return
        # Decoded downstream, many messages at once (the engine loop's micro-batch).
        ack = functools.partial(client.processed, mids, size)
        if mids and self._session_outlives_connection():  # QoS 1: may be withdrawn at stop
            release = functools.partial(self._backlog.release, size)
            await self._handoff.put(
                queue, feed, payloads, ack=ack, release=release, on_full=on_full
            )
        else:  # QoS 0, or a session that ends with the connection: never withdrawn
            await put(queue, Wire(feed, payloads, ack), on_full)

    async def _hand_on_rest(self, client: InboxClient) -> None:
        """At stop, without a session the broker keeps: what was read and not handed on yet
        (a batch the stop caught waiting for room, the messages read since) goes to the
        engine all the same, since nothing would deliver it again."""
        rest, self._unsent = [*self._unsent, client.take_now()], []
        for batch in rest:
            if batch[0]:
                self._counters.inc("feed_messages", len(batch[0]), feed=self.name)
                await self._hand_on(client, *batch)

    def _on_paused(self, size: int) -> None:
        """The socket is no longer read: count it, and log now and then."""
        feed = self.name
        self._counters.inc("feed_read_pauses", feed=feed)
        self._counters.set("feed_paused", 1, feed=feed)
        self._pauses_unlogged += 1
        now = self._clock()
        last = self._pauses_logged_at
        if last is None or now - last >= PAUSE_LOG_EVERY_S:
            self._log.warning(
                "feed_read_paused",
                backlog_bytes=size,
                pauses=self._pauses_unlogged,
                hint="the engine is behind the feed; the broker queues (or drops QoS 0)",
            )
            self._pauses_logged_at = now
            self._pauses_unlogged = 0

    def _on_resumed(self) -> None:
        self._counters.set("feed_paused", 0, feed=self.name)

    def _on_backlog_released(self, size: int) -> None:
        self._counters.set("feed_backlog_bytes", size, feed=self.name)

    def _on_broker_dropped(self, payload: bytes) -> None:
        try:
            dropped = int(payload)
        except ValueError:
            self._log.warning(
                "broker_drops_unreadable", raw=payload[:64].decode("utf-8", "replace")
            )
            return
        self._counters.set("broker_messages_dropped", dropped, feed=self.name)
        previous, self._broker_dropped = self._broker_dropped, dropped
        if previous is not None and dropped > previous:
            self._log.warning(
                "broker_dropping_messages", dropped=dropped, increase=dropped - previous
            )
        elif previous is None and dropped > 0:
            self._log.warning("broker_dropping_messages", dropped=dropped, increase=None)


def _ending(lost: asyncio.Future[None]) -> str:
    """How a connection ended, for the log: its error, if any."""
    exc = None if lost.cancelled() else lost.exception()
    return str(exc) if exc is not None else "disconnected"
