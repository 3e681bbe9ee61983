"""The MQTT client under MqttFeed: aiomqtt's, reading messages into a list instead of its
per-message queue, with a bounded backlog that stops reading the socket (see monitor/feeds/mqtt.py),
a shutdown that takes in no more and makes sure the broker has the acks before disconnecting,
and TLS that verifies the broker.

It overrides aiomqtt's callbacks (`_on_message`, `_on_socket_open`, `_on_socket_close`) and uses
its `_misc_loop` and `_disconnected`: pyproject.toml pins aiomqtt to the minor version they were
written against."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
MESSAGE_OVERHEAD_BYTES = 64  # a bytes object and a list slot, counted with each payload
READ_BURST = 256  # packets read per socket wake-up at most (the loop stays responsive)
BARRIER_FILTER = "market-monitor/ack-barrier"  # never subscribed to: unsubscribing changes nothing


def tls_context(ca_file: str | None) -> ssl.SSLContext:
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


class Backlog:
    """Bytes received from the broker and not yet processed, across connections; the socket of
    the current connection is not read while they exceed `limit`, until they are below half.
    `on_release` gets the size left after each release (the gauge follows the processing)."""

    __slots__ = ("client", "limit", "on_pause", "on_release", "on_resume", "resume_below", "size")

    def __init__(
        self,
        limit: int,
        on_pause: Callable[[int], None],
        on_resume: Callable[[], None],
        on_release: Callable[[int], None],
    ) -> None:
        self.size = 0
        self.limit = limit
        self.resume_below = limit // 2
        self.on_pause = on_pause
        self.on_resume = on_resume
        self.on_release = on_release
        self.client: InboxClient | None = None

    def release(self, size: int) -> None:
        """`size` bytes have been processed, handed on where nothing reports back, or dropped."""
        self.size -= size
        self.on_release(self.size)
        client = self.client
        if client is not None and client.is_paused and self.size < self.resume_below:
            client.resume_reading()
            self.on_resume()


class InboxClient(aiomqtt.Client):
    """aiomqtt's client, keeping the CONNACK session-present flag it otherwise discards, and
    with `use_inbox` reading into a list instead of aiomqtt's message queue (see the module)."""

    session_present: bool = False
    is_paused: bool = False
    is_stopped: bool = False
    dropped: int = 0  # QoS 1 messages read and never handed on, left unacknowledged (see drop)
    _inbox: list[bytes] | None = None

    def use_inbox(
        self,
        backlog: Backlog,
        *,
        manual_ack: bool,
        on_dropped: Callable[[bytes], None] | None,
    ) -> None:
        """Before connecting: deliver messages through `take()`, counted in `backlog`; with
        `manual_ack` QoS 1 messages are acknowledged by `processed()`; `on_dropped` gets the
        broker's dropped-messages count (DROPPED_TOPIC) if given."""
        self._inbox = []
        self._received = 0
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
        return self.take_now()

    def take_now(self) -> tuple[list[bytes], list[int], int]:
        """`take()` without waiting: what was read since the last call (possibly nothing)."""
        assert self._inbox is not None
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

    def drop(self, mids: list[int], size: int) -> None:
        """Messages from `take()` will never be handed on (the stop came first): leave them
        unacknowledged (the broker delivers them again next session), counted in `dropped`,
        and release the backlog."""
        self.dropped += len(mids)
        self._backlog.release(size)

    @property
    def lost(self) -> asyncio.Future[None]:
        """Done once this connection has ended (with its error if it was lost)."""
        return self._disconnected

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
        self._received += 1
        if self.is_stopped:
            if self._manual_ack and message.qos:
                self.dropped += 1  # not acknowledged: the broker delivers it again next session
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
                read = self._received
                if client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    break
                if backlog.size > backlog.limit and not self.is_stopped:
                    self._pause_reading()
                    break
                if self._received == read and not _tls_pending(client):
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
        if self.is_paused or self.is_stopped:
            return
        self.is_paused = True
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._backlog.on_pause(self._backlog.size)

    def stop_taking(self) -> None:
        """Shutdown: take in no more messages. What was read and not taken yet, and what the
        broker delivers from now on, is dropped, unacknowledged (it comes again next session;
        counted in `dropped`); the socket is still read, for the answer that `confirm_sent`
        waits for."""
        self.is_stopped = True
        # Read but not handed on yet: dropped as well.
        mids, size = self._mids, self._inbox_size
        self._inbox, self._mids, self._inbox_size = [], [], 0
        self.drop(mids, size)
        self.resume_reading()

    async def confirm_sent(self, timeout_s: float) -> None:
        """Return once the broker has handled every packet sent so far (the acks of what was
        processed). A socket closed with unread data in it is reset, and the broker drops what
        it had not read yet, acks included; but it handles a client's packets in order, so its
        answer to an unsubscribe sent after them (from a filter never subscribed to, which
        changes nothing) says it has them. Raises MqttError if no answer comes in time."""
        await self.unsubscribe(BARRIER_FILTER, timeout=timeout_s)

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
