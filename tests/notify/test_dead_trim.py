"""The dead-letter stream is capped (`[redis] dead_maxlen`): a letter that trims older ones is
counted and logged, never silently."""

from __future__ import annotations

import datetime as dt

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor import logs as monitor_logs
from monitor.clock import SimClock
from monitor.core.counters import Counters
from monitor.notify.ledger import DeadLetters
from tests.alerts.redis_server import RedisServer
from tests.notify.conftest import alert


async def test_letters_past_the_cap_trim_the_oldest_and_say_how_many(stream: str) -> None:
    """With a cap of 10, 400 letters leave about 10 in the stream; every one trimmed is counted
    (the counter equals 400 less what is left) and each trim is a `dead_letters_trimmed`
    warning."""
    client = aioredis.Redis()
    counters = Counters()
    clock = SimClock(dt.datetime(2024, 7, 16, 20, 5, tzinfo=dt.UTC))
    with capture_logs() as logs:
        dead = DeadLetters(
            client, f"{stream}:dead", counters, monitor_logs.get("test"), clock, maxlen=10
        )
        for n in range(400):
            await dead.add(f"1-{n}", alert(n), "chat", "gave up", 3)
    left = await client.xlen(f"{stream}:dead")
    await client.aclose()
    warned = [e for e in logs if e["event"] == "dead_letters_trimmed"]
    assert counters.total("notify_dead_letters_trimmed") == 400 - left > 0
    assert sum(e["count"] for e in warned) == 400 - left
    assert {(e["log_level"], e["maxlen"]) for e in warned} == {("warning", 10)}


@pytest.mark.parametrize("without", ["xinfo", "multi"])
async def test_a_user_without_xinfo_or_multi_still_adds_each_letter_once(without: str) -> None:
    """A Redis user without XINFO STREAM: the letter is written all the same, and one warning
    says the trims cannot be counted. Without MULTI (a narrower ACL than docs/security.md's, a
    proxy): each letter once (a refused MULTI ran the XADD, then a retry added it again)."""
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        await admin.acl_setuser(
            "notifier",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+@all", f"-{without}"],
        )
        client = aioredis.Redis.from_url(server.url, username="notifier", password="pw")
        clock = SimClock(dt.datetime(2024, 7, 16, 20, 5, tzinfo=dt.UTC))
        with capture_logs() as logs:
            dead = DeadLetters(client, "dead", Counters(), monitor_logs.get("test"), clock)
            for n in range(2):
                await dead.add(f"1-{n}", alert(n), "chat", "gave up", 3)
        letters = await admin.xlen("dead")
        await client.aclose()
        await admin.aclose()
    refused = [e["log_level"] for e in logs if e["event"] == "dead_letters_trim_check_refused"]
    assert (letters, refused) == (2, ["warning"] if without == "xinfo" else [])
