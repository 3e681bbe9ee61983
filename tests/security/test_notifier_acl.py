"""The notifier as the least-privilege Redis ACL user that docs/security.md documents."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from monitor.cli import main
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


def test_silence_add_reads_the_stream_as_the_documented_notifier_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`silence add --rule streak.daly` as the documented `notifier` user reads the stream's
    newest alerts and says that none is of such a rule, leaving no refusal in ACL LOG; as a user
    without +xrevrange (the rule before) the silence is set all the same, and it says that the
    alerts could not be read."""
    stream = f"mm-acl-{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(12)
    monkeypatch.setenv("MM_NOTIFIER_PASSWORD", password)
    said: list[tuple[int, str]] = []
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        rule = documented_rule("notifier", stream, password)
        admin.execute_command("ACL", "SETUSER", "notifier", *rule)
        admin.execute_command("ACL", "SETUSER", "older", *[r for r in rule if r != "+xrevrange"])
        admin.xadd(stream, {"id": RUT_ALERT.id, "alert": encode_alert(RUT_ALERT)})
        for user in ("notifier", "older"):
            conf = tmp_path / f"{user}.toml"
            conf.write_text(
                f'[redis]\nurl = "redis://{user}@127.0.0.1:{server.port}/0"\n'
                f'password_env = "MM_NOTIFIER_PASSWORD"\nstream = "{stream}"\n'
                '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
                '[route]\nreceivers = ["hook"]\n'
            )
            args = ["silence", "add", "--config", str(conf), "--rule", "streak.daly", "--for", "1h"]
            said.append((main(args), capsys.readouterr().err))
            if user == "notifier":
                refusals = admin.execute_command("ACL", "LOG")
        silences = admin.hlen(f"{stream}:silences")
        admin.close()
    assert said[0][0] == 0
    assert said[0][1].startswith(
        f"market-monitor: warning: --rule streak.daly matches no rule of the 1 alert in {stream}"
        " (did you mean streak.daily?); theirs: streak.daily. "
    )
    assert refusals == []
    code, err = said[1]
    # (how Redis names the user in its refusal differs between versions)
    found = re.fullmatch(
        r"market-monitor: silence: --rule and --symbol not checked against the stream's alerts,"
        r" which Redis refused to read \(.* has no permissions to run the 'xrevrange' command;"
        r" docs/security.md grants \+xrevrange\)\n",
        err,
    )
    assert (code, found is not None) == (0, True), err
    assert silences == 2
