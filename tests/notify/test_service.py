"""The notifier against real Redis, a real SMTP server (aiosmtpd) and a real webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.counters import Counters
from monitor.core.model import decode_alert
from monitor.notify.config import NotifyConfig, parse
from monitor.notify.service import Notifier
from monitor.notify.silences import SilenceStore, new_silence
from tests.conftest import ROOT
from tests.notify.conftest import RUT_ALERT, alert, publish
from tests.notify.servers import SmtpSink, WebhookServer

pytestmark = pytest.mark.integration


def make_config(stream: str, receivers: list[dict[str, Any]], **extra: Any) -> NotifyConfig:
    """A notifier config for one test: its own stream and group, fast timers."""
    route = {
        "receivers": [r["name"] for r in receivers],
        "group_wait_s": 0.0,
        "group_interval_s": 0.0,
        "group_by": ["id"],
        **extra.pop("route", {}),
    }
    raw: dict[str, Any] = {
        "redis": {
            "stream": stream,
            "group": "notifier",
            "consumer": "c1",
            "start": "0",
            "block_ms": 100,
            "claim_idle_s": 0.5,
            "claim_interval_s": 0.1,
            **extra.pop("redis", {}),
        },
        "receivers": receivers,
        "route": route,
        "delivery": {"max_attempts": 3, "backoff_base_s": 0.2, "backoff_cap_s": 0.4, "jitter": 0.0},
        **extra,
    }
    return parse(raw, environ={})


def running(config: NotifyConfig, counters: Counters | None = None) -> Any:
    """The notifier running in this loop until the block ends."""
    return running_notifier(Notifier(config, counters=counters))


@contextlib.asynccontextmanager
async def running_notifier(notifier: Notifier) -> AsyncIterator[Notifier]:
    """`notifier` (parts replaced, not yet entered) running in this loop until the block ends."""
    stop = asyncio.Event()
    async with notifier:
        task = asyncio.create_task(notifier.run(stop), name="notifier_under_test")
        try:
            yield notifier
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait until `check()` is true (fail after `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 - polls servers and counters, not an event
            await asyncio.sleep(0.02)


async def pending(stream: str, group: str = "notifier") -> int:
    """Entries delivered to the group and not yet acknowledged."""
    client = aioredis.Redis()
    info = await client.xpending(stream, group)
    await client.aclose()
    return int(info["pending"])


async def test_email_and_webhook_get_the_alert_with_text_html_and_chart(
    stream: str, bars_file: Path
) -> None:
    """One alert reaches the SMTP server as HTML + text + PNG chart and the json:// webhook as
    Markdown + PNG; the entry is acked and logged as delivered for both receivers."""
    with SmtpSink() as smtp:
        async with WebhookServer() as hooks:
            config = make_config(
                stream,
                [{"name": "chat", "url": hooks.url("/chat")}, {"name": "email", "url": smtp.url()}],
                charts={"bars": str(bars_file)},
            )
            await publish(stream, [RUT_ALERT])
            async with running(config) as notifier:
                await until(lambda: len(smtp.messages) == 1 and len(hooks.bodies("/chat")) == 1)
                await until(lambda: notifier.counters.total("notify_acked") == 1)
    mail = smtp.messages[0]
    assert (mail["Subject"], mail["To"]) == (RUT_ALERT.title, "ops@example.com")
    html = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert html is not None and text is not None
    assert html.get_content().replace("\r\n", "\n").strip() == (
        "<h3>Russell 2000: 5 straight sessions up more than 1.0%</h3>\n"
        "<p>Russell 2000 rose more than 1.0% in each of 5 sessions (+11.5% in all), closing at "
        "2,263.67.</p>\n"
        "<p><i>4 earlier times since 1998; over the next 21 sessions, +6.0% on average (median "
        "+5.7%), 4 of 4 up.</i></p>\n"
        '<p style="color:#666">streak.daily · notice · 2024-07-16</p>'
    )
    assert "4 of 4 up" in text.get_content() and "<" not in text.get_content()
    (png,) = [p for p in mail.iter_attachments()]
    assert (png.get_content_type(), png.get_filename()) == ("image/png", "_RUT.png")
    assert png.get_content()[:8] == b"\x89PNG\r\n\x1a\n"

    (body,) = hooks.bodies("/chat")
    assert body["alerts"] == [msgspec.to_builtins(RUT_ALERT)]  # (whole: id, rule, metrics, ...)
    assert {k: v for k, v in body.items() if k not in ("attachments", "alerts")} == {
        "version": "1.0",
        "title": RUT_ALERT.title,
        "message": "**Russell 2000: 5 straight sessions up more than 1.0%**\n"
        "Russell 2000 rose more than 1.0% in each of 5 sessions (+11.5% in all), closing at "
        "2,263.67.\n"
        "_4 earlier times since 1998; over the next 21 sessions, +6.0% on average (median "
        "+5.7%), 4 of 4 up._\n"
        "streak.daily · notice · 2024-07-16",
        "type": "info",
    }
    (att,) = body["attachments"]
    assert (att["filename"], att["mimetype"]) == ("_RUT.png", "image/png")
    assert base64.b64decode(att["base64"]) == png.get_content()
    assert await pending(stream) == 0
    client = aioredis.Redis()
    logged = [
        await client.exists(f"{stream}:notify:sent:{r}:{RUT_ALERT.id}") for r in ("chat", "email")
    ]
    await client.aclose()
    assert logged == [1, 1]


async def test_fourteen_squeezes_at_the_close_are_one_message(stream: str) -> None:
    """14 squeeze alerts arriving together go out as one grouped message, not 14 pings."""
    async with WebhookServer() as hooks:
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            route={"group_by": ["rule", "session"], "group_wait_s": 0.5},
        )
        await publish(stream, [alert(i) for i in range(14)])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 14)
    (body,) = hooks.bodies("/chat")
    assert body["title"] == "14 symbols fired squeeze.daily on 2024-07-16"
    assert body["message"].split("\n") == [
        *(f"• **SC{i:02d}**: SC{i:02d} rose 12.0% on 4.1x its average volume." for i in range(14)),
        "_4 earlier times since 1998; over the next 21 sessions, +6.0% on average (median "
        "+5.7%), 4 of 4 up._",
    ]


async def test_broken_receivers_retry_or_dead_letter_without_delaying_others(
    stream: str,
) -> None:
    """`flaky` fails 3 times then gets every alert once, `dead` never recovers and its alerts go
    to the dead-letter stream, and `good` has all of them before either."""
    async with WebhookServer() as hooks:
        hooks.fail("/flaky", 503, times=3)
        hooks.always("/dead", 500)
        config = make_config(
            stream,
            [
                {"name": "good", "url": hooks.url("/good")},
                {"name": "flaky", "url": hooks.url("/flaky"), "max_attempts": 10},
                {"name": "dead", "url": hooks.url("/dead")},
            ],
        )
        alerts = [alert(i) for i in range(3)]
        await publish(stream, alerts)
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 3)
    ids = [a.id for a in alerts]
    good = [(b, t) for p, b, s, t in hooks.received if p == "/good"]
    flaky_ok = [(b, t) for p, b, s, t in hooks.received if p == "/flaky" and s == 200]
    assert [b["title"] for b, _ in good] == [a.title for a in alerts]
    assert [b["title"] for b, _ in flaky_ok] == [a.title for a in alerts]
    assert max(t for _, t in good) < min(t for _, t in flaky_ok)
    assert [s for p, _, s, _ in hooks.received if p == "/dead"] == [500] * 9
    client = aioredis.Redis()
    dead = await client.xrange(f"{stream}:dead")
    await client.aclose()
    assert [
        (f[b"id"].decode(), f[b"receiver"].decode(), f[b"reason"].decode(), f[b"attempts"])
        for _, f in dead
    ] == [(i, "dead", "gave up after 3 attempts: json://127.0.0.1/…: HTTP 500", b"3") for i in ids]
    assert [decode_alert(f[b"alert"]) for _, f in dead] == alerts
    assert notifier.counters.get("notify_dead_lettered", receiver="dead") == 3
    assert await pending(stream) == 0


async def test_silenced_alerts_are_acked_and_not_sent(stream: str) -> None:
    """A silence on squeeze.daily for SC01 (kept in Redis) stops SC01 and lets SC02 through."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        client = aioredis.Redis()
        import datetime as dt

        now = dt.datetime.now(dt.UTC)
        await SilenceStore(client, f"{stream}:silences").add(
            new_silence("squeeze.daily", "SC01", dt.timedelta(hours=2), now, "known", "test")
        )
        await client.aclose()
        await publish(stream, [alert(1), alert(2)])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 2)
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(2).title]
    assert notifier.counters.get("notify_dropped", reason="silenced") == 1


def write_config_file(path: Path, stream: str, hooks: WebhookServer, consumer: str) -> Path:
    """A notifier TOML for the kill test."""
    path.write_text(
        f"""
[redis]
stream = "{stream}"
group = "notifier"
consumer = "{consumer}"
start = "0"
block_ms = 100
claim_idle_s = 0.5
claim_interval_s = 0.1
[delivery]
max_attempts = 1000
backoff_base_s = 0.05
backoff_cap_s = 0.1
[[receivers]]
name = "a"
url = "{{HOOK_A}}"
[[receivers]]
name = "b"
url = "{hooks.url("/b")}"
[route]
receivers = ["a", "b"]
group_wait_s = 0
group_interval_s = 0
group_by = ["id"]
[log]
json = true
"""
    )
    return path


async def test_killed_notifier_leaves_the_rest_to_another_and_nothing_is_sent_twice(
    stream: str, tmp_path: Path
) -> None:
    """A notifier SIGKILLed after `a` got all 5 alerts and `b` only 2 (3 entries unacked): a
    second notifier claims those, sends `b` the other 3 and `a` nothing again."""
    async with WebhookServer() as hooks:
        hooks.fail("/b", 200, times=2)
        hooks.fail("/b", 503, times=10_000)
        conf = write_config_file(tmp_path / "notify.toml", stream, hooks, "first")
        alerts = [alert(i) for i in range(5)]
        await publish(stream, alerts)
        env = {**os.environ, "HOOK_A": hooks.url("/a")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor.notify",
            "notify",
            "--config",
            str(conf),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await until(
                lambda: (
                    len(hooks.bodies("/a")) == 5
                    and len([r for r in hooks.received if r[0] == "/b"]) >= 4
                ),
                30,
            )
            # `a` has all 5 once the notifier recorded them, not when the webhook got them: a
            # kill between the two is a send again (at least once), not this test's case
            client = aioredis.Redis()
            sent = [f"{stream}:notify:sent:a:{x.id}" for x in alerts]
            async with asyncio.timeout(30):
                while await client.exists(*sent) < 5:  # noqa: ASYNC110 - polls Redis
                    await asyncio.sleep(0.02)
            await client.aclose()
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
        assert await pending(stream) == 3  # the 2 that both receivers have were acked
        hooks.reset("/b")
        await asyncio.sleep(0.6)  # let the dead consumer's entries pass claim_idle_s
        config = make_config(
            stream,
            [{"name": "a", "url": hooks.url("/a")}, {"name": "b", "url": hooks.url("/b")}],
            redis={"consumer": "second"},
        )
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 3)
    titles = [a.title for a in alerts]
    assert [b["title"] for b in hooks.bodies("/a")] == titles
    assert [b["title"] for b in hooks.bodies("/b")] == titles
    assert notifier.counters.get("notify_already_sent", receiver="a") == 3
    assert notifier.counters.get("notify_already_sent", receiver="b") == 0
    assert await pending(stream) == 0


async def test_stale_feed_holds_symbol_alerts_until_recovery(stream: str) -> None:
    """Between feed_stale and feed_recovered per-symbol alerts are acked but held; recovery
    brings one summary message listing them, delivered once."""
    from tests.notify.conftest import feed_alert

    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        await publish(
            stream,
            [
                feed_alert("feed_stale", "mqtt"),
                alert(1),
                alert(2),
                feed_alert("feed_recovered", "mqtt"),
            ],
        )
        async with running(config):
            await until(lambda: len(hooks.bodies("/chat")) == 3)
            await asyncio.sleep(0.2)
    assert [b["title"] for b in hooks.bodies("/chat")] == [
        "mqtt feed_stale",
        "mqtt feed_recovered",
        "2 alerts held back while feeds were stale",
    ]
    assert await pending(stream) == 0
    client = aioredis.Redis()
    state = msgspec.json.decode(await client.get(f"{stream}:notify:notifier:state:c1"))
    await client.aclose()
    assert (state["stale_feeds"], state["inhibited"]) == ({}, [])


async def test_an_alert_added_twice_in_one_group_goes_out_once(stream: str) -> None:
    """The same alert XADDed twice lands in one delivery group: one message with one line, both
    entries acked, the repeat counted as a duplicate; a third copy later is skipped too."""
    async with WebhookServer() as hooks:
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            route={"group_by": ["rule", "session"], "group_wait_s": 0.3},
        )
        twice = alert(1)
        await publish(stream, [twice, alert(2), twice])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 3)
            await publish(stream, [twice])
            await until(lambda: notifier.counters.total("notify_acked") == 4)
    (body,) = hooks.bodies("/chat")
    assert body["message"].count("**SC01**") == 1
    assert body["message"].count("**SC02**") == 1
    assert notifier.counters.get("notify_alerts_sent", receiver="chat") == 2
    assert notifier.counters.get("notify_already_sent", receiver="chat") == 2
    assert await pending(stream) == 0


async def test_entries_that_are_not_alerts_are_dead_lettered_with_a_reason_and_acked(
    stream: str,
) -> None:
    """An entry without an `alert` field and one whose alert is not JSON go to the dead-letter
    stream, each with a reason a person can act on, and are acknowledged; the alert after
    them is delivered."""
    client = aioredis.Redis()
    await client.xadd(stream, {"id": "x1", "payload": "{}"})
    await client.xadd(stream, {"id": "x2", "alert": "{not json"})
    await publish(stream, [alert(1)])
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        async with running(config) as notifier:
            await until(lambda: len(hooks.bodies("/chat")) == 1)
            await until(lambda: notifier.counters.total("notify_acked") == 3)
    dead = await client.xrange(f"{stream}:dead")
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert reasons[0] == "undecodable entry: no `alert` field"
    assert reasons[1].startswith("undecodable entry: JSON is malformed")
    assert (await client.xpending(stream, "notifier"))["pending"] == 0
    await client.aclose()


async def test_the_notifiers_counters_are_at_zero_before_the_first_alert(stream: str) -> None:
    """/metrics has a series for each counter (per receiver where it has one) from the start."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        async with running(config) as notifier:
            text = notifier.counters.render()
    for line in (
        "market_monitor_notify_read 0",
        "market_monitor_notify_acked 0",
        "market_monitor_notify_trimmed_unread 0",
        'market_monitor_notify_sent{receiver="chat"} 0',
        'market_monitor_notify_dead_lettered{receiver="chat"} 0',
    ):
        assert f"{line}\n" in text, line


async def test_the_webhook_type_follows_the_alerts_severity(stream: str) -> None:
    """A notice goes out as `info`, a warning as `warning`, a critical alert as `failure`
    (Apprise's notification types, which chat services colour)."""
    from monitor.notify.render import kind_of

    sent = [alert(1), alert(2, severity="warning"), alert(3, severity="critical")]
    await publish(stream, sent)
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        async with running(config):
            await until(lambda: len(hooks.bodies("/chat")) == 3)
    types = {b["title"]: b["type"] for b in hooks.bodies("/chat")}
    assert [types[a.title] for a in sent] == ["info", "warning", "failure"]
    assert kind_of(sent[:2]) == "warning" and kind_of(sent) == "failure"  # (a group's worst)


async def test_a_notifier_started_after_the_digest_time_sends_the_day_digest_once(
    stream: str, tmp_path: Path
) -> None:
    """The digest time has passed when the notifier starts (it was down then): today's digest
    goes out at start, once, and not again at the next start; `notify digest` says so.
    Before, a notifier down at the digest time sent no digest that day."""
    from tests.cli_here import cli_here

    async with WebhookServer() as hooks:
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            digest={"enabled": True, "at": "00:00", "tz": "UTC"},
        )
        await publish(stream, [alert(1)])
        # (until the digest is recorded as sent, not just received: stopped between the two,
        # its claim would still stand at the next start, "being sent by another notifier")
        with capture_logs() as logs:
            async with running(config):
                await until(lambda: any(e["event"] == "digest_delivered" for e in logs))
        digests = [b for b in hooks.bodies("/chat") if "digest" in b["title"].lower()]
        async with running(config):
            await asyncio.sleep(0.5)
        assert [b for b in hooks.bodies("/chat") if "digest" in b["title"].lower()] == digests
        assert len(digests) == 1
        path = tmp_path / "notify.toml"
        path.write_text(
            f'[redis]\nstream = "{stream}"\ngroup = "notifier"\n'
            f'[[receivers]]\nname = "chat"\nurl = "{hooks.url("/chat")}"\n'
            '[route]\nreceivers = ["chat"]\n[digest]\nenabled = true\nat = "00:00"\ntz = "UTC"\n'
        )
        res = await asyncio.to_thread(cli_here, "notify", "--config", str(path), "digest")
    assert res.returncode == 0, res.stderr
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert f"digest:{day} to chat: already sent" in res.stdout
