"""MqttFeed: an MQTT subscription in, one FeedBatch per message out, reconnecting for ever.

A connection lives exactly as long as its `async with aiomqtt.Client(...)`; `run()` loops over
connections with a backoff between them, resubscribes after every reconnect and counts the gap.
With `session_expiry_s` the feed keeps a persistent session (MQTT 3.1.1 clean_session off, or with
`protocol="5"` clean_start off plus the session expiry interval), so QoS 1
messages published while it was away are delivered when it comes back.

aiomqtt and paho types stay in this module: a lost connection becomes `FeedDisconnected`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable
from typing import Any, Literal
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
from monitor.feeds.wire import Wire

__all__ = ["DROPPED_TOPIC", "Decoder", "MqttFeed"]

Decoder = Callable[[bytes], FeedBatch]
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


class MqttFeed:
    """Subscribe to `topics`, decode every message and put the batch on `queue` (awaiting if full).

    Counters (label `feed`): feed_messages, feed_ticks, feed_bars, feed_rejections{reason},
    feed_queue_full_waits, feed_connects, feed_subscribes, feed_reconnects, feed_gap_seconds;
    gauges feed_connected and broker_messages_dropped.
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
        if self._raw and self._qos > 0:
            # Acknowledge QoS 1 messages only once the engine has processed them (Wire.ack),
            # not on receipt: a crash in between makes the broker redeliver, nothing is lost.
            client._client.manual_ack_set(True)
        try:
            async with client:
                self._on_connected(client.session_present, lost_at)
                await self._subscribe(client)
                await self._read(client)
        except aiomqtt.MqttError as exc:
            raise FeedDisconnected(f"{self.name}: {exc}") from exc

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

    async def _read(self, client: aiomqtt.Client) -> None:
        counters, feed, queue, decode = self._counters, self.name, self._queue, self._decode
        watch_drops = self._watch_drops
        async for message in client.messages:
            payload = message.payload
            if watch_drops and message.topic.value == DROPPED_TOPIC:
                self._on_broker_dropped(payload)
                continue
            if self._raw:
                # Decoded downstream, many messages at once (the engine loop's micro-batch).
                counters.inc("feed_messages", feed=feed)
                ack = None
                if message.qos > 0 and self._qos > 0:
                    ack = functools.partial(client._client.ack, message.mid, message.qos)
                wire = Wire(feed, _as_bytes(payload), ack)
                try:
                    queue.put_nowait(wire)
                except asyncio.QueueFull:
                    counters.inc("feed_queue_full_waits", feed=feed)
                    await queue.put(wire)
                continue
            batch = decode(payload)
            counters.inc("feed_messages", feed=feed)
            if batch.ticks.height:
                counters.inc("feed_ticks", batch.ticks.height, feed=feed)
            bars = batch.minute_bars.height + batch.daily_bars.height
            if bars:
                counters.inc("feed_bars", bars, feed=feed)
            if batch.rejections:
                self._rejections.record(batch.rejections)
            try:
                queue.put_nowait(batch)
            except asyncio.QueueFull:
                counters.inc("feed_queue_full_waits", feed=feed)
                await queue.put(batch)

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


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the CONNACK session-present flag it otherwise discards."""

    session_present: bool = False

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


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
