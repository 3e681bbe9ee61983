"""Summaries of held (inhibited) alerts across a stop or a kill, against real Redis and a webhook
that fails, then recovers: the held alerts were acked long ago, so the summary is their only
message and must survive until it is delivered."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from tests.conftest import ROOT
from tests.notify.conftest import alert, feed_alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, pending, running, until

pytestmark = pytest.mark.integration

SUMMARY = "2 alerts held back while feeds were stale"
ALERTS = [
    feed_alert("feed_stale", "mqtt"),
    alert(1),
    alert(2),
    feed_alert("feed_recovered", "mqtt"),
]
ROUTE = {"receivers": ["chat"], "routes": [{"match": {"kind": ["feed_*"]}, "receivers": ["ops"]}]}


def tried(hooks: WebhookServer) -> bool:
    """Whether `/chat` was sent the summary (and refused it)."""
    return any(p == "/chat" and b.get("title") == SUMMARY for p, b, *_ in hooks.received)


async def saved_state(stream: str, consumer: str) -> Any:
    """The router's state saved by `consumer` (None when there is none)."""
    client = aioredis.Redis()
    raw = await client.get(f"{stream}:notify:notifier:state:{consumer}")
    await client.aclose()
    return None if raw is None else msgspec.json.decode(raw)


async def restart_and_deliver(stream: str, hooks: WebhookServer, consumer: str) -> None:
    """With `/chat` back, run a notifier until the summary arrives, and a little longer."""
    hooks.always("/chat", None)
    config = make_config(
        stream,
        [{"name": "chat", "url": hooks.url("/chat")}, {"name": "ops", "url": hooks.url("/ops")}],
        route=ROUTE,
        redis={"consumer": consumer},
    )
    async with running(config):
        await until(lambda: len(hooks.bodies("/chat")) >= 1, 10)
        await asyncio.sleep(0.5)  # (the ticker saves the state; nothing more is sent)


async def test_a_summary_refused_before_a_stop_is_delivered_after_the_restart(
    stream: str,
) -> None:
    """Two alerts held while `mqtt` is stale; on `feed_recovered` their summary goes to `chat`,
    which answers 503; the notifier stops. Restarted with `chat` back, it sends the summary
    once, and the state then holds no summary. Before, the state saved at recovery held no
    alert and the summary lived only in memory: the restarted notifier sent nothing."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 503)
        config = make_config(
            stream,
            [
                {"name": "chat", "url": hooks.url("/chat"), "max_attempts": 1000},
                {"name": "ops", "url": hooks.url("/ops")},
            ],
            route=ROUTE,
        )
        await publish(stream, ALERTS)
        async with running(config):
            await until(lambda: tried(hooks))
        assert [s["notice"]["title"] for s in (await saved_state(stream, "c1"))["summaries"]] == [
            SUMMARY
        ]
        await restart_and_deliver(stream, hooks, "c1")
    assert [b["title"] for b in hooks.bodies("/chat")] == [SUMMARY]
    assert [b["title"] for b in hooks.bodies("/ops")] == ["mqtt feed_stale", "mqtt feed_recovered"]
    state = await saved_state(stream, "c1")
    assert (state["inhibited"], state["summaries"]) == ([], [])
    assert await pending(stream) == 0


def config_file(path: Path, stream: str, hooks: WebhookServer) -> Path:
    """The notifier TOML of the kill test: `chat` retries for long, feed alerts go to `ops`."""
    path.write_text(
        f"""
[redis]
stream = "{stream}"
group = "notifier"
consumer = "first"
start = "0"
block_ms = 100
claim_idle_s = 0.5
claim_interval_s = 0.1
[delivery]
max_attempts = 1000
backoff_base_s = 0.05
backoff_cap_s = 0.1
[[receivers]]
name = "chat"
url = "{hooks.url("/chat")}"
[[receivers]]
name = "ops"
url = "{hooks.url("/ops")}"
[route]
receivers = ["chat"]
group_wait_s = 0
group_interval_s = 0
group_by = ["id"]
[[route.routes]]
match = {{ kind = ["feed_*"] }}
receivers = ["ops"]
[log]
json = true
"""
    )
    return path


async def test_a_summary_refused_before_a_kill_is_delivered_after_the_restart(
    stream: str, tmp_path: Path
) -> None:
    """As above, but the notifier (a process) is SIGKILLed while `chat` refuses the summary:
    every entry was acked (the held alerts at once, the feed alerts once `ops` had them), so
    only the saved state knows of the summary; a notifier started then under another name
    adopts that state once its lease lapses, and sends the summary, once."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 503)
        conf = config_file(tmp_path / "notify.toml", stream, hooks)
        await publish(stream, ALERTS)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "monitor.notify", "notify", "--config", str(conf)),
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await until(lambda: tried(hooks) and len(hooks.bodies("/ops")) == 2, 30)
            async with asyncio.timeout(10):
                while await pending(stream):  # noqa: ASYNC110 - polls Redis (the last XACK)
                    await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
        assert await pending(stream) == 0
        state = await saved_state(stream, "first")
        assert [s["notice"]["title"] for s in state["summaries"]] == [SUMMARY]
        await restart_and_deliver(stream, hooks, "second")
    assert [b["title"] for b in hooks.bodies("/chat")] == [SUMMARY]
    assert [b["title"] for b in hooks.bodies("/ops")] == ["mqtt feed_stale", "mqtt feed_recovered"]
    # `second` adopted the state `first` left (its lease lapsed) and deleted it.
    assert await saved_state(stream, "first") is None
    state = await saved_state(stream, "second")
    assert (state["inhibited"], state["summaries"]) == ([], [])
    assert await pending(stream) == 0
