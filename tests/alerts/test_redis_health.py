"""RedisPublisher.watch: PINGs that make `is_available` follow Redis, with no alert to publish."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import RedisPublisher
from monitor.core.counters import Counters
from tests.alerts.redis_server import RedisServer

pytestmark = pytest.mark.integration


@asynccontextmanager
async def watching(publisher: RedisPublisher) -> AsyncIterator[None]:
    """Run the publisher's health checks as a named task for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.watch(stop), name="redis-check")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Wait until `condition()` holds (AssertionError after `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.mark.chaos
async def test_watch_follows_redis_stopping_and_starting(tmp_path: Path) -> None:
    """With nothing to publish, a stopped Redis makes the publisher unavailable at the next
    PING and a restarted one available again: one warning for the outage, one recovery."""
    counters = Counters()
    with (
        RedisServer() as server,
        capture_logs() as logs,
        Outbox(tmp_path / "outbox.db") as outbox,
    ):
        async with (
            RedisPublisher(
                server.url, "c", "s", outbox, counters=counters, check_interval_s=0.1
            ) as pub,
            watching(pub),
        ):
            await until(lambda: counters.get("redis_available") == 1)
            assert pub.is_available
            server.stop()
            await until(lambda: not pub.is_available)
            assert counters.get("redis_available") == 0
            await asyncio.sleep(0.5)  # more failed PINGs: still one warning
            server.start()
            await until(lambda: pub.is_available)
            assert counters.get("redis_available") == 1
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
        "redis_unavailable"
    ]
    assert [e["event"] for e in logs if e["event"].startswith("redis_r")] == [
        "redis_reachable",
        "redis_recovered",
    ]
    assert counters.get("redis_check_failures") >= 2


async def test_an_acl_user_without_ping_counts_as_up_and_is_told_once(tmp_path: Path) -> None:
    """Logged in as a user whose ACL lacks +ping (the documented rule before PING was used),
    the publisher stays available and says `redis_ping_refused`, with the fix, once."""
    password = secrets.token_hex(12)
    with (
        RedisServer() as server,
        capture_logs() as logs,
        Outbox(tmp_path / "outbox.db") as outbox,
    ):
        async with aioredis.Redis.from_url(server.url) as admin:
            await admin.execute_command(
                "ACL", "SETUSER", "monitor", "on", f">{password}", "~s", "-@all", "+evalsha"
            )
        async with (
            RedisPublisher(
                server.url, "c", "s", outbox, username="monitor", password=password,
                check_interval_s=0.05,
            ) as pub,
            watching(pub),
        ):  # fmt: skip
            await asyncio.sleep(0.3)
            assert pub.is_available
    refused = [e for e in logs if e["event"] == "redis_ping_refused"]
    assert len(refused) == 1 and "+ping" in refused[0]["fix"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["redis_ping_refused"]
