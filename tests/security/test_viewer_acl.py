"""`market-monitor tail` as the read-only viewer ACL user that docs/security.md documents."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

import msgspec
import pytest
import redis
from redis.exceptions import NoPermissionError

from monitor.core.model import Alert, encode_alert
from monitor.core.payload import feed_health_alert
from tests.alerts.redis_server import RedisServer
from tests.security.test_notifier_acl import documented_rule
from tests.test_tail import Tail

pytestmark = pytest.mark.integration

STREAM = "market-monitor:alerts"  # tail's default, as in the documented rule


def probe(feed: str) -> Alert:
    """A small alert naming `feed`."""
    return feed_health_alert("feed_stale", feed, dt.datetime(2024, 7, 16, 15, tzinfo=dt.UTC), 60.0)


def test_tail_reads_live_alerts_as_the_documented_viewer_user(tmp_path: Path) -> None:
    """Logged in as the documented `viewer` ACL user (from a config with `password_env`), `tail`
    finds the stream's end, prints the alert added after it started and not the one before,
    with no refusal in ACL LOG; the same user cannot write to the stream or read another key."""
    password = secrets.token_hex(12)
    before, after = probe("before-tail"), probe("after-tail")
    conf = tmp_path / "monitor.toml"
    with RedisServer() as server:
        conf.write_text(
            f'[redis]\nurl = "{server.url}"\nusername = "viewer"\n'
            'password_env = "MM_VIEWER_PASSWORD"\n'
        )
        admin = redis.Redis(port=server.port)
        rule = documented_rule("viewer", STREAM, password)
        admin.execute_command("ACL", "SETUSER", "viewer", *rule)
        admin.set("other:key", "private")
        admin.xadd(STREAM, {"id": before.id, "alert": encode_alert(before)})
        env = {**os.environ, "MM_VIEWER_PASSWORD": password}
        with Tail("--config", str(conf), "--json", "--count", "1", env=env) as tail:
            assert tail.err.next() == f"listening on {STREAM} (Ctrl-C to stop)\n"
            admin.xadd(STREAM, {"id": after.id, "alert": encode_alert(after)})
            printed = tail.out.next()
            assert tail.proc.wait(10) == 0
        left = tail.left
        assert admin.acl_log() == []  # tail was never refused anything
        viewer = redis.Redis(port=server.port, username="viewer", password=password)
        for refused in (
            lambda: viewer.xadd(STREAM, {"id": "forged"}),
            lambda: viewer.get("other:key"),
            lambda: viewer.flushall(),
        ):
            with pytest.raises(NoPermissionError):
                refused()
        viewer.close()
        admin.close()
    assert msgspec.json.decode(printed, type=Alert) == after
    assert left == ([], [])


def test_tail_on_the_channel_outlasts_a_quiet_spell_as_the_viewer_user(tmp_path: Path) -> None:
    """`tail --channel` as the documented viewer user (no PING in its rule) stays subscribed
    through a quiet spell longer than its PING interval and prints the alert published after
    it. Before, the refused PING ended it with exit 78 after five quiet seconds."""
    import time

    from monitor.tail import PING_S

    password = secrets.token_hex(12)
    alert = probe("after-a-quiet-spell")
    conf = tmp_path / "monitor.toml"
    with RedisServer() as server:
        conf.write_text(
            f'[redis]\nurl = "{server.url}"\nusername = "viewer"\n'
            'password_env = "MM_VIEWER_PASSWORD"\n'
        )
        admin = redis.Redis(port=server.port)
        admin.execute_command(
            "ACL", "SETUSER", "viewer", *documented_rule("viewer", STREAM, password)
        )
        env = {**os.environ, "MM_VIEWER_PASSWORD": password}
        with Tail("--config", str(conf), "--channel", "--json", "--count", "1", env=env) as tail:
            assert tail.err.next() == f"listening on {STREAM} (Ctrl-C to stop)\n"
            time.sleep(PING_S + 2)
            assert tail.proc.poll() is None  # (still listening)
            admin.publish(STREAM, encode_alert(alert))
            printed = tail.out.next()
            assert tail.proc.wait(10) == 0
        admin.close()
    assert msgspec.json.decode(printed, type=Alert) == alert
