"""kill -9 of the daemon at random moments: on restart nothing accepted is lost and no alert is
published twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import signal
import uuid
from pathlib import Path

import aiomqtt
import pytest
import redis.asyncio as aioredis

from monitor.cli import main
from tests.conftest import RUT
from tests.daemon_process import DaemonProcess
from tests.test_daemon_faults import rut_bars, stream_alerts
from tests.test_service import replay_alerts, write_config

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.mark.parametrize("seed", [1])
async def test_kill_9_at_random_moments(tmp_path: Path, seed: int) -> None:
    """Bars of 2024 stream in over QoS 1 while the daemon is killed with SIGKILL twice at random
    moments and restarted: the stream ends with exactly replay's alerts, in order, none twice."""
    rng = random.Random(seed)
    prefix = f"mm-kill-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    assert (
        main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2023-12-29"])
        == 0
    )
    messages = rut_bars("2024-01-02", "2024-08-30")
    expected = replay_alerts(dt.date(2024, 1, 2), dt.date(2024, 8, 30))
    assert len(expected) >= 5

    async def publish_all() -> None:
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            for m in messages:
                await client.publish(f"{prefix}/bars", m, qos=1)
                await asyncio.sleep(0.02)

    daemon = DaemonProcess(conf)
    await asyncio.to_thread(daemon.wait_for, "feed_subscribed")
    publisher = asyncio.create_task(publish_all())
    try:
        for _ in range(2):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            daemon.signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.wait, 10)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            daemon = DaemonProcess(conf)
            await asyncio.to_thread(daemon.wait_for, "feed_subscribed")
        await asyncio.wait_for(publisher, 60)
        got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(expected))
        await asyncio.sleep(1.0)
        got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(expected))
        assert [a.id for a in got] == [a.id for a in expected]
        assert got == expected
    finally:
        publisher.cancel()
        await asyncio.to_thread(daemon.stop, 20)
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()
