"""The README's `/metrics` list names every metric the daemon exports: each name its code counts,
and each name on a real scrape of a daemon fed over the real Mosquitto. Thirteen names (the
feeds' own counts, the REST backfill's, `publish_batches`, `snapshots`) were exported and
missing from it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import aiomqtt
import pytest
import redis.asyncio as aioredis

from monitor.status import parse_metrics
from tests.conftest import ROOT
from tests.security.daemon import http_get
from tests.test_service import daemon_running, write_config

README = ROOT / "README.md"
# A counter's name as the daemon's code gives it: `counters.inc("name"`, `.set(`, `.describe(`,
# ... (across a line break too), or a RejectionLog's `counter="name"`.
COUNTED = re.compile(
    r"counters\.(?:inc|add|set|zero|replace|describe)\(\s*\"([a-z_]+)\"|counter=\"([a-z_]+)\""
)


def documented() -> set[str]:
    """The names in the README's `/metrics` bullet (`name`, or `name{labels}`)."""
    text = README.read_text()
    bullet = text.split("- `/metrics`: Prometheus text", 1)[1].split("\n- ", 1)[0]
    return set(re.findall(r"`([a-z_]+)(?:`|\{)", bullet))


def test_every_metric_the_daemons_code_counts_is_in_the_readme() -> None:
    """Each name the daemon's modules count (the notifier's are docs/notify.md's) is listed."""
    names: set[str] = set()
    for path in (ROOT / "monitor").rglob("*.py"):
        if "notify" not in path.relative_to(ROOT / "monitor").parts:
            names |= {a or b for a, b in COUNTED.findall(path.read_text())}
    assert len(names) > 40  # (the pattern still finds the calls)
    assert sorted(names - documented()) == []


@pytest.mark.integration
async def test_every_metric_on_a_real_scrape_is_in_the_readme(tmp_path: Path) -> None:
    """A daemon given a daily bar, a tick and a malformed message over MQTT: every name on its
    /metrics page is in the README's list."""
    prefix = f"mm-docmetrics-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    bar = {"symbol": "IWM", "timeframe": "1d", "session": "2024-07-16", "open": 1.0,
           "high": 2.0, "low": 1.0, "close": 2.0, "volume": 100}  # fmt: skip
    tick = {"symbol": "IWM", "ts": "2024-07-16T14:00:00Z", "price": 2.0, "size": 1, "id": "t1"}
    try:
        async with daemon_running(conf) as daemon:
            async with aiomqtt.Client("127.0.0.1", 1883) as pub:
                for message in (json.dumps(bar), json.dumps(tick), "{not json"):
                    await pub.publish(f"{prefix}/in", message, qos=1)
            async with asyncio.timeout(10):
                while daemon.counters.total("rejections") < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            port = int(daemon.counters.get("http_port"))
            page = parse_metrics(await asyncio.to_thread(http_get, port, "/metrics"))
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()
    assert {"feed_messages", "rejections", "bars_in"} <= set(page.samples)
    assert sorted(set(page.samples) - documented()) == []
