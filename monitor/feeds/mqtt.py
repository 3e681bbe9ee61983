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
reading the socket (TCP pushes back on the broker, which queues, or drops QoS 0 and says so on
`$SYS`) and reads again once the backlog is below half.

aiomqtt and paho types stay in this module: a lost connection becomes `FeedDisconnected`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor import logs
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import ConfigError, FeedDisconnected
from monitor.feeds.generic import decode_generic
from monitor.feeds.rejections import RejectionLog
from monitor.feeds.wire import Wire, hand_on

__all__ = ["DROPPED_TOPIC", "Decoder", "MqttFeed"]

Decoder = Callable[[bytes], FeedBatch]
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
MESSAGE_OVERHEAD_BYTES = 64  # a bytes object and a list slot, counted with each payload
READ_BURST = 256  # packets read per socket wake-up at most (the loop stays responsive)
PAUSE_LOG_EVERY_S = 60.0


class MqttFeed:
    """Subscribe to `topics` and put what arrives on `queue` (awaiting if full): with `raw`, one
    `Wire` per wake-up holding every message read since the last (its `ack` is to be called once
    the engine has processed them); otherwise one decoded batch per message.

    Counters (label `feed`): feed_messages, feed_ticks, feed_bars, feed_rejections{reason},
    feed_queue_full_waits, feed_connects, feed_subscribes, feed_reconnects, feed_gap_seconds,
    feed_read_pauses; gauges feed_connected, feed_paused, feed_backlog_bytes and
    broker_messages_dropped.
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
        rejection_log_interval_s: float = 10.0,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
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
        self._backoff = backoff
        self._watch_drops = watch_broker_drops
        self._stable_after_s = stable_after_s
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
        self._broker_dropped: int | None = None
        self._connected_at: float | None = None
        self._backlog = _Backlog(max_backlog_bytes, self._on_paused, self._on_resumed)
        self._pauses_logged_at: float | None = None
        self._pauses_unlogged = 0

    def __repr__(self) -> str:
        return f"MqttFeed({self.name!r}, {self._host}:{self._port}, topics={self._topics!r})"

    async def run(self, stop: asyncio.Event) -> None:
        """Read until `stop` is set (also mid-backoff or mid-connect); reconnect on every loss."""
        try:
            async with asyncio.TaskGroup() as tg:
                loop = tg.create_task(self._reconnect_loop(), name=f"feed-{self.name}")
                await stop.wait()
                loop.cancel()
        finally:
            self._counters.set("feed_connected", 0, feed=self.name)
            self._counters.set("feed_paused", 0, feed=self.name)
            self._rejections.flush()
            self._log.info("feed_stopped")

    async def _reconnect_loop(self) -> None:
        attempt = 0
        lost_at: float | None = None
        while True:
            self._connected_at = None
            try:
                await self._connection(lost_at)
            except FeedDisconnected as exc:
                now = self._clock()
                self._counters.set("feed_connected", 0, feed=self.name)
                if self._connected_at is not None:
                    lost_at = now
                    if now - self._connected_at >= self._stable_after_s:
                        attempt = 0
                delay = self._backoff.delay(attempt)
                attempt += 1
                self._counters.inc("feed_reconnects", feed=self.name)
                self._log.warning(
                    "feed_reconnecting", error=str(exc), attempt=attempt, delay_s=round(delay, 3)
                )
                self._rejections.flush()
                await asyncio.sleep(delay)

    async def _connection(self, lost_at: float | None) -> None:
        """One connection from connect to loss; raises FeedDisconnected when it ends."""
        persistent = self._session_expiry_s is not None
        v5 = self._protocol == "5"
        # MQTT 3.1.1 by default: paho builds a Properties object for every v5 message, which
        # costs about a third of the client's CPU (measured: bench/ingest.py). A 3.1.1
        # persistent session (clean_session off) lives until the broker expires it; MQTT 5
        # adds the session expiry interval.
        session = {"clean_start": not persistent} if v5 else {"clean_session": not persistent}
        client = _Client(
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
            tls_context=_tls_context(self._ca_file) if self._tls else None,
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
                await self._read(client)
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
        for (topic, _), code in zip(wanted, granted, strict=True):
            if code.is_failure if isinstance(code, ReasonCode) else code >= 0x80:
                self._counters.inc("feed_subscribe_refused", feed=self.name)
                self._log.error("feed_subscribe_refused", topic=topic, code=str(code))
        self._counters.inc("feed_subscribes", feed=self.name)
        self._log.info("feed_subscribed", topics=[t for t, _ in wanted], qos=self._qos)

    async def _read(self, client: _Client) -> None:
        counters, feed, queue, decode = self._counters, self.name, self._queue, self._decode
        backlog = self._backlog
        while True:
            payloads, mids, size = await client.take()
            counters.inc("feed_messages", len(payloads), feed=feed)
            counters.set("feed_backlog_bytes", backlog.size, feed=feed)
            if self._raw:
                # Decoded downstream, many messages at once (the engine loop's micro-batch).
                wire = Wire(feed, payloads, functools.partial(client.processed, mids, size))
                try:
                    queue.put_nowait(wire)
                except asyncio.QueueFull:
                    counters.inc("feed_queue_full_waits", feed=feed)
                    await queue.put(wire)
                continue
            for payload in payloads:
                await hand_on(decode(payload), queue, counters, self._rejections, feed)
            backlog.release(size)

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


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the broker (chain and host name) against `ca_file`, else the system CAs."""
    context = ssl.create_default_context(cafile=ca_file)
    context.sslsocket_class = _ClosingSSLSocket
    return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails (a refused certificate): paho drops it unclosed."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _Backlog:
    """Bytes received from the broker and not yet processed, across connections; the socket of
    the current connection is not read while they exceed `limit`, until they are below half."""

    __slots__ = ("client", "limit", "on_pause", "on_resume", "resume_below", "size")

    def __init__(
        self, limit: int, on_pause: Callable[[int], None], on_resume: Callable[[], None]
    ) -> None:
        self.size = 0
        self.limit = limit
        self.resume_below = limit // 2
        self.on_pause = on_pause
        self.on_resume = on_resume
        self.client: _Client | None = None

    def release(self, size: int) -> None:
        """`size` bytes have been processed (or handed on where nothing reports back)."""
        self.size -= size
        client = self.client
        if client is not None and client.is_paused and self.size < self.resume_below:
            client.resume_reading()
            self.on_resume()


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the CONNACK session-present flag it otherwise discards, and
    with `use_inbox` reading into a list instead of aiomqtt's message queue (see the module)."""

    session_present: bool = False
    is_paused: bool = False
    _inbox: list[bytes] | None = None

    def use_inbox(
        self,
        backlog: _Backlog,
        *,
        manual_ack: bool,
        on_dropped: Callable[[bytes], None] | None,
    ) -> None:
        """Before connecting: deliver messages through `take()`, counted in `backlog`; with
        `manual_ack` QoS 1 messages are acknowledged by `processed()`; `on_dropped` gets the
        broker's dropped-messages count (DROPPED_TOPIC) if given."""
        self._inbox = []
        self._mids: list[int] = []
        self._inbox_size = 0
        self._backlog = backlog
        self._manual_ack = manual_ack
        self._on_dropped = on_dropped
        self._waiter: asyncio.Future[None] | None = None
        self._fd: int | None = None
        self._client.manual_ack_set(manual_ack)

    async def take(self) -> tuple[list[bytes], list[int], int]:
        """Every message read since the last call (waiting for one): payloads, the message ids
        to acknowledge, and their size as counted in the backlog. Raises MqttError once the
        connection is lost and nothing is left."""
        assert self._inbox is not None
        while not self._inbox:
            disconnected = self._disconnected
            if disconnected.done():
                exc = disconnected.exception()
                raise aiomqtt.MqttError("Disconnected during message iteration") from exc
            waiter = self._waiter = self._loop.create_future()
            disconnected.add_done_callback(self._wake)
            try:
                await waiter
            finally:
                disconnected.remove_done_callback(self._wake)
                self._waiter = None
        payloads, mids, size = self._inbox, self._mids, self._inbox_size
        self._inbox, self._mids, self._inbox_size = [], [], 0
        return payloads, mids, size

    def processed(self, mids: list[int], size: int) -> None:
        """Messages handed on by `take()` are processed: acknowledge them, release the backlog."""
        if mids:
            ack = self._client.ack
            for mid in mids:
                ack(mid, 1)
        self._backlog.release(size)

    def _wake(self, _: object = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        inbox = self._inbox
        if inbox is None:
            super()._on_message(client, userdata, message)
            return
        payload = cast(bytes, message.payload)  # bytes: sliced from the packet
        if self._on_dropped is not None and message.topic == DROPPED_TOPIC:
            self._on_dropped(payload)
            return
        inbox.append(payload)
        if self._manual_ack and message.qos:
            self._mids.append(message.mid)
        size = len(payload) + MESSAGE_OVERHEAD_BYTES
        self._inbox_size += size
        self._backlog.size += size

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._inbox is None:
            super()._on_socket_open(client, userdata, sock)
            return
        fd = sock.fileno()

        def start() -> None:  # paho calls this from the connecting executor thread
            self._fd = fd
            if not self.is_paused:
                self._loop.add_reader(fd, self._on_readable)
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._loop.call_soon_threadsafe(start)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._fd = None
        super()._on_socket_close(client, userdata, sock)

    def _on_readable(self) -> None:
        """Read up to READ_BURST packets, stopping early when nothing more is there or the
        backlog is full; then wake the reader task."""
        client, backlog = self._client, self._backlog
        try:
            for _ in range(READ_BURST):
                read = len(self._inbox or ())
                if client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    break
                if backlog.size > backlog.limit:
                    self._pause_reading()
                    break
                if len(self._inbox or ()) == read and not _tls_pending(client):
                    break  # nothing more to read now (or a packet other than PUBLISH)
            else:
                if _tls_pending(client):  # decrypted bytes the selector does not see
                    self._loop.call_soon(self._on_readable)
        except Exception as exc:  # as aiomqtt's reader: the connection broke
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
        if self._inbox:
            self._wake()

    def _pause_reading(self) -> None:
        if self.is_paused:
            return
        self.is_paused = True
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._backlog.on_pause(self._backlog.size)

    def resume_reading(self) -> None:
        """Read the socket again (and at once: a packet may be half read, or TLS-buffered)."""
        if not self.is_paused:
            return
        self.is_paused = False
        if self._fd is not None:
            self._loop.add_reader(self._fd, self._on_readable)
            self._loop.call_soon(self._on_readable)


def _tls_pending(client: paho.Client) -> bool:
    sock = client._sock  # paho leaves TLS-decrypted bytes here (paho issue 131)
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0
