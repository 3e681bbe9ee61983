"""The notifier as the least-privilege Redis ACL user that docs/security.md documents."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from monitor.core.model import encode_alert
from monitor.notify.config import parse
from tests.alerts.redis_server import RedisServer
from tests.conftest import ROOT
from tests.notify.conftest import RUT_ALERT
from tests.notify.servers import WebhookServer
from tests.notify.test_service import running, until

pytestmark = pytest.mark.integration


def documented_rule(user: str, stream: str, password: str) -> list[str]:
    """The `user NAME on ...` line of docs/security.md, for this test's stream and password."""
    text = (ROOT / "docs" / "security.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"user {user} on "))
    line = line.replace("market-monitor:alerts", stream).replace(">CHANGE-ME", f">{password}")
    return re.split(r"\s+", line.strip())[2:]  # after "user NAME"


async def test_the_notifier_delivers_as_its_documented_acl_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logged in as the documented `notifier` ACL user, the notifier creates its group, delivers
    an alert and a feed's `feed_stale` and `feed_recovered` to a webhook and acks them, telling
    its group the feed's health, with no refusal in ACL LOG; the same user cannot FLUSHALL or
    read a key outside its stream."""
    stream = f"mm-acl-{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(12)
    monkeypatch.setenv("MM_NOTIFIER_PASSWORD", password)
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        await admin.execute_command(
            "ACL", "SETUSER", "notifier", *documented_rule("notifier", stream, password)
        )
        await admin.set("other:key", "x")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        health = [
            msgspec.structs.replace(RUT_ALERT, id=kind, kind=kind, symbol="mqtt", ts=now)
            for kind in ("feed_stale", "feed_recovered")
        ]
        for a in [RUT_ALERT, *health]:
            await admin.xadd(stream, {"id": a.id, "alert": encode_alert(a)})
        async with WebhookServer() as hooks:
            raw: dict[str, Any] = {
                "redis": {
                    "url": f"redis://notifier@127.0.0.1:{server.port}/0",
                    "password_env": "MM_NOTIFIER_PASSWORD",
                    "stream": stream, "group": "notifier", "consumer": "c1", "start": "0",
                    "block_ms": 100, "claim_idle_s": 0.5, "claim_interval_s": 0.1,
                },
                "receivers": [{"name": "chat", "url": hooks.url("/chat")}],
                "route": {"receivers": ["chat"], "group_wait_s": 0.0, "group_interval_s": 0.0,
                          "group_by": ["id"]},
            }  # fmt: skip
            config = parse(raw, environ={"MM_NOTIFIER_PASSWORD": password})
            async with running(config) as notifier:
                await until(lambda: len(hooks.bodies("/chat")) == 3)
                await until(lambda: notifier.counters.total("notify_acked") == 3)
        assert await admin.execute_command("ACL", "LOG") == []
        assert await admin.hgetall(f"{stream}:notify:notifier:feeds") == {
            b"stale:mqtt": now.encode(),
            b"recovered:mqtt": now.encode(),
        }
        as_notifier = aioredis.Redis.from_url(
            f"redis://notifier:{password}@127.0.0.1:{server.port}/0"
        )
        try:
            for refused in (as_notifier.flushall(), as_notifier.get("other:key")):
                with pytest.raises(NoPermissionError):
                    await refused
        finally:
            await as_notifier.aclose()
            await admin.aclose()
