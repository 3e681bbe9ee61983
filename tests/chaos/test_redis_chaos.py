"""Redis misbehaving under the daemon: flapping, and a slow subscriber cut off by Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from monitor import config as cfg
from monitor.cli import main
from monitor.service import Daemon, run
from tests.alerts.redis_server import RedisServer
from tests.conftest import RUT
from tests.test_daemon_faults import publish, publish_paced, rut_bars, stream_alerts
from tests.test_service import daemon_running, replay_alerts, subscribed, write_config

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def private_config(tmp_path: Path, prefix: str, url: str) -> Path:
    """A daemon config whose Redis is a private server."""
    conf = write_config(tmp_path, prefix)
    conf.write_text(conf.read_text().replace("redis://127.0.0.1:6379/0", url))
    return conf


async def test_redis_flapping_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Redis (with an append-only file) is killed and restarted three times while six months of
    bars stream in: the stream ends with exactly replay's alerts, in order, none twice."""
    prefix = f"mm-flap-{uuid.uuid4().hex[:8]}"
    with RedisServer(None, "--appendonly", "yes", "--appendfsync", "always") as server:
        conf = private_config(tmp_path, prefix, server.url)
        assert (
            main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2023-12-29"])
            == 0
        )
        messages = rut_bars("2024-01-02", "2024-08-30")
        expected = replay_alerts(dt.date(2024, 1, 2), dt.date(2024, 8, 30))
        async with daemon_running(conf) as daemon:
            chunk = len(messages) // 4
            for i in range(4):
                await publish(
                    f"{prefix}/bars", messages[i * chunk : (i + 1) * chunk if i < 3 else None]
                )
                await asyncio.sleep(0.3)
                if i < 3:
                    server.kill()
                    await asyncio.sleep(0.5)
                    server.start()
            got = await stream_alerts(server.url, f"{prefix}:alerts", len(expected), timeout_s=30)
            assert [a.id for a in got] == [a.id for a in expected]
            assert got == expected
            assert daemon.counters.total("redis_errors") >= 1


async def test_a_slow_subscriber_is_cut_off_and_catches_up_from_the_stream(tmp_path: Path) -> None:
    """A pub/sub subscriber that never reads is disconnected by Redis (its output buffer limit);
    the daemon goes on publishing, and the durable stream still holds every alert."""
    prefix = f"mm-slow-{uuid.uuid4().hex[:8]}"
    limit = ("--client-output-buffer-limit", "pubsub 4kb 2kb 1")
    with RedisServer(None, *limit) as server:
        conf = private_config(tmp_path, prefix, server.url)
        assert (
            main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2019-12-31"])
            == 0
        )
        expected = replay_alerts(dt.date(2020, 1, 2), dt.date(2024, 8, 30))
        assert len(expected) > 10
        slow = aioredis.Redis.from_url(server.url)
        pubsub = slow.pubsub()
        await pubsub.subscribe(f"{prefix}:alerts")  # and never read again
        admin = aioredis.Redis.from_url(server.url)
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
        )
        try:
            await subscribed(ready)
            before = await admin.client_list()
            assert sum(c.get("sub") == "1" for c in before) == 1
            await publish_paced(f"{prefix}/bars", rut_bars("2020-01-02", "2024-08-30"), ready[0])
            got = await stream_alerts(server.url, f"{prefix}:alerts", len(expected), timeout_s=30)
            assert got == expected
            after = await admin.client_list()
            assert sum(c.get("sub") == "1" for c in after) == 0  # Redis cut it off
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0
            await pubsub.aclose()
            await slow.aclose()
            await admin.aclose()
