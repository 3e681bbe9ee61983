"""The consumer group lost with Redis's data (a Redis restarted empty) while alerts wait to be
sent again: the notifier creates the group again without skipping them, even with the default
`start = "$"`; and a group created at "$" over a stream that holds alerts says so."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.model import Alert, encode_alert
from tests.alerts.redis_server import RedisServer
from tests.notify.conftest import alert
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration


async def add(url: str, stream: str, alerts: list[Alert]) -> list[str]:
    """XADD alerts to the Redis at `url` as the daemon does; their entry ids."""
    client = aioredis.Redis.from_url(url)
    ids = [
        (await client.xadd(stream, {"id": a.id, "alert": encode_alert(a)})).decode() for a in alerts
    ]
    await client.aclose()
    return ids


@pytest.mark.chaos
async def test_alerts_sent_again_after_an_empty_redis_restart_are_not_skipped() -> None:
    """A notifier that started at "$" and has read nothing yet: Redis restarts without its
    data and the daemon's held alerts reach the new stream before the reader, still backing
    off, finds its group gone. The group is created again where it stood when the notifier
    joined it (not at "$"), so those alerts are delivered."""
    stream = f"mm-notify-lost-{uuid.uuid4().hex[:8]}"
    with RedisServer() as server:
        async with WebhookServer() as hooks:
            config = make_config(
                stream,
                [{"name": "chat", "url": hooks.url("/chat")}],
                redis={"url": server.url, "start": "$"},
            )
            before = await add(server.url, stream, [alert(0)])  # (history, not to be read)
            with capture_logs() as logs:
                async with running(config) as notifier:
                    await asyncio.sleep(0.3)  # the reader is blocked in XREADGROUP
                    server.kill()
                    await asyncio.sleep(1.5)  # the reader fails and backs off (1 s, then 2 s)
                    server.start()  # empty: no stream, no group
                    await add(server.url, stream, [alert(2), alert(3)])  # the outbox, sent again
                    await until(lambda: notifier.counters.total("notify_acked") == 2)
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(2).title, alert(3).title]
    recreated = [e["start"] for e in logs if e["event"] == "notify_group_recreated"]
    assert recreated == before  # (where the group stood at the start)


async def test_a_group_made_at_dollar_over_a_stream_holding_alerts_says_how_many(
    stream: str,
) -> None:
    """Started with `start = "$"` while the stream holds alerts and the group is missing, the
    notifier reads only new alerts and warns how many it did not read."""
    async with WebhookServer() as hooks:
        config = make_config(
            stream, [{"name": "chat", "url": hooks.url("/chat")}], redis={"start": "$"}
        )
        await add("redis://127.0.0.1:6379/0", stream, [alert(1), alert(2)])
        with capture_logs() as logs:
            async with running(config) as notifier:
                await add("redis://127.0.0.1:6379/0", stream, [alert(3)])
                await until(lambda: notifier.counters.total("notify_acked") == 1)
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(3).title]
    created = [
        (e["log_level"], e["start"], e["skipped"])
        for e in logs
        if e["event"] == "notify_group_created"
    ]
    assert created == [("warning", "$", 2)]
