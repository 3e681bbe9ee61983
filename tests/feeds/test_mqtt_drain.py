"""MqttFeed stopping with a persistent QoS 1 session while things go wrong: the connection lost
during the drain, the engine's queue full at the stop. What is left to the next session is
counted, and the backlog gauge comes back to 0."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.core.counters import Counters
from monitor.feeds.mqtt_client import MESSAGE_OVERHEAD_BYTES
from monitor.feeds.wire import Wire
from tests.feeds.mosquitto_server import MosquittoServer
from tests.feeds.test_mqtt import publish, until
from tests.feeds.test_mqtt_backlog import (
    Queue,
    messages,
    next_session,
    payloads,
    persistent_feed,
    raw_feed,
    wires_of,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.fixture
def prefix() -> str:
    return f"mm-test/{uuid.uuid4().hex}"


@pytest.mark.parametrize("kept", [False, True], ids=["broker-killed", "broker-restarted"])
async def test_a_connection_lost_while_draining_ends_the_drain_at_once(
    tmp_path: Path, prefix: str, kept: bool
) -> None:
    """Stopping with two Wires of 5 QoS 1 messages out (one claimed by an engine step under
    way, one not yet), the broker goes away while the feed waits for their acks: run() returns
    at once instead of at the end of its 5 s grace period, warning that the 10 messages are
    left unacknowledged (the engine may still process them); a broker that kept the session
    delivers all 10 again to the next session, one killed has lost them."""
    topic = f"{prefix}/ticks"
    client_id = f"feed-{uuid.uuid4().hex}"
    batches = [messages(5), messages(5, start=5)]
    loop = asyncio.get_running_loop()
    with MosquittoServer(tmp_path) as broker, capture_logs() as logs:
        session = persistent_feed(broker.port, topic, client_id, grace_s=5.0)
        stop = asyncio.Event()
        task = asyncio.create_task(session.feed.run(stop))
        try:
            under_way, not_started = await wires_of(session, broker.port, topic, batches)
            claims = [w.claim() for w in under_way if w.claim is not None]
            stop.set()
            await asyncio.sleep(0.3)
            draining = not task.done()
            lost_at = loop.time()
            if kept:
                await asyncio.to_thread(broker.stop)  # SIGTERM: Mosquitto saves the session
            else:
                await asyncio.to_thread(broker.kill)
            await asyncio.wait_for(task, 4.0)
            stopped_after_s = loop.time() - lost_at
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        # The engine goes on after the feed is gone: its acks can go nowhere, harmlessly.
        late_claims = [w.claim() for w in not_started if w.claim is not None]
        for wire in [*under_way, *not_started]:
            assert wire.ack is not None
            wire.ack()
        broker.start()
        expected = 10 if kept else 0
        again = await next_session(
            persistent_feed(broker.port, topic, client_id, 5.0), broker.port, topic, expected
        )
    assert (claims, draining, late_claims) == (
        [True] * len(under_way),
        True,
        [True] * len(not_started),
    )
    assert stopped_after_s < 1.0, stopped_after_s  # not the 5 s grace period
    lost = [e for e in logs if e["event"] == "feed_lost_while_draining"]
    assert [
        (
            e["log_level"],
            e["left_messages"],
            e["unacknowledged_messages"],
            e["withdrawn_messages"],
            e["dropped_messages"],
        )
        for e in lost
    ] == [("warning", 10, 10, 0, 0)]
    assert not [e for e in logs if e["event"] in ("feed_drain_incomplete", "feed_acks_unconfirmed")]
    assert again == ([*batches[0], *batches[1]] if kept else []) + [b"after"]


async def test_a_stop_with_the_queue_full_counts_every_message_left_and_releases_its_bytes(
    tmp_path: Path, prefix: str
) -> None:
    """The engine's queue is full when the stop comes (one Wire, never claimed), a second Wire
    waits for room and the rest wait in the client's inbox: feed_drain_incomplete counts as
    left exactly the 15 messages the next session receives again (1 withdrawn from the queue,
    14 never handed on), and the backlog, bytes and gauge, is back at 0."""
    topic = f"{prefix}/ticks"
    client_id = f"feed-{uuid.uuid4().hex}"
    sent = messages(15)  # (the broker sends 20 unacknowledged messages at most)
    with MosquittoServer(tmp_path) as broker, capture_logs() as logs:
        session = persistent_feed(broker.port, topic, client_id, grace_s=0.3, queue_size=1)
        stop = asyncio.Event()
        task = asyncio.create_task(session.feed.run(stop))
        try:
            await until(session.is_subscribed)
            await publish(broker.port, topic, sent[:1], qos=1)
            await until(session.queue.full)
            await publish(broker.port, topic, sent[1:2], qos=1)
            await until(lambda: session.counters.get("feed_queue_full_waits", feed="raw") == 1)
            await publish(broker.port, topic, sent[2:], qos=1)
            # every message read: on the queue, waiting for room, or in the client's inbox
            size = len(sent) * (len(sent[0]) + MESSAGE_OVERHEAD_BYTES)
            await until(lambda: session.feed._backlog.size == size)
            stop.set()
            await asyncio.wait_for(task, 3.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        on_queue = session.queue.get_nowait()
        assert isinstance(on_queue, Wire) and on_queue.claim is not None
        withdrawn = not on_queue.claim()
        backlog = (
            session.feed._backlog.size,
            session.counters.get("feed_backlog_bytes", feed="raw"),
        )
        again = await next_session(
            persistent_feed(broker.port, topic, client_id, 5.0), broker.port, topic, len(sent)
        )
    assert (payloads([on_queue]), withdrawn, backlog) == (sent[:1], True, (0, 0))
    incomplete = [e for e in logs if e["event"] == "feed_drain_incomplete"]
    assert [
        (e["left_messages"], e["withdrawn_messages"], e["dropped_messages"], e["grace_s"])
        for e in incomplete
    ] == [(15, 1, 14, 0.3)]
    assert again == [*sent, b"after"]


async def test_without_a_lasting_session_a_stop_with_the_queue_full_hands_everything_on(
    tmp_path: Path, prefix: str
) -> None:
    """A clean session (no fixed client id): at the stop, one Wire is on the full queue, a
    second waits for room and the rest wait in the client's inbox. The broker would deliver
    none of them again, so every message read reaches the engine's queue as the engine makes
    room; none is dropped, and the backlog is released as they are processed."""
    topic = f"{prefix}/ticks"
    sent = messages(15)
    with MosquittoServer(tmp_path) as broker, capture_logs() as logs:
        counters, queue = Counters(), Queue(maxsize=1)
        feed = raw_feed(broker.port, topic, counters, queue, qos=1, grace_s=0.3)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        taken: list[Wire] = []
        try:
            await until(lambda: counters.get("feed_subscribes", feed="raw") == 1)
            await publish(broker.port, topic, sent[:1], qos=1)
            await until(queue.full)
            await publish(broker.port, topic, sent[1:2], qos=1)
            await until(lambda: counters.get("feed_queue_full_waits", feed="raw") == 1)
            await publish(broker.port, topic, sent[2:], qos=1)
            size = len(sent) * (len(sent[0]) + MESSAGE_OVERHEAD_BYTES)
            await until(lambda: feed._backlog.size == size)
            stop.set()
            while not task.done() or not queue.empty():  # the engine, making room
                try:
                    wire = await asyncio.wait_for(queue.get(), 0.1)
                except TimeoutError:
                    continue
                assert isinstance(wire, Wire) and wire.ack is not None
                taken.append(wire)
                wire.ack()
            await asyncio.wait_for(task, 3.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert payloads(taken) == sent
    assert feed._backlog.size == 0
    assert not [e for e in logs if e["event"] == "feed_drain_incomplete"]
