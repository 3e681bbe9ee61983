"""The daemon taking in a broker's backlog that crosses a session's close into the next
session, at a start (a persistent MQTT session): its minute and daily alerts are replay's,
each session bar emitted once."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_backlog_catch_up import RunningClock, publish, replayed, said, split
from tests.test_daemon_faults import stream_alerts
from tests.test_service import daemon_running, write_config

pytestmark = pytest.mark.integration

SYMBOLS = ("AAA", "BBB", "CCC")
# the last half hour of a Monday's session and of a Tuesday's
DAYS = (
    dt.datetime(2024, 7, 15, 19, 30, tzinfo=dt.UTC),
    dt.datetime(2024, 7, 16, 19, 30, tzinfo=dt.UTC),
)
MINUTES = 30
RULES = """
[[rules]]
id = "m.surge"
kind = "surge"
universe = true
timeframe = "1m"
window = 3
min_return = 0.004

[[rules]]
id = "d.surge"
kind = "surge"
universe = true
timeframe = "1d"
window = 1
min_return = 0.005
"""


def write_ticks(path: Path) -> int:
    rng = random.Random(11)
    rows = ["ts,symbol,price,size,id"]
    for symbol in SYMBOLS:
        price = 10.0
        for d, day in enumerate(DAYS):
            first = int(day.timestamp() * 1000)
            times = sorted(rng.sample(range(MINUTES * 60_000), 10 * MINUTES))
            for i, ms in enumerate(times):
                price *= 1 + rng.gauss(0.0004, 0.0015)
                ts = dt.datetime.fromtimestamp((first + ms) / 1000, dt.UTC).isoformat()
                rows.append(f"{ts},{symbol},{price:.4f},100,{symbol}-{d}-{i}")
    path.write_text("\n".join(rows) + "\n")
    return len(rows) - 1


async def test_a_backlog_across_two_closes_fires_replays_daily_and_minute_alerts_once(
    tmp_path: Path,
) -> None:
    """The last half hour of two sessions, the first three minutes taken in live, the rest
    published while the daemon is down and taken in at its start the second evening, ten
    messages a batch: the minute alerts and the daily ones (of the second session's bar over
    the first's) are replay's, each once, and no tick came late. (Without the close clock's
    hold, both sessions' bars closed cut short at the first batch: a daily alert of +1.8% where
    replay's says +8.7%.)"""
    prefix = f"mm-xclose-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    ticks = tmp_path / "ticks.csv"
    n = write_ticks(ticks)
    want = replayed(rules, ticks)
    assert {a.timeframe for a in want} == {"1m", "1d"}
    cut = DAYS[0] + dt.timedelta(minutes=3)
    live, backlog = split(ticks, cut)
    topic = f"{prefix}/ticks"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix, rules=rules, engine="batch_max_rows = 10")
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        try:
            clock = RunningClock(cut + dt.timedelta(seconds=5))
            async with daemon_running(conf, clock=clock) as daemon:
                publish(live, broker.port, topic)
                async with asyncio.timeout(30):
                    while daemon.engine.minutes.height < len(SYMBOLS) * 3:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            publish(backlog, broker.port, topic)
            later = RunningClock(DAYS[1] + dt.timedelta(minutes=MINUTES + 10))
            async with daemon_running(conf, clock=later) as daemon:
                async with asyncio.timeout(90):
                    while daemon.engine.daily.height < len(DAYS) * len(SYMBOLS):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert daemon.engine.book_counts() == {}
                assert daemon.counters.total("bar_events") == 0
                assert daemon.engine.daily.get_column("volume").sum() == 100.0 * n
            # (the daemon stopped: every alert it fired is on the stream, and no more)
            got = await stream_alerts(
                "redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(want) + 1, timeout_s=3
            )
            assert said(got) == said(want)
        finally:
            client = aioredis.Redis()
            await client.delete(f"{prefix}:alerts")
            await client.aclose()
