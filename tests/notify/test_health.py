"""The notifier's /healthz and `market_monitor_notify_redis_up`: down (503, with the reason)
while Redis does not answer, at start as while running; degraded while a receiver fails;
healthy otherwise. At start it waits for Redis instead of exiting 69."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.notify.config import NotifyConfig
from monitor.notify.main import run
from tests.alerts.redis_server import RedisServer, free_port
from tests.conftest import ROOT
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, until

pytestmark = pytest.mark.integration

FAST = Backoff(0.05, 0.2, jitter=0.0)


@contextlib.asynccontextmanager
async def serving(
    config: NotifyConfig, notify: Callable[[str], None] | None = None
) -> AsyncIterator[asyncio.Task[int]]:
    """`run(config)` (the process's service, /healthz and all) in this loop until the block
    ends; the task, whose result is the exit code."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(config, stop=stop, install_signals=False, notify=notify, start_backoff=FAST),
        name="notify_run_under_test",
    )
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def get(port: int, path: str) -> tuple[int, str]:
    """GET `path` from the notifier's HTTP port: status and body."""
    async with httpx.AsyncClient(timeout=5) as client:
        reply = await client.get(f"http://127.0.0.1:{port}{path}")
    return reply.status_code, reply.text


async def health_until(port: int, status: str, timeout_s: float = 15.0) -> tuple[int, Any]:
    """Poll /healthz until it says `status`: the HTTP status and the JSON document."""
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                code, body = await get(port, "/healthz")
                doc = json.loads(body)
                if doc["status"] == status:
                    return code, doc
            await asyncio.sleep(0.05)


async def redis_up(port: int) -> list[str]:
    """The `market_monitor_notify_redis_up` lines of /metrics."""
    _, text = await get(port, "/metrics")
    return [line for line in text.splitlines() if line.startswith("market_monitor_notify_redis_up")]


@pytest.mark.chaos
async def test_healthz_is_down_while_redis_is_away_and_healthy_again_after() -> None:
    """Redis killed under a running notifier: /healthz answers 503, `down`, naming Redis (its
    URL masked) and what the client said, and the gauge drops to 0; Redis back, it is
    `healthy` (200) with the gauge at 1."""
    stream = f"mm-notify-health-{uuid.uuid4().hex[:8]}"
    with RedisServer() as server:
        async with WebhookServer() as hooks:
            port = free_port()
            config = make_config(
                stream,
                [{"name": "chat", "url": hooks.url("/chat")}],
                redis={"url": server.url},
                http={"enabled": True, "port": port},
            )
            async with serving(config):
                code, doc = await health_until(port, "healthy")
                assert (code, doc["reasons"]) == (200, [])
                assert await redis_up(port) == ["market_monitor_notify_redis_up 1"]
                server.kill()
                code, doc = await health_until(port, "down")
                assert code == 503
                (reason,) = doc["reasons"]
                assert reason.startswith(
                    f"redis unavailable: redis at redis://127.0.0.1:{server.port}/0 unreachable: "
                ), reason
                assert await redis_up(port) == ["market_monitor_notify_redis_up 0"]
                server.start()
                code, doc = await health_until(port, "healthy")
                assert (code, doc["reasons"]) == (200, [])
                assert await redis_up(port) == ["market_monitor_notify_redis_up 1"]


async def test_healthz_is_degraded_while_a_receiver_fails(stream: str) -> None:
    """A receiver answering 500 makes /healthz `degraded` (200) with the receiver and its error;
    once it takes a message again the notifier is `healthy`."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 500)
        port = free_port()
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat"), "max_attempts": 1000}],
            http={"enabled": True, "port": port},
        )
        await publish(stream, [alert(1)])
        async with serving(config):
            code, doc = await health_until(port, "degraded")
            assert (code, doc["reasons"]) == (
                200,
                ["receiver chat failing: json://127.0.0.1/…: HTTP 500"],
            )
            hooks.always("/chat", None)
            code, doc = await health_until(port, "healthy")
            assert (code, doc["reasons"]) == (200, [])
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(1).title]


@pytest.mark.chaos
async def test_the_service_waits_for_redis_at_start_then_runs() -> None:
    """Started with no Redis listening, the notifier does not exit: it logs each failed attempt
    as `redis_unavailable` with the next delay, serves /healthz as down (503) and its gauge at
    0, and tells systemd only its status; once Redis answers it says READY=1 and delivers."""
    stream = f"mm-notify-wait-{uuid.uuid4().hex[:8]}"
    redis_port = free_port()
    said: list[str] = []
    async with WebhookServer() as hooks:
        port = free_port()
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            redis={"url": f"redis://127.0.0.1:{redis_port}/0"},
            http={"enabled": True, "port": port},
        )
        with capture_logs() as logs:
            async with serving(config, notify=said.append) as task:
                code, doc = await health_until(port, "down")
                await until(lambda: sum(e["event"] == "redis_unavailable" for e in logs) >= 3)
                assert not task.done()
                assert code == 503
                assert doc["reasons"][0].startswith(
                    f"redis unavailable: redis at redis://127.0.0.1:{redis_port}/0 unreachable: "
                )
                assert await redis_up(port) == ["market_monitor_notify_redis_up 0"]
                assert "READY=1" not in said
                with RedisServer(redis_port):
                    await until(lambda: "READY=1" in said)
                    await publish_to(redis_port, stream)
                    await until(lambda: len(hooks.bodies("/chat")) == 1)
                    code, doc = await health_until(port, "healthy")
    waits = [e for e in logs if e["event"] == "redis_unavailable" and "retry_in_s" in e]
    assert [(e["log_level"], e["attempt"]) for e in waits[:3]] == [
        ("warning", 1),
        ("warning", 2),
        ("warning", 3),
    ]
    assert [e["retry_in_s"] for e in waits[:3]] == [0.05, 0.1, 0.2]
    assert said.count("READY=1") == 1
    ready = said.index("READY=1")
    assert any(m.startswith("STATUS=waiting for Redis") for m in said[:ready])
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in said[:ready])
    assert said[-1] == "STOPPING=1"


async def publish_to(redis_port: int, stream: str) -> None:
    """One alert on `stream` of the Redis on `redis_port`."""
    import redis.asyncio as aioredis

    from monitor.core.model import encode_alert

    client = aioredis.Redis(port=redis_port)
    await client.xadd(stream, {"id": alert(1).id, "alert": encode_alert(alert(1))})
    await client.aclose()


async def test_sigterm_while_waiting_for_redis_exits_cleanly(tmp_path: Path) -> None:
    """`market-monitor notify` with no Redis listening keeps trying (two `redis_unavailable`
    lines, each with its attempt and next delay) and exits 0 at SIGTERM, without a traceback."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:{free_port()}/0"\n'
        f'stream = "mm-notify-term-{uuid.uuid4().hex[:8]}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "notify", "--config", str(conf),
        cwd=ROOT, env={**os.environ},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while len(lines) < 2:
                line = await proc.stderr.readline()
                assert line, "the notifier exited while Redis was away"
                event = json.loads(line)
                if event["event"] == "redis_unavailable":
                    lines.append(event)
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 15)
        code = await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, rest
    assert [e["attempt"] for e in lines] == [1, 2]
    assert all(e["retry_in_s"] > 0 for e in lines)
    assert b"Traceback" not in rest


async def test_the_notifier_answers_the_names_of_its_allowed_hosts_only(stream: str) -> None:
    """`[http] allowed_hosts` reaches the notifier's server: /healthz is answered for a listed
    name and a loopback one, 421 for another name."""
    from tests.test_http import ask

    async with WebhookServer() as hooks:
        port = free_port()
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            http={"enabled": True, "port": port, "allowed_hosts": ["notify.example:9109"]},
        )
        async with serving(config):
            await health_until(port, "healthy")
            answers = {}
            for host in ("notify.example:9109", "localhost", "notify.example:80", "evil.example"):
                answer = await ask(port, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                answers[host] = answer.split(b"\r\n")[0]
    assert answers == {
        "notify.example:9109": b"HTTP/1.1 200 OK",
        "localhost": b"HTTP/1.1 200 OK",
        "notify.example:80": b"HTTP/1.1 421 Misdirected Request",
        "evil.example": b"HTTP/1.1 421 Misdirected Request",
    }


async def test_status_of_a_notifier_reports_its_deliveries(stream: str) -> None:
    """`market-monitor status --url` at a notifier's port (as docs/notify.md suggests) reports
    the notifier: what it read and delivered, by receiver. (It printed the daemon's figures,
    all 0: "ticks in: 0", "alerts: 0 fired, 0 published".)"""
    from tests.test_commands import cli

    async with WebhookServer() as hooks:
        port = free_port()
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            http={"enabled": True, "port": port},
        )
        await publish(stream, [alert(1), alert(2)])
        async with serving(config):
            await until(lambda: len(hooks.bodies("/chat")) == 2)
            await health_until(port, "healthy")
            shown = await asyncio.to_thread(cli, "status", "--url", f"http://127.0.0.1:{port}")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"market-monitor notifier at http://127.0.0.1:{port}: healthy"
    assert "  redis: up" in lines
    assert "  alerts read: 2" in lines
    assert "  alerts sent: 2 (chat=2)" in lines
    assert any(line.startswith("  dead-lettered: 0") for line in lines)
    assert not any("ticks in" in line for line in lines)
