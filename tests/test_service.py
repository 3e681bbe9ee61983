"""The whole daemon in-process against the real Mosquitto and Redis on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest
import redis.asyncio as aioredis

from monitor import config as cfg
from monitor.cli import main
from monitor.clock import Clock
from monitor.core.model import Alert, decode_alert
from monitor.datafiles import DataSpec, read_daily
from monitor.feed_replay import bar_messages
from monitor.service import Daemon, run
from tests.conftest import RULES, RUT

pytestmark = pytest.mark.integration


def write_config(tmp: Path, prefix: str, rules: Path = RULES, **extra: str) -> Path:
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
file = "{rules}"
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


@contextlib.asynccontextmanager
async def daemon_running(
    conf: Path, *, clock: Clock | None = None, stop_timeout_s: float = 30.0
) -> AsyncIterator[Daemon]:
    """The daemon of `conf` running in this loop, its feeds subscribed; stopped on the way out,
    where its exit code must be 0."""
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append)
    )
    try:
        yield await subscribed(ready)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, stop_timeout_s) == 0


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


async def test_ticks_over_mqtt_build_the_minute_bars_replay_builds(tmp_path: Path) -> None:
    """Ticks for three symbols, published over MQTT as single messages and arrays in a shuffled
    order, make the same minute bars as the engine fed the same ticks in one batch."""
    import random

    import polars as pl

    from monitor.calendar import nyse_sessions
    from monitor.clock import SimClock
    from monitor.core.engine import Engine
    from monitor.core.model import FeedBatch, Tick, ticks_frame
    from monitor.core.rules.spec import RulesFile

    rng = random.Random(7)
    t0 = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)
    ticks = [
        Tick(sym, t0 + dt.timedelta(milliseconds=rng.randrange(600_000)),
             round(rng.uniform(10, 11), 2), float(rng.randrange(1, 500)), f"{sym}-{i}")
        for sym in ("AAA", "BBB", "CCC") for i in range(300)
    ]  # fmt: skip
    rng.shuffle(ticks)
    later = t0 + dt.timedelta(minutes=15)
    engine = Engine(RulesFile(), nyse_sessions(dt.date(2024, 1, 1)))
    batch = FeedBatch.empty("oracle")
    batch.ticks = ticks_frame(ticks)
    engine.ingest(batch)
    expected = engine.advance(later).minute_bars.sort("symbol", "start")
    assert expected.height == 30

    def wire(t: Tick) -> dict[str, object]:
        return {"symbol": t.symbol, "ts": int(t.ts.timestamp() * 1000), "price": t.price,
                "size": t.size, "id": t.id}  # fmt: skip

    messages = [json.dumps(wire(t)).encode() for t in ticks[:300]]
    messages += [
        json.dumps([wire(t) for t in ticks[i : i + 50]]).encode() for i in range(300, 900, 50)
    ]
    prefix = f"mm-ticks-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    # (the clock past the last trade: a tick ahead of it would be from the future)
    clock = SimClock(t0 + dt.timedelta(minutes=10))
    async with daemon_running(conf, clock=clock) as daemon:
        async with aiomqtt.Client("127.0.0.1", 1883) as pub:
            for m in messages:
                await pub.publish(f"{prefix}/ticks", m, qos=1)
        async with asyncio.timeout(10):
            while daemon.counters.total("ticks_in") < len(ticks):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        clock.set(later)
        async with asyncio.timeout(10):
            while daemon.engine.minutes.height < 30:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        got = daemon.engine.minutes.sort("symbol", "start")
        assert got.equals(expected.select(got.columns))
        assert daemon.counters.total("rejections") == 0
        assert pl.Series(got.get_column("volume")).sum() == sum(t.size for t in ticks)


async def test_a_stale_feed_becomes_an_alert_on_the_stream(tmp_path: Path) -> None:
    """A feed reporting itself stale (and then recovered) puts a `feed_stale` (and a
    `feed_recovered`) alert on the Redis stream, with the gap in its metrics."""
    from monitor.feeds.websocket import FeedEvent

    prefix = f"mm-stale-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
    )
    at = dt.datetime(2024, 7, 16, 15, 0, tzinfo=dt.UTC)
    try:
        daemon = await subscribed(ready)
        daemon.on_feed_event(FeedEvent(feed="alpaca", kind="feed_stale", at=at, gap_s=65.0))
        later = at + dt.timedelta(minutes=3)
        daemon.on_feed_event(FeedEvent(feed="alpaca", kind="feed_recovered", at=later, gap_s=180.0))
        got = await read_stream(f"{prefix}:alerts", 2)
        assert [(a.kind, a.rule, a.symbol, a.session, a.severity) for a in got] == [
            ("feed_stale", "feed.stale", "alpaca", "2024-07-16", "warning"),
            ("feed_recovered", "feed.recovered", "alpaca", "2024-07-16", "info"),
        ]
        assert got[0].text == (
            "No data from feed alpaca after 65 s without data during regular hours; "
            "alerts from it may be late."
        )
        assert got[0].metrics == {"gap_s": 65.0}
        assert got[0].history is None
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()
