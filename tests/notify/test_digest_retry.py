"""The digest against real Redis and a webhook that fails, then recovers: tried again the same
day, sent once."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.clock import SimClock
from monitor.notify.service import Notifier
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, running_notifier, until

pytestmark = pytest.mark.integration


def digests(hooks: WebhookServer) -> list[str]:
    """Titles of the digests `/digest` accepted."""
    return [b["title"] for b in hooks.bodies("/digest")]


async def test_a_digest_that_failed_is_sent_once_when_the_receiver_recovers(stream: str) -> None:
    """The digest receiver fails every attempt of the first delivery (3), then recovers: the
    digest is queued again `backoff_cap_s` later and arrives once, the same day, listing the
    day's alert. Before, a failed digest was only logged and the next one came a day later."""
    async with WebhookServer() as hooks:
        hooks.fail("/digest", 503, times=3)
        config = make_config(
            stream,
            [
                {"name": "chat", "url": hooks.url("/chat")},
                {"name": "digest", "url": hooks.url("/digest")},
            ],
            route={"receivers": ["chat"]},
            digest={"enabled": True, "at": "00:00", "tz": "UTC", "receivers": ["digest"]},
        )
        await publish(stream, [alert(1)])
        async with running(config):
            await until(lambda: len(digests(hooks)) == 1, 5)
            await asyncio.sleep(1.0)  # (more than two retry waits: nothing more is sent)
    day = dt.datetime.now(dt.UTC).date().isoformat()
    assert digests(hooks) == [f"Market monitor digest, {day}: 1 alerts"]
    assert [s for p, _, s, _ in hooks.received if p == "/digest"] == [503, 503, 503, 200]
    client = aioredis.Redis()
    logged = await client.exists(f"{stream}:notify:sent:digest:digest:{day}")
    await client.aclose()
    assert logged == 1


async def test_a_failed_digest_is_not_sent_once_its_day_has_ended(stream: str) -> None:
    """A digest that failed at 23:59 is dropped (`digest_abandoned`) when its retry comes after
    midnight in `[digest] tz`, instead of going out a day late as the new day's."""
    clock = SimClock(dt.datetime(2024, 7, 16, 23, 59, tzinfo=dt.UTC))
    async with WebhookServer() as hooks:
        hooks.always("/digest", 503)
        config = make_config(
            stream,
            [{"name": "digest", "url": hooks.url("/digest")}],
            digest={"enabled": True, "at": "00:00", "tz": "UTC"},
        )
        with capture_logs() as logs:
            async with running_notifier(Notifier(config, clock=clock)):
                await until(lambda: any(e["event"] == "digest_failed" for e in logs), 5)
                hooks.always("/digest", None)
                clock.set(dt.datetime(2024, 7, 17, 0, 0, 5, tzinfo=dt.UTC))
                await until(lambda: any(e["event"] == "digest_abandoned" for e in logs), 5)
                await asyncio.sleep(0.5)
    assert digests(hooks) == []
    assert [(e["event"], e["key"]) for e in logs if "key" in e] == [
        ("digest_failed", "digest:2024-07-16"),
        ("digest_abandoned", "digest:2024-07-16"),
    ]
