"""The daemon warns when a symbol's daily bars skip a session, as replay and backfill report."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.cli import main
from tests.conftest import RUT
from tests.test_daemon_faults import publish, rut_bars
from tests.test_service import daemon_running, write_config

pytestmark = pytest.mark.integration


async def test_a_session_missing_from_a_feeds_daily_bars_is_logged(tmp_path: Path) -> None:
    """^RUT's bars of 2024-07-10 and 07-12 over MQTT, 07-11 never sent: one warning names the
    missing session and counts it; the next session's bar, with none missing, adds nothing,
    and nor do corrections of 07-12's bar, which open the same gap again."""
    prefix = f"mm-gaps-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    backfill = ["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-09"]
    assert main(backfill) == 0
    bars = rut_bars("2024-07-10", "2024-07-15")  # 10, 11, 12, 15
    try:
        with capture_logs() as logs:
            async with daemon_running(conf) as daemon:
                fixed = [bars[2].replace(b'"volume":', b'"volume":%d' % n) for n in (1, 2)]
                for sent, message in enumerate([bars[0], bars[2], bars[3], *fixed], start=1):
                    await publish(f"{prefix}/bars", [message])
                    async with asyncio.timeout(20):
                        while daemon.counters.total("bars_closed") < sent:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                missing = daemon.counters.get("daily_sessions_missing")
        warned = [e for e in logs if e["event"] == "daily_bars_missing"]
        assert [(e["sessions"], e["symbols"], e["first"]) for e in warned] == [
            (1, 1, ["^RUT 1 from 2024-07-11"])
        ]
        assert warned[0]["log_level"] == "warning"
        assert missing == 1
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()
