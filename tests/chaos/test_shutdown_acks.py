"""Stopping the daemon (SIGTERM) while QoS 1 ticks pour in: what it took in is acknowledged
before it disconnects, so a restart takes in the rest and nothing twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from monitor import config as cfg
from monitor.clock import SimClock
from monitor.service import Daemon, run
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_service import subscribed, write_config

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TICKS = 10_000
T0 = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)


def open_session(port: int, client_id: str, topic: str) -> None:
    """Create the daemon's persistent session (its subscription) on the broker, as an earlier
    run of the daemon would have, so that what is published next waits there for it."""
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert subscribed.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()


def publish_burst(port: int, topic: str) -> None:
    """TICKS ticks over QoS 1, each with its own trade id, all acknowledged by the broker."""
    t0_ms = int(T0.timestamp() * 1000)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    for i in range(TICKS):
        tick = {"symbol": f"S{i % 50}", "ts": t0_ms + i, "price": 10.0, "size": 1, "id": f"t{i}"}
        infos.append(client.publish(topic, json.dumps(tick), qos=1))
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


async def one_run(conf: Path, stop_when: Callable[[Daemon], bool]) -> float:
    """Run the daemon until `stop_when` holds, then stop it as SIGTERM does (the stop event the
    signal handler sets); the ticks it took in (`ticks_in`, counted before any rejection)."""
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(
            cfg.load(conf),
            stop=stop,
            clock=SimClock(T0 + dt.timedelta(seconds=30)),
            install_signals=False,
            on_ready=ready.append,
        )
    )
    try:
        daemon = await subscribed(ready)
        async with asyncio.timeout(30):
            while not stop_when(daemon):  # noqa: ASYNC110
                await asyncio.sleep(0.002)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    return daemon.counters.total("ticks_in")


async def test_ticks_drained_at_shutdown_are_acknowledged_and_never_taken_in_twice(
    tmp_path: Path,
) -> None:
    """10,000 QoS 1 ticks wait in the daemon's persistent session; it is stopped a quarter of
    the way through them and started again: the two runs take in exactly 10,000 ticks (the
    ticks the first drained at shutdown were acknowledged, and the broker did not send them
    again), with no duplicate trade id."""
    prefix = f"mm-drain-{uuid.uuid4().hex[:8]}"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix)
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        await asyncio.to_thread(open_session, broker.port, f"{prefix}-daemon", f"{prefix}/#")
        await asyncio.to_thread(publish_burst, broker.port, f"{prefix}/ticks")

        first = await one_run(conf, lambda d: d.counters.total("ticks_in") >= TICKS // 4)
        quiet: list[float] = []

        def all_in_and_quiet(daemon: Daemon) -> bool:
            """Every tick in (or more), and nothing new for a moment (redeliveries come first)."""
            quiet.append(daemon.counters.total("ticks_in"))
            return first + quiet[-1] >= TICKS and quiet[-100:].count(quiet[-1]) == 100

        second = await one_run(conf, all_in_and_quiet)
    assert first < TICKS  # stopped while ticks were still arriving
    assert first + second == TICKS
