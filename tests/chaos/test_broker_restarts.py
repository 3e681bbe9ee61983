"""The broker restarted repeatedly while ticks pour in over QoS 1."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import polars as pl
import pytest

from monitor import config as cfg
from monitor.clock import SimClock
from monitor.service import Daemon, run
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_service import subscribed, write_config

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TICKS = 6000


def publisher(port: int, topic: str, stop: threading.Event) -> threading.Thread:
    """A paho publisher in its own thread: QoS 1, reconnecting, queueing while the broker is
    down (as a provider's gateway would), one tick per message with a unique trade id."""
    t0 = int(dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC).timestamp() * 1000)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(0.05, 0.2)
    client.connect("127.0.0.1", port)
    client.loop_start()

    def work() -> None:
        for i in range(TICKS):
            tick = {"symbol": f"S{i % 50}", "ts": t0 + i * 5, "price": 10.0 + (i % 7) * 0.01,
                    "size": 100, "id": f"t{i}"}  # fmt: skip
            client.publish(topic, json.dumps(tick), qos=1)
            time.sleep(0.0005)
        while client.want_write() or (len(client._out_messages) and not stop.is_set()):
            time.sleep(0.05)
        stop.wait(30)
        client.loop_stop()
        client.disconnect()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


async def test_three_broker_restarts_under_load_lose_and_double_count_nothing(
    tmp_path: Path,
) -> None:
    """While 6,000 ticks flow over QoS 1, the broker is restarted three times: every tick is
    taken in exactly once (redeliveries are recognised as duplicates), so the minute bars' volume
    is exactly 6,000 x 100."""
    prefix = f"mm-restarts-{uuid.uuid4().hex[:8]}"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix)
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        clock = SimClock(dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC))
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(
                cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append
            )
        )
        done = threading.Event()
        try:
            daemon = await subscribed(ready)
            thread = publisher(broker.port, f"{prefix}/t", done)
            for _ in range(3):
                await asyncio.sleep(0.6)
                await asyncio.to_thread(broker.restart)
            accepted = 0.0
            async with asyncio.timeout(60):
                while accepted < TICKS:
                    await asyncio.sleep(0.1)
                    duplicates = daemon.counters.get("rejections", reason="duplicate")
                    accepted = daemon.counters.total("ticks_in") - duplicates
            done.set()
            await asyncio.to_thread(thread.join, 10)
            clock.set(dt.datetime(2024, 7, 16, 14, 5, tzinfo=dt.UTC))
            async with asyncio.timeout(10):
                while daemon.engine.minutes.height == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            volume = daemon.engine.minutes.get_column("volume").sum()
            assert accepted == TICKS
            assert volume == TICKS * 100
            assert daemon.counters.get("feed_reconnects", feed="broker") >= 3
            other = {
                r: v for r in ("bad_price", "late_tick", "outside_session", "malformed_json")
                if (v := daemon.counters.get("rejections", reason=r))
            }  # fmt: skip
            assert other == {}
            assert daemon.engine.minutes.filter(pl.col("volume") <= 0).height == 0
        finally:
            done.set()
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0
