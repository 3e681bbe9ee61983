"""The live view says when the daemon is not well or its data is old: /api/state carries the
daemon's health and how current its bars are, and the board and `watch` turn amber or red."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import SimClock
from monitor.watch import condition
from tests.alerts.redis_server import RedisServer
from tests.security.daemon import backfill, http_get, write_config
from tests.test_commands import cli
from tests.test_health import daemon_of

MONDAY = dt.datetime(2024, 7, 15, 15, 0, tzinfo=dt.UTC)  # (bars up to Friday 2024-07-12)


async def state_once(port: int, wanted: str, timeout_s: float = 8.0) -> dict[str, Any]:
    """/api/state once its health status is `wanted`."""
    async with asyncio.timeout(timeout_s):
        while True:
            state: dict[str, Any] = json.loads(
                await asyncio.to_thread(http_get, port, "/api/state")
            )
            if state["health"]["status"] == wanted:
                return state
            await asyncio.sleep(0.1)


@pytest.mark.integration
async def test_state_and_watch_say_redis_down_and_data_a_session_behind(tmp_path: Path) -> None:
    """With Redis up and the bars current, /api/state is healthy and `watch` says nothing but
    its source; Redis stopped, /api/state is degraded with /healthz's reason and `watch` says
    so; the clock a day on without a bar, the data reads a session behind."""
    with RedisServer() as server:
        prefix = f"mm-livehealth-{uuid.uuid4().hex[:8]}"
        conf = write_config(tmp_path, feeds=[], redis={"url": server.url, "stream": prefix})
        backfill(conf, to="2024-07-12")
        clock = SimClock(MONDAY)
        async with daemon_of(conf, clock) as daemon:
            port = int(daemon.counters.get("http_port"))
            url = f"http://127.0.0.1:{port}"
            state = await state_once(port, "healthy")
            assert (state["health"], state["sessions_behind"]) == (
                {"status": "healthy", "reasons": []}, 0,
            )  # fmt: skip
            assert state["latest_bar"] == "2024-07-12T20:00:00+00:00"
            assert state["latest_bar_age_s"] == 241_200.0
            fine = await asyncio.to_thread(cli, "watch", "--once", "--url", url)
            assert f"● {url}\n" in fine.stdout
            server.stop()
            state = await state_once(port, "degraded")
            healthz = json.loads(await asyncio.to_thread(http_get, port, "/healthz"))
            assert state["health"]["reasons"] == healthz["reasons"]
            assert state["health"]["reasons"][0].startswith("redis unavailable (")
            clock.set(MONDAY + dt.timedelta(days=1))
            ill = await asyncio.to_thread(
                cli, "watch", "--once", "--url", url, env={"COLUMNS": "400"}
            )
    header = ill.stdout.splitlines()[0]
    assert f"● {url} · degraded: redis unavailable (" in header
    assert header.endswith("· data from 2024-07-12, 1 session behind"), header


def test_watch_turns_amber_when_degraded_or_behind_and_red_when_down() -> None:
    """The header's word on the daemon: green with its source when healthy and current, amber
    (bold yellow) with the reasons when degraded or a session behind, red when down; a daemon
    from before health was in /api/state reads as healthy."""
    ok = {"health": {"status": "healthy", "reasons": []}, "sessions_behind": 0}
    assert condition(ok, "src") == ("● src", "green")
    assert condition({}, "src") == ("● src", "green")
    stale = {"health": {"status": "degraded", "reasons": ["feed broker stale"]}}
    assert condition(stale, "src") == ("● src · degraded: feed broker stale", "bold yellow")
    old = {**ok, "sessions_behind": 600, "latest_bar": "2024-07-12T20:00:00+00:00"}
    assert condition(old, "src") == ("● src · data from 2024-07-12, 600 sessions behind",
                                     "bold yellow")  # fmt: skip
    down = {"health": {"status": "down", "reasons": ["engine loop stalled"]}}
    assert condition(down, "src") == ("● src · down: engine loop stalled", "bold red")
