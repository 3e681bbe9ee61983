"""MqttFeed in raw mode (the daemon's): messages handed on in batches, a bounded backlog of
unprocessed messages, and QoS 1 acknowledgements only once the engine has processed them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.feeds.mqtt import MqttFeed
from monitor.feeds.mqtt_client import MESSAGE_OVERHEAD_BYTES
from monitor.feeds.wire import Wire
from tests.feeds.mosquitto_server import MosquittoServer
from tests.feeds.test_mqtt import publish, running, until

pytestmark = pytest.mark.integration

Queue = asyncio.Queue[FeedBatch | Wire]


def raw_feed(port: int, topic: str, counters: Counters, queue: Queue, **kwargs: object) -> MqttFeed:
    return MqttFeed(
        "raw",
        f"mqtt://127.0.0.1:{port}",
        [topic],
        queue=queue,
        counters=counters,
        backoff=Backoff(base_s=0.05, cap_s=0.2, jitter=0),
        raw=True,
        **kwargs,  # type: ignore[arg-type]
    )


async def take_wires(queue: Queue, messages: int, timeout_s: float = 10.0) -> list[Wire]:
    """Wires off the queue until they hold `messages` messages."""
    wires: list[Wire] = []
    async with asyncio.timeout(timeout_s):
        while sum(len(w.payloads) for w in wires) < messages:
            item = await queue.get()
            assert isinstance(item, Wire)
            wires.append(item)
    return wires


def payloads(wires: list[Wire]) -> list[bytes]:
    return [p for w in wires for p in w.payloads]


def messages(n: int, start: int = 0, size: int = 0) -> list[bytes]:
    return [f"m{i:05d}".encode().ljust(size, b" ") for i in range(start, start + n)]


@pytest.fixture
def prefix() -> str:
    return f"mm-test/{uuid.uuid4().hex}"


async def test_raw_messages_arrive_in_order_as_few_wires_each_with_an_ack(prefix: str) -> None:
    """A burst of messages arrives in order as Wires of many messages each; every Wire has an
    ack and (QoS 0: nothing to acknowledge, nothing the feed could withdraw) no claim, and
    feed_messages counts the messages, not the Wires."""
    counters, queue = Counters(), Queue(maxsize=1000)
    topic = f"{prefix}/ticks"
    sent = messages(500)
    async with running(raw_feed(1883, topic, counters, queue, watch_broker_drops=True)):
        await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
        await publish(1883, topic, sent, qos=0)
        wires = await take_wires(queue, len(sent))
        for wire in wires:
            assert wire.ack is not None
            wire.ack()
    assert payloads(wires) == sent
    assert {(w.feed, w.claim) for w in wires} == {("raw", None)}
    assert len(wires) < len(sent)
    assert counters.get("feed_messages", feed="raw") == len(sent)
    assert counters.get("feed_read_pauses", feed="raw") == 0


@pytest.mark.chaos
async def test_the_feed_stops_reading_while_the_backlog_is_full_and_reads_on_once_processed(
    tmp_path: Path, prefix: str
) -> None:
    """With nothing processed, the feed takes in no more than its backlog bound and stops
    reading (counted, gauged, logged); once the Wires are acknowledged it reads the rest, in
    order and complete (the broker held them meanwhile)."""
    size = 200
    limit = 20 * (size + MESSAGE_OVERHEAD_BYTES)  # room for 20 messages
    sent = messages(300, size=size)
    counters, queue = Counters(), Queue(maxsize=10_000)
    topic = f"{prefix}/ticks"
    with MosquittoServer(tmp_path) as broker, capture_logs() as logs:
        feed = raw_feed(broker.port, topic, counters, queue, max_backlog_bytes=limit)
        async with running(feed):
            await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
            await publish(broker.port, topic, sent, qos=1)
            await until(lambda: counters.get("feed_paused", feed="raw") == 1)
            await until(lambda: counters.get("feed_messages", feed="raw") == queue_messages(queue))
            held = drain(queue)
            # at most the bound, plus the one message that crossed it
            assert len(payloads(held)) <= 21
            assert counters.get("feed_read_pauses", feed="raw") == 1

            got = list(held)
            while len(payloads(got)) < len(sent):
                for wire in held:
                    assert wire.ack is not None
                    wire.ack()
                held = await take_wires(queue, 1)
                got += held
            for wire in held:
                assert wire.ack is not None
                wire.ack()
            assert counters.get("feed_paused", feed="raw") == 0
    assert payloads(got) == sent
    assert counters.get("feed_messages", feed="raw") == len(sent)
    assert counters.get("feed_read_pauses", feed="raw") >= 2  # 300 messages, room for 20
    assert counters.get("feed_backlog_bytes", feed="raw") == 0
    paused = [e for e in logs if e["event"] == "feed_read_paused"]
    assert [(e["log_level"], e["pauses"]) for e in paused] == [("warning", 1)]  # then quiet


async def test_the_backlog_gauge_follows_the_acks_with_nothing_new_arriving(prefix: str) -> None:
    """feed_backlog_bytes counts the messages taken and not yet processed, and goes down with
    each Wire's ack, to 0 once all are processed, without waiting for another message."""
    size = 100
    sent = messages(15, size=size)  # (the broker sends 20 unacknowledged messages at most)
    counters, queue = Counters(), Queue(maxsize=1000)
    topic = f"{prefix}/ticks"
    async with running(raw_feed(1883, topic, counters, queue, qos=1)):
        await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
        await publish(1883, topic, sent, qos=1)
        wires = await take_wires(queue, len(sent))
        gauges = [counters.get("feed_backlog_bytes", feed="raw")]
        for wire in wires:
            assert wire.ack is not None
            wire.ack()
            gauges.append(counters.get("feed_backlog_bytes", feed="raw"))
    left = [len(sent) - len(payloads(wires[:i])) for i in range(len(wires) + 1)]
    assert gauges == [n * (size + MESSAGE_OVERHEAD_BYTES) for n in left]


def queue_messages(queue: Queue) -> int:
    return sum(len(w.payloads) for w in queue._queue if isinstance(w, Wire))  # type: ignore[attr-defined]


def drain(queue: Queue) -> list[Wire]:
    out: list[Wire] = []
    while not queue.empty():
        item = queue.get_nowait()
        assert isinstance(item, Wire)
        out.append(item)
    return out


@pytest.mark.chaos
async def test_qos1_messages_are_acknowledged_only_by_the_wire_ack(
    tmp_path: Path, prefix: str
) -> None:
    """With QoS 1 and a persistent session, messages whose Wire was not acknowledged are
    delivered again after a reconnect (the first feed withdraws them once its grace period is
    over); acknowledged ones are not."""
    topic = f"{prefix}/ticks"
    client_id = f"feed-{uuid.uuid4().hex}"
    sent = messages(5)
    with MosquittoServer(tmp_path) as broker:

        def feed(counters: Counters, queue: Queue) -> MqttFeed:
            return raw_feed(
                broker.port, topic, counters, queue, qos=1, client_id=client_id,
                session_expiry_s=300, grace_s=0.2,
            )  # fmt: skip

        counters, queue = Counters(), Queue(maxsize=100)
        async with running(feed(counters, queue)):
            await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
            await publish(broker.port, topic, sent, qos=1)
            first = await take_wires(queue, len(sent))  # taken, never acknowledged

        counters, queue = Counters(), Queue(maxsize=100)
        async with running(feed(counters, queue)):
            again = await take_wires(queue, len(sent))
            for wire in again:
                assert wire.ack is not None
                wire.ack()  # the broker confirms it has them before the feed disconnects

        counters, queue = Counters(), Queue(maxsize=100)
        async with running(feed(counters, queue)):
            await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
            await publish(broker.port, topic, [b"after"], qos=1)
            last = await take_wires(queue, 1)
    assert (payloads(first), payloads(again), payloads(last)) == (sent, sent, [b"after"])


class Session(NamedTuple):
    """A raw QoS 1 feed with a persistent session, with its counters and queue."""

    feed: MqttFeed
    counters: Counters
    queue: Queue

    def is_subscribed(self) -> bool:
        return self.counters.get("feed_subscribes", feed="raw") == 1


def persistent_feed(
    port: int,
    topic: str,
    client_id: str,
    grace_s: float,
    protocol: str = "3.1.1",
    queue_size: int = 1000,
) -> Session:
    counters, queue = Counters(), Queue(maxsize=queue_size)
    feed = raw_feed(
        port, topic, counters, queue, qos=1, client_id=client_id, session_expiry_s=300,
        grace_s=grace_s, protocol=protocol,
    )  # fmt: skip
    return Session(feed, counters, queue)


async def wires_of(
    session: Session, port: int, topic: str, batches: list[list[bytes]]
) -> list[list[Wire]]:
    """Once the session is subscribed, publish each batch (QoS 1) and take its Wires."""
    await until(session.is_subscribed)
    taken = []
    for batch in batches:
        await publish(port, topic, batch, qos=1)
        taken.append(await take_wires(session.queue, len(batch)))
    return taken


async def next_session(session: Session, port: int, topic: str, expected: int) -> list[bytes]:
    """What the session receives: the `expected` messages the broker delivers again, then one
    published after it subscribed (so nothing delivered again can hide behind it)."""
    async with running(session.feed):
        await until(session.is_subscribed)
        await publish(port, topic, [b"after"], qos=1)
        wires = await take_wires(session.queue, expected + 1)
        for wire in wires:
            assert wire.ack is not None
            wire.ack()
    return payloads(wires)


@pytest.mark.chaos
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_stopping_disconnects_only_once_what_was_handed_on_is_acknowledged(
    tmp_path: Path, prefix: str, protocol: str
) -> None:
    """Stop is set while the Wires of 15 QoS 1 messages wait, unprocessed: the feed stays
    connected until they are acknowledged (here after the stop), the broker has the acks, and
    the next session gets none of them again."""
    topic = f"{prefix}/ticks"
    client_id = f"feed-{uuid.uuid4().hex}"
    sent = messages(15)  # (the broker sends 20 unacknowledged messages at most)
    with MosquittoServer(tmp_path) as broker:
        session = persistent_feed(broker.port, topic, client_id, grace_s=5.0, protocol=protocol)
        stop = asyncio.Event()
        task = asyncio.create_task(session.feed.run(stop))
        try:
            await until(session.is_subscribed)
            await publish(broker.port, topic, sent, qos=1)
            wires = await take_wires(session.queue, len(sent))
            stop.set()
            await asyncio.sleep(0.3)
            waited = not task.done()
            for wire in wires:
                assert wire.claim is not None and wire.ack is not None
                assert wire.claim()
                wire.ack()
            await asyncio.wait_for(task, 5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        again = await next_session(
            persistent_feed(broker.port, topic, client_id, 5.0, protocol=protocol),
            broker.port,
            topic,
            0,
        )
    assert (waited, payloads(wires), again) == (True, sent, [b"after"])


@pytest.mark.chaos
async def test_past_the_grace_period_what_the_engine_has_not_claimed_is_withdrawn(
    tmp_path: Path, prefix: str
) -> None:
    """Stopping with three batches out: the first acknowledged in time; the second claimed in
    time (an engine step under way) and acknowledged after the grace period, which the feed
    waits for; the third never claimed, so withdrawn (its claim fails, its ack does nothing).
    The next session gets the third again, and only it."""
    topic = f"{prefix}/ticks"
    client_id = f"feed-{uuid.uuid4().hex}"
    batches = [messages(6, start=6 * i) for i in range(3)]  # 20 unacknowledged at most
    with MosquittoServer(tmp_path) as broker, capture_logs() as logs:
        session = persistent_feed(broker.port, topic, client_id, grace_s=0.5)
        stop = asyncio.Event()
        task = asyncio.create_task(session.feed.run(stop))
        try:
            taken = await wires_of(session, broker.port, topic, batches)
            acked_in_time, claimed_in_time, never_claimed = taken
            stop.set()
            for wire in acked_in_time:
                assert wire.claim is not None and wire.claim()
                assert wire.ack is not None
                wire.ack()
            claims = [w.claim() for w in claimed_in_time if w.claim is not None]
            await asyncio.sleep(0.8)  # past the grace period
            waited = not task.done()
            withdrawn = [w.claim() for w in never_claimed if w.claim is not None]
            for wire in [*claimed_in_time, *never_claimed]:
                assert wire.ack is not None
                wire.ack()
            await asyncio.wait_for(task, 5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        again = await next_session(
            persistent_feed(broker.port, topic, client_id, 5.0),
            broker.port,
            topic,
            len(batches[2]),
        )
    assert (claims, waited, withdrawn) == (
        [True] * len(claimed_in_time),
        True,
        [False] * len(never_claimed),
    )
    assert again == [*batches[2], b"after"]
    incomplete = [e for e in logs if e["event"] == "feed_drain_incomplete"]
    assert [
        (e["left_messages"], e["withdrawn_messages"], e["dropped_messages"], e["grace_s"])
        for e in incomplete
    ] == [(6, 6, 0, 0.5)]


@pytest.mark.parametrize(
    ("client_id", "expiry", "protocol"),
    [("", None, "3.1.1"), ("fixed", 0, "5")],  # no fixed id; MQTT 5 with a session ending at once
)
async def test_without_a_lasting_session_nothing_read_is_withdrawn_at_stop(
    tmp_path: Path, prefix: str, client_id: str, expiry: int | None, protocol: str
) -> None:
    """A QoS 1 feed whose session ends with the connection: the broker keeps nothing for the
    next one, so every batch read is the engine's for good (no claim to withdraw it by), none
    is withdrawn at stop, and the feed does not wait out the grace period."""
    topic = f"{prefix}/ticks"
    batch = messages(6)
    ident = f"{client_id}-{uuid.uuid4().hex}" if client_id else ""
    with MosquittoServer(tmp_path) as broker, capture_logs() as logs:
        counters, queue = Counters(), Queue(maxsize=1000)
        feed = raw_feed(
            broker.port, topic, counters, queue, qos=1, client_id=ident, session_expiry_s=expiry,
            grace_s=5.0, protocol=protocol,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        try:
            await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
            await publish(broker.port, topic, batch, qos=1)
            wires = await take_wires(queue, len(batch))
            stop.set()
            await asyncio.wait_for(task, 2)  # (not the 5 s grace)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert wires and all(w.claim is None for w in wires)  # (handed on for good: no claim)
    assert payloads(wires) == batch
    assert not [e for e in logs if e["event"] == "feed_drain_incomplete"]
