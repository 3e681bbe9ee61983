"""The whole daemon taking in a broker's backlog at a start (a persistent MQTT session, ticks
published while it was down), a few messages a batch: its minute alerts are replay's."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import aiomqtt
import msgspec
import polars as pl
import pytest
import redis.asyncio as aioredis

from monitor.core.model import Alert
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_commands import cli
from tests.test_daemon_faults import stream_alerts
from tests.test_service import daemon_running, write_config

pytestmark = pytest.mark.integration

START = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)  # 10:00 New York, a Tuesday
MINUTES = 25
SECOND = dt.timedelta(seconds=1)
SYMBOLS = ("AAA", "BBB", "CCC")
RULES = """
[[rules]]
id = "m.surge"
kind = "surge"
universe = true
timeframe = "1m"
window = 3
min_return = 0.004

[[rules]]
id = "m.streak"
kind = "streak"
universe = true
timeframe = "1m"
count = 3
min_return = 0.0005
"""


class RunningClock:
    """The wall clock as if it were `start` when made: it runs at the real clock's pace (a
    feed that delivers nothing for a few seconds is quiet by it)."""

    def __init__(self, start: dt.datetime) -> None:
        self.start, self.began = start, time.monotonic()

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=time.monotonic() - self.began)


def write_ticks(path: Path) -> int:
    """MINUTES minutes of trades of SYMBOLS from START (random walks, a dozen a minute each)
    as a tick CSV; how many."""
    rng = random.Random(5)
    rows = ["ts,symbol,price,size,id"]
    first = int(START.timestamp() * 1000)
    for symbol in SYMBOLS:
        price = 10.0
        times = sorted(rng.sample(range(MINUTES * 60_000), 12 * MINUTES))
        for i, ms in enumerate(times):
            price *= 1 + rng.gauss(0.0002, 0.0015)
            ts = dt.datetime.fromtimestamp((first + ms) / 1000, dt.UTC).isoformat()
            rows.append(f"{ts},{symbol},{price:.4f},100,{symbol}-{i}")
    path.write_text("\n".join(rows) + "\n")
    return len(rows) - 1


def split(ticks: Path, at: dt.datetime) -> tuple[Path, Path]:
    """The tick file's rows before `at`, and the others, as two tick files."""
    header, *rows = ticks.read_text().splitlines()
    before = [r for r in rows if dt.datetime.fromisoformat(r.split(",")[0]) < at]
    after = [r for r in rows if dt.datetime.fromisoformat(r.split(",")[0]) >= at]
    paths = (ticks.with_name("live.csv"), ticks.with_name("backlog.csv"))
    for path, part in zip(paths, (before, after), strict=True):
        path.write_text("\n".join([header, *part]) + "\n")
    return paths


def publish(ticks: Path, port: int, topic: str) -> None:
    """`market-monitor feed-replay` of the tick file to the broker, as fast as it takes them."""
    published = cli(
        "feed-replay", "--data", str(ticks), "--url", f"mqtt://127.0.0.1:{port}",
        "--topic", topic, "--qos", "1",
    )  # fmt: skip
    assert published.returncode == 0, published.stderr


def replayed(rules: Path, ticks: Path) -> list[Alert]:
    """What `market-monitor replay` prints over the tick file."""
    res = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", "--rules", str(rules), "--data", str(ticks)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [msgspec.json.decode(line, type=Alert) for line in res.stdout.splitlines()]


def said(alerts: list[Alert]) -> list[tuple[str, str, dict[str, object]]]:
    """Each alert's id, time and metrics (its `history`, what followed, replay knows of the
    data after the alert and the daemon does not)."""
    return sorted((a.id, a.ts, dict(a.metrics)) for a in alerts)


@pytest.mark.parametrize("live_minutes", [0, 3], ids=["down-throughout", "live-first"])
async def test_a_backlog_taken_in_at_a_start_fires_the_minute_alerts_replay_fires(
    tmp_path: Path, live_minutes: int
) -> None:
    """Twenty-five minutes of trades of three symbols (the first `live_minutes` of them taken
    in live, its bars saved at the stop) published while the daemon is down, taken in at its
    start 35 minutes after the first, ten messages a batch: its minute alerts (ids, times,
    metrics) are replay's over the same ticks, its minute bars are whole, and no tick came
    late. (Each batch used to close every minute to the wall clock: the rest of the backlog
    came as late ticks, and the alerts were those of minutes cut short.) With no minute live
    the second start is a first start: its store is new (the broker's session an earlier
    installation's), nothing saved to hold the close clock at."""
    prefix = f"mm-backlog-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    ticks = tmp_path / "ticks.csv"
    n = write_ticks(ticks)
    want = replayed(rules, ticks)
    assert len(want) >= 5
    cut = START + dt.timedelta(minutes=live_minutes)
    live, backlog = split(ticks, cut)
    topic = f"{prefix}/ticks"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix, rules=rules, engine="batch_max_rows = 10")
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        try:
            # Live before the backlog: the broker keeps the daemon's session when it stops.
            clock = RunningClock(cut + dt.timedelta(seconds=5))
            async with daemon_running(conf, clock=clock) as daemon:
                if live_minutes:
                    publish(live, broker.port, topic)
                async with asyncio.timeout(30):
                    while daemon.engine.minutes.height < len(SYMBOLS) * live_minutes:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            if not live_minutes:  # (a first start: nothing saved)
                shutil.rmtree(tmp_path / "store")
            publish(backlog, broker.port, topic)
            later = RunningClock(START + dt.timedelta(minutes=MINUTES + 10))
            async with daemon_running(conf, clock=later) as daemon:
                async with asyncio.timeout(60):
                    while daemon.engine.minutes.height < len(SYMBOLS) * MINUTES:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                taken = len(backlog.read_text().splitlines()) - 1  # (since this start)
                assert daemon.counters.total("ticks_in") == taken
                assert daemon.engine.book_counts() == {}
                assert daemon.counters.total("bar_events") == 0
                volumes = daemon.engine.minutes.get_column("volume").sum()
            assert volumes == 100.0 * n
            # (the daemon stopped: every alert it fired is on the stream)
            got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(want))
            assert said(got) == said(want)
        finally:
            client = aioredis.Redis()
            await client.delete(f"{prefix}:alerts")
            await client.aclose()


@pytest.mark.parametrize("saved", [True, False], ids=["saved", "first-start"])
async def test_a_backlog_the_broker_delivers_seconds_after_the_start_fires_replays_alerts(
    tmp_path: Path, saved: bool
) -> None:
    """The broker down when the daemon starts (a machine's boot: Mosquitto comes up after it),
    its persistent session's backlog delivered a few seconds later: the minute alerts are
    still replay's and no tick came late. (The daemon's idle steps before the first delivery
    closed every minute to the wall clock: the whole backlog came late.) Not `saved`: the
    start is a first one, its store new, the broker's session an earlier installation's (the
    close clock had nothing restored to hold at: the backlog came late)."""
    prefix = f"mm-backlog-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    ticks = tmp_path / "ticks.csv"
    write_ticks(ticks)
    want = replayed(rules, ticks)
    live_minutes = 3 if saved else 0  # (a first start's backlog: every tick)
    cut = START + dt.timedelta(minutes=live_minutes)
    live, backlog = split(ticks, cut)
    topic = f"{prefix}/ticks"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix, rules=rules, engine="batch_max_rows = 10")
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        try:
            # (its session made, its state saved at the stop)
            async with daemon_running(conf, clock=RunningClock(cut + 5 * SECOND)) as daemon:
                if live_minutes:
                    publish(live, broker.port, topic)
                async with asyncio.timeout(30):
                    while daemon.engine.minutes.height < len(SYMBOLS) * live_minutes:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            if not saved:
                shutil.rmtree(tmp_path / "store")
            publish(backlog, broker.port, topic)
            broker.stop()  # (its session and queue saved)
            later = RunningClock(START + dt.timedelta(minutes=MINUTES + 10))
            boot = threading.Timer(4, broker.start)  # (idle steps meanwhile, the feed retrying)
            boot.start()
            async with daemon_running(conf, clock=later) as daemon:
                boot.join()
                async with asyncio.timeout(60):
                    while daemon.engine.minutes.height < len(SYMBOLS) * MINUTES:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert daemon.counters.total("bar_events") == 0
            got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(want))
            assert said(got) == said(want)
        finally:
            client = aioredis.Redis()
            await client.delete(f"{prefix}:alerts")
            await client.aclose()


class Relay:
    """A TCP relay to the broker that can be cut (its connections closed, new ones refused)
    and restored: the daemon's connection lost while the broker stays up."""

    def __init__(self, target: int) -> None:
        self.target, self.up = target, True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        their_reader, their_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, their_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, their_writer), pipe(their_reader, writer))


async def test_a_connection_lost_across_a_minutes_end_brings_its_ticks_late_no_more(
    tmp_path: Path,
) -> None:
    """Live trades published every 0.1 s while the daemon's connection to the broker is lost
    for 20 s across a minute's end (the broker up, queueing them for its persistent session):
    once it is back, the minute closes with all of them, none a late tick. (The idle steps of
    the outage closed the minute by the wall clock: the queued trades of it came late.)"""
    prefix = f"mm-lost-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    clock = RunningClock(START + 45 * SECOND)  # (the minute of 14:00 ends 15 s from now)
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        relay = Relay(broker.port)
        async with relay as port:
            conf = write_config(tmp_path, prefix, rules=rules)
            conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{port}"))
            async with (
                daemon_running(conf, clock=clock) as daemon,
                aiomqtt.Client("127.0.0.1", broker.port) as publisher,
            ):
                sent: list[dt.datetime] = []

                async def trade() -> None:
                    ts = clock.now()
                    message = {"symbol": "AAA", "ts": int(ts.timestamp() * 1000),
                               "price": 10.0, "size": 100, "id": f"t{len(sent)}"}  # fmt: skip
                    await publisher.publish(f"{prefix}/ticks", msgspec.json.encode(message), qos=1)
                    sent.append(ts)

                for _ in range(30):
                    await trade()
                    await asyncio.sleep(0.1)
                relay.cut()
                for _ in range(200):  # (20 s: past 14:01 and the close delay)
                    await trade()
                    await asyncio.sleep(0.1)
                relay.up = True
                async with asyncio.timeout(30):
                    while daemon.counters.total("ticks_in") < len(sent):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert daemon.counters.get("bar_events", kind="late_tick_corrected") == 0
                minute = START
                async with asyncio.timeout(30):
                    while daemon.engine.minutes.filter(pl.col("start") == minute).height == 0:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                bar = daemon.engine.minutes.filter(pl.col("start") == minute)
                in_minute = sum(1 for ts in sent if ts < START + dt.timedelta(minutes=1))
                assert bar.get_column("volume").to_list() == [100.0 * in_minute]
