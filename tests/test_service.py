"""The whole daemon in-process against the real Mosquitto and Redis on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import aiomqtt
import msgspec
import pytest
import redis.asyncio as aioredis

from monitor import config as cfg
from monitor.cli import main
from monitor.core.model import Alert, decode_alert
from monitor.datafiles import DataSpec, read_daily
from monitor.feed_replay import bar_messages
from monitor.service import Daemon, run
from tests.conftest import RULES, RUT

pytestmark = pytest.mark.integration


def write_config(tmp: Path, prefix: str, **extra: str) -> Path:
    """A daemon config for one test: its own store, topic, channel and stream."""
    path = tmp / "monitor.toml"
    path.write_text(
        f"""
[store]
path = "{tmp / "store"}"
[[feeds]]
kind = "mqtt"
name = "broker"
url = "mqtt://127.0.0.1:1883"
topics = ["{prefix}/#"]
qos = 1
client_id = "{prefix}-daemon"
session_expiry_s = 60
[redis]
url = "redis://127.0.0.1:6379/0"
channel = "{prefix}:alerts"
stream = "{prefix}:alerts"
[rules]
file = "{RULES}"
[http]
port = 0
[engine]
batch_max_age_ms = 20
{extra.get("engine", "")}
"""
    )
    return path


async def read_stream(stream: str, want: int, timeout_s: float = 20.0) -> list[Alert]:
    """Alerts on the stream once at least `want` are there (or the timeout passed)."""
    client = aioredis.Redis()
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while True:
            entries = await client.xrange(stream)
            if len(entries) >= want or asyncio.get_running_loop().time() > deadline:
                return [decode_alert(f[b"alert"]) for _, f in entries]
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def test_mqtt_daily_bars_give_the_replay_alerts_on_redis(tmp_path: Path) -> None:
    """^RUT backfilled to 2024-07-09, then 2024-07-10..16 published over MQTT: the stream and the
    channel carry the same alerts for 2024-07-16 that replay gives, ids included."""
    prefix = f"mm-test-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    assert (
        main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-09"])
        == 0
    )
    bars = read_daily(
        DataSpec(path=str(RUT), symbol="^RUT"), start=dt.date(2024, 7, 10), end=dt.date(2024, 7, 16)
    ).bars
    expected = replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
    assert {a.session for a in expected} == {"2024-07-16"}

    config = cfg.load(conf)
    stop = asyncio.Event()
    listener = aioredis.Redis()
    sub = listener.pubsub()
    await sub.subscribe(f"{prefix}:alerts")
    ready: list[Daemon] = []
    daemon = asyncio.create_task(
        run(config, stop=stop, install_signals=False, on_ready=ready.append)
    )
    try:
        await subscribed(ready)
        async with aiomqtt.Client("127.0.0.1", 1883) as pub:
            for message in bar_messages(bars):
                await pub.publish(f"{prefix}/bars", message, qos=1)
        got = await read_stream(f"{prefix}:alerts", len(expected))
        assert [a.id for a in got] == [a.id for a in expected]
        assert got == expected
        published = []
        async with asyncio.timeout(5):
            while len(published) < len(expected):
                m = await sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if m is not None:
                    published.append(decode_alert(m["data"]))
        assert published == expected
    finally:
        stop.set()
        assert await asyncio.wait_for(daemon, 20) == 0
        await sub.aclose()
        await listener.aclose()
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


async def subscribed(ready: list[Daemon], timeout_s: float = 20.0) -> Daemon:
    """The daemon, once every MQTT feed has subscribed."""
    async with asyncio.timeout(timeout_s):
        while not ready or ready[0].counters.total("feed_subscribes") < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return ready[0]


def replay_alerts(start: dt.date, end: dt.date) -> list[Alert]:
    """What `market-monitor replay` prints for ^RUT between start and end."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", "--rules", str(RULES), "--data", f"^RUT={RUT}",
         "--from", start.isoformat(), "--to", end.isoformat()],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [msgspec.json.decode(line, type=Alert) for line in res.stdout.splitlines()]
