"""Consumers left in the group by a notifier killed (kill -9) are removed by the next notifier
to start, once idle longer than `claim_idle_s` and holding nothing; a consumer holding a
pending entry is never removed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.notify.service import Notifier
from tests.conftest import ROOT
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_redis_faults import consumers
from tests.notify.test_service import make_config, pending, until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def killed_consumer(stream: str, tmp_path: Path, hooks: WebhookServer) -> str:
    """Run the notifier as a process under its default `hostname-pid` consumer name until it
    delivered one alert, then kill -9 it: its consumer, holding nothing, stays in the group;
    its name."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'[redis]\nstream = "{stream}"\ngroup = "notifier"\nstart = "0"\nblock_ms = 100\n'
        f'[[receivers]]\nname = "chat"\nurl = "{hooks.url("/chat")}"\n'
        '[route]\nreceivers = ["chat"]\ngroup_wait_s = 0\ngroup_interval_s = 0\n'
        'group_by = ["id"]\n[log]\nlevel = "error"\n'
    )
    await publish(stream, [alert(1)])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.notify", "notify", "--config", str(conf),
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until(lambda: len(hooks.bodies("/chat")) == 1, 60)
        async with asyncio.timeout(15):
            while await pending(stream):  # noqa: ASYNC110 - polls Redis, not an event
                await asyncio.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    return f"{socket.gethostname()}-{proc.pid}"


async def test_a_start_removes_the_idle_consumers_that_hold_nothing(
    stream: str, tmp_path: Path
) -> None:
    """A notifier killed leaves its consumer (they piled up, one per crash); another holds an
    entry pending. A notifier starting within `claim_idle_s` (60 s) of the kill keeps both;
    once the killed one has been idle longer than `claim_idle_s` (0.5 s), a start deletes it
    (`consumers_swept`) and keeps the one holding an entry, whatever its idle time."""
    async with WebhookServer() as hooks:
        gone = await killed_consumer(stream, tmp_path, hooks)
    await publish(stream, [alert(2)])
    client = aioredis.Redis()
    await client.xreadgroup("notifier", "holder", {stream: ">"}, count=1)
    await client.aclose()
    assert await consumers(stream) == {gone: 0, "holder": 1}

    receivers = [{"name": "chat", "url": "json://127.0.0.1:9/x"}]
    async with Notifier(make_config(stream, receivers, redis={"claim_idle_s": 60})):
        pass
    assert await consumers(stream) == {gone: 0, "holder": 1}

    await asyncio.sleep(0.6)  # (past the 0.5 s claim_idle_s below: not a timing assert)
    with capture_logs() as logs:
        async with Notifier(make_config(stream, receivers, redis={"claim_idle_s": 0.5})):
            pass
    assert await consumers(stream) == {"holder": 1}
    assert [e["names"] for e in logs if e["event"] == "consumers_swept"] == [[gone]]
