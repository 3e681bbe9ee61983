"""The digest with two notifiers on one consumer group, against real Redis and a slow webhook:
one digest a day per receiver, whichever notifier sends it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.notify.config import NotifyConfig
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration


def digest_config(stream: str, hooks: WebhookServer, consumer: str) -> NotifyConfig:
    """Receiver `digest` gets the digest (at 00:00 UTC: past when the notifier starts)."""
    return make_config(
        stream,
        [{"name": "chat", "url": hooks.url("/chat")}, {"name": "digest", "url": hooks.url("/d")}],
        route={"receivers": ["chat"]},
        redis={"consumer": consumer},
        digest={"enabled": True, "at": "00:00", "tz": "UTC", "receivers": ["digest"]},
    )


async def keys(stream: str, kind: str) -> list[Any]:
    """The delivery log (`sent`) or claim (`sending`) keys of the test's digest receiver."""
    client = aioredis.Redis()
    found = sorted([k async for k in client.scan_iter(f"{stream}:notify:{kind}:digest:*")])
    await client.aclose()
    return found


async def test_two_notifiers_on_one_group_send_the_digest_once(stream: str) -> None:
    """Two notifiers of one group start after the digest time, so both send today's digest at
    once to a receiver that takes 0.5 s to answer: it gets one request, the other notifier
    finding the digest claimed and, on its retry, sent; no claim is left. Before, both checked
    the delivery log before either had marked it, and the digest arrived twice."""
    async with WebhookServer() as hooks:
        hooks.slow("/d", 0.5)
        await publish(stream, [alert(1)])
        with capture_logs() as logs:
            async with (
                running(digest_config(stream, hooks, "c1")),
                running(digest_config(stream, hooks, "c2")),
            ):
                await until(lambda: len(hooks.bodies("/d")) >= 1, 5)
                await until(lambda: any(e["event"] == "digest_delivered" for e in logs), 5)
                await asyncio.sleep(1.5)  # (past the other's retries, backoff_cap_s = 0.4 s)
    day = dt.datetime.now(dt.UTC).date().isoformat()
    assert [b["title"] for b in hooks.bodies("/d")] == [f"Market monitor digest, {day}: 1 alerts"]
    events = [e["event"] for e in logs]
    assert (events.count("digest_delivered"), "digest_claimed_elsewhere" in events) == (1, True)
    assert await keys(stream, "sent") == [f"{stream}:notify:sent:digest:digest:{day}".encode()]
    assert await keys(stream, "sending") == []


async def test_a_claim_left_by_a_notifier_that_died_lapses_and_the_digest_goes_out(
    stream: str,
) -> None:
    """A claim on today's digest whose holder died mid-send (here: set by hand, lapsing in 1 s)
    holds the digest back until it lapses; the notifier's retries then send it, once."""
    day = dt.datetime.now(dt.UTC).date().isoformat()
    client = aioredis.Redis()
    await client.set(f"{stream}:notify:sending:digest:digest:{day}", "dead", ex=1)
    await client.aclose()
    async with WebhookServer() as hooks:
        await publish(stream, [alert(1)])
        with capture_logs() as logs:
            async with running(digest_config(stream, hooks, "c1")):
                await until(lambda: len(hooks.bodies("/d")) == 1, 5)
                await asyncio.sleep(0.6)
    assert [b["title"] for b in hooks.bodies("/d")] == [f"Market monitor digest, {day}: 1 alerts"]
    assert any(e["event"] == "digest_claimed_elsewhere" for e in logs)
    assert await keys(stream, "sending") == []


async def test_a_digest_that_failed_releases_its_claim(stream: str) -> None:
    """A digest whose delivery failed (503 at each of its 3 attempts) leaves no claim behind,
    so its retry (or another notifier) may send it at once: it arrives when `/d` recovers."""
    async with WebhookServer() as hooks:
        hooks.fail("/d", 503, times=3)
        await publish(stream, [alert(1)])
        with capture_logs() as logs:
            async with running(digest_config(stream, hooks, "c1")):
                await until(lambda: any(e["event"] == "digest_failed" for e in logs), 5)
                await until(lambda: len(hooks.bodies("/d")) == 1, 5)
    assert [s for p, _, s, _ in hooks.received if p == "/d"] == [503, 503, 503, 200]
    assert "digest_claimed_elsewhere" not in [e["event"] for e in logs]
    assert await keys(stream, "sending") == []
