"""Values of the silences hash that are no silence (written by hand, by a script, by another
version): the notifier and `silence` go on without them, say so, and `silence expire` removes
them."""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.notify.silences import SilenceStore, new_silence
from tests.cli_here import cli_here
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration

NAIVE = (
    b'{"id":"naive","rule":"*","symbol":null,"starts_at":"2020-01-01T00:00:00",'
    b'"ends_at":"2099-01-01T00:00:00","comment":"","created_by":""}'
)


async def test_an_unreadable_silence_is_logged_and_the_alerts_still_go(stream: str) -> None:
    """A silences hash holding a value that is not JSON and one whose times have no offset
    beside a real silence of SC01: SC02 is delivered, SC01 silenced, the notifier keeps
    running, and each bad value is logged once as silence_unreadable."""
    client = aioredis.Redis()
    key = f"{stream}:silences"
    now = dt.datetime.now(dt.UTC)
    await SilenceStore(client, key).add(
        new_silence("squeeze.daily", "SC01", dt.timedelta(hours=2), now, "known", "test")
    )
    await client.hset(key, mapping={"broken": b"{nope", "naive": NAIVE})
    await client.aclose()
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        with capture_logs() as logs:
            await publish(stream, [alert(1), alert(2)])
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 2)
                await publish(stream, [alert(3)])
                await until(lambda: notifier.counters.total("notify_acked") == 3)
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(2).title, alert(3).title]
    assert notifier.counters.get("notify_dropped", reason="silenced") == 1
    said = sorted(e["silence"] for e in logs if e["event"] == "silence_unreadable")
    assert said == ["broken", "naive"]


async def test_a_silences_key_of_another_type_lets_the_alerts_go(stream: str) -> None:
    """The silences key set to a string while the notifier runs (WRONGTYPE at each read): the
    alerts read after it are delivered, the notifier keeps running, and silences_failed is
    logged once; before, the notifier stopped with a traceback at the next read."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        with capture_logs() as logs:
            async with running(config) as notifier:
                await publish(stream, [alert(1)])
                await until(lambda: notifier.counters.total("notify_acked") == 1)
                client = aioredis.Redis()
                await client.set(f"{stream}:silences", "not a hash")
                await client.aclose()
                await publish(stream, [alert(2)])
                await until(lambda: notifier.counters.total("notify_acked") == 2)
                await publish(stream, [alert(3)])
                await until(lambda: notifier.counters.total("notify_acked") == 3)
    titles = [b["title"] for b in hooks.bodies("/chat")]
    assert titles == [alert(1).title, alert(2).title, alert(3).title]
    failed = [e for e in logs if e["event"] == "silences_failed"]
    assert [(e["key"], e["error"].split(":")[0]) for e in failed] == [
        (f"{stream}:silences", "ResponseError")
    ]


def test_silence_list_names_an_unreadable_value_and_expire_removes_it(tmp_path: Path) -> None:
    """`silence list` with a value that is no silence in the hash exits 0, listing the others
    and naming the bad one on stderr; `silence expire` of it removes it from the hash."""
    stream = f"mm-silence-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{stream}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    client = redis.Redis()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return cli_here("silence", *args, "--config", str(conf))

    try:
        client.hset(f"{stream}:silences", "broken", b"{nope")
        added = cli("add", "--rule", "squeeze.daily", "--for", "2h")
        assert added.returncode == 0, added.stderr
        listed = cli("list")
        assert listed.returncode == 0, listed.stderr
        assert "squeeze.daily" in listed.stdout
        assert listed.stderr.startswith("market-monitor: silence broken is unreadable (")
        assert "`silence expire broken` removes it" in listed.stderr
        expired = cli("expire", "broken")
        assert expired.returncode == 0, expired.stderr
        assert expired.stdout.startswith("broken removed (unreadable: ")
        assert client.hexists(f"{stream}:silences", "broken") == 0
        assert cli("list").stderr == ""
    finally:
        for key in client.scan_iter(f"{stream}*"):
            client.delete(key)
        client.close()


def test_silence_list_gives_a_silence_written_with_another_offset_in_utc(tmp_path: Path) -> None:
    """A silence written by hand with its times at +02:00 is listed with its end in UTC, as
    the line says (it printed the +02:00 clock time labelled UTC)."""
    stream = f"mm-silence-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{stream}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    client = redis.Redis()
    zoned = (
        b'{"id":"zoned","rule":"*","symbol":null,"starts_at":"2020-01-01T00:00:00+02:00",'
        b'"ends_at":"2099-01-01T12:30:00+02:00","comment":"by hand","created_by":"ops"}'
    )
    try:
        client.hset(f"{stream}:silences", "zoned", zoned)
        listed = cli_here("silence", "list", "--config", str(conf))
        assert listed.returncode == 0, listed.stderr
        assert "until 2099-01-01 10:30 UTC" in listed.stdout
    finally:
        for key in client.scan_iter(f"{stream}*"):
            client.delete(key)
        client.close()
