"""The live view's last alerts survive a restart of the daemon, stopped or killed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import uuid
from pathlib import Path

import msgspec
import pytest
import redis
from structlog.testing import capture_logs

from monitor import logs
from monitor.cli import main
from monitor.recent_alerts import RecentAlerts
from monitor.store import ALERTS_RECENT, Store
from tests.conftest import RUT
from tests.daemon_process import DaemonProcess
from tests.notify.conftest import RUT_ALERT
from tests.security.daemon import http_get
from tests.test_service import write_config
from tests.web.test_board import publish


def test_the_list_is_bounded_and_read_back_oldest_first(tmp_path: Path) -> None:
    """The store keeps the last `size` alerts, oldest first, and a new list reads them back;
    a file that cannot be read is a warning and an empty list, not a failed start."""
    store = Store(tmp_path)
    log = logs.get("test")
    alerts = [msgspec.structs.replace(RUT_ALERT, id=f"a{i}") for i in range(5)]
    recent = RecentAlerts(store, log, size=3)
    recent.extend(alerts[:2])
    recent.extend(alerts[2:])
    assert [a.id for a in RecentAlerts(store, log, size=3)] == ["a2", "a3", "a4"]
    assert [a.id for a in RecentAlerts(store, log, size=2)] == ["a3", "a4"]
    (tmp_path / ALERTS_RECENT).write_text("[{")
    with capture_logs() as seen:
        assert len(RecentAlerts(store, log)) == 0
    assert [e["event"] for e in seen] == ["recent_alerts_unreadable"]


def alerts_of(port: int) -> list[str]:
    """The ids of /api/state's alerts, newest first."""
    return [a["id"] for a in json.loads(http_get(port, "/api/state"))["alerts"]]


def started(conf: Path) -> tuple[DaemonProcess, int]:
    """The daemon of `conf` as a child process, subscribed, and its HTTP port."""
    daemon = DaemonProcess(conf)
    port = json.loads(daemon.wait_for("http_listening"))["port"]
    daemon.wait_for("feed_subscribed")
    return daemon, int(port)


@pytest.mark.integration
async def test_the_alerts_are_still_listed_after_sigterm_and_kill_9(tmp_path: Path) -> None:
    """The three alerts of 2024-07-16 on /api/state stay listed, in order, after the daemon
    is killed (kill -9) and started again, and after it is stopped (SIGTERM) and started
    again (it came back with "no alerts yet")."""
    prefix = f"mm-recent-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    args = ["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-15"]
    assert main(args) == 0
    daemon, port = await asyncio.to_thread(started, conf)
    try:
        await publish(prefix, dt.date(2024, 7, 16))
        async with asyncio.timeout(20):
            while len(listed := await asyncio.to_thread(alerts_of, port)) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert len(listed) == 3
        daemon.signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.wait, 10)
        daemon, port = await asyncio.to_thread(started, conf)
        assert await asyncio.to_thread(alerts_of, port) == listed
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
        daemon, port = await asyncio.to_thread(started, conf)
        assert await asyncio.to_thread(alerts_of, port) == listed
    finally:
        await asyncio.to_thread(daemon.stop)
        client = redis.Redis()
        client.delete(f"{prefix}:alerts")
        client.close()
