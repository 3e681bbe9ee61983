"""A Redis ACL user with only what the daemon needs: alerts go out, nothing else is allowed."""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from pathlib import Path

import pytest
import redis as redis_sync
from redis.exceptions import NoPermissionError, ResponseError

from monitor import config as cfg
from monitor.service import Daemon, run
from tests.alerts.redis_server import RedisServer
from tests.feeds.mosquitto_server import MosquittoServer
from tests.security.daemon import (
    ALERTS_0716,
    backfill,
    publish,
    rut_bars,
    stream_alerts,
    summary,
    write_config,
)
from tests.security.test_notifier_acl import documented_rule
from tests.test_service import subscribed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def daemon_acl(password: str, stream: str) -> str:
    """The `user monitor` line of docs/security.md, for one stream (and channel of that name)."""
    return " ".join(["user", "monitor", *documented_rule("monitor", stream, password)])


async def test_the_daemon_publishes_as_a_least_privilege_acl_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logged in as `monitor` (the user from MM_REDIS_USER, `[redis] username_env`, the
    password from MM_REDIS_PASSWORD) the daemon publishes the
    2024-07-16 alerts without a single ACL denial, while the same user cannot FLUSHALL, read keys
    or channels outside its own, read back the stream, or get round the ACL with a Lua script."""
    prefix = f"mm-acl-{uuid.uuid4().hex[:8]}"
    stream = channel = f"{prefix}:alerts"
    password, admin_password = secrets.token_hex(16), secrets.token_hex(16)
    acl = tmp_path / "users.acl"
    acl.write_text(
        f"user default on >{admin_password} ~* &* +@all\n" + daemon_acl(password, stream) + "\n"
    )
    monkeypatch.setenv("MM_REDIS_PASSWORD", password)
    monkeypatch.setenv("MM_REDIS_USER", "monitor")
    with (
        RedisServer(None, "--aclfile", str(acl)) as server,
        MosquittoServer(tmp_path / "mosquitto") as broker,
    ):
        admin = redis_sync.Redis(port=server.port, password=admin_password)
        admin.set("other:key", "private")
        conf = write_config(
            tmp_path,
            feeds=[
                {
                    "name": "plain",
                    "url": f"mqtt://127.0.0.1:{broker.port}",
                    "topics": [f"{prefix}/#"],
                }
            ],
            redis={
                "url": server.url,
                "stream": stream,
                "channel": channel,
                "username_env": "MM_REDIS_USER",
                "password_env": "MM_REDIS_PASSWORD",
            },
        )
        backfill(conf)
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
        )
        try:
            await subscribed(ready)
            await publish(broker.port, f"{prefix}/bars", rut_bars("2024-07-10", "2024-07-16"))
            got = await stream_alerts(server.url, stream, 3, password=admin_password)
            assert summary(got) == ALERTS_0716
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 20) == 0
        assert admin.acl_log() == []  # the daemon was never refused anything

        monitor = redis_sync.Redis(port=server.port, username="monitor", password=password)
        refused = [
            lambda: monitor.flushall(),
            lambda: monitor.get("other:key"),
            lambda: monitor.keys("*"),
            lambda: monitor.xrange(stream),
            lambda: monitor.publish("another-channel", "x"),
            lambda: monitor.config_get("requirepass"),
            lambda: monitor.acl_list(),
            lambda: monitor.eval("return 1", 0),
            lambda: monitor.exists("other:key"),
        ]
        for command in refused:
            with pytest.raises(NoPermissionError):
                command()
        scripts = {
            "return redis.call('GET', 'other:key')": "can't run this command",
            "return redis.call('FLUSHALL')": "can't run this command",
            "return redis.call('EXISTS', 'other:key')": "can't access at least one of the keys",
        }
        for script, why in scripts.items():
            sha = monitor.script_load(script)
            with pytest.raises(ResponseError, match=re.escape(why)):
                monitor.evalsha(sha, 0)
        assert admin.get("other:key") == b"private"
        assert admin.xlen(stream) == 3
        monitor.close()
        admin.close()
