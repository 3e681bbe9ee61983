"""The whole daemon over a real Mosquitto on an early close (2024-11-29, the day after
Thanksgiving: 13:00 New York), stopped at noon and started again after the close, the broker's
backlog of the afternoon taken in at the start: its session bar and its alerts are replay's."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt
import msgspec
import polars as pl
import pytest
import redis.asyncio as aioredis

from monitor.clock import SimClock
from monitor.core.model import Alert, Tick
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_backlog_catch_up import said
from tests.test_daemon_faults import stream_alerts
from tests.test_service import daemon_running, write_config

pytestmark = pytest.mark.integration

OPEN = dt.datetime(2024, 11, 29, 14, 30, tzinfo=dt.UTC)  # 09:30 New York
CLOSE = dt.datetime(2024, 11, 29, 18, 0, tzinfo=dt.UTC)  # 13:00 New York, an early close
NOON = dt.datetime(2024, 11, 29, 17, 0, tzinfo=dt.UTC)
SYMBOLS = ("AAA", "BBB")
RULES = """
[[rules]]
id = "d.surge"
kind = "surge"
universe = true
timeframe = "1d"
window = 1
min_return = 0.04

[[rules]]
id = "m.surge"
kind = "surge"
universe = true
timeframe = "1m"
window = 1
min_return = 0.004
"""


def trades() -> list[Tick]:
    """Each symbol's trades of the session, a minute apart and each a little up or down, to
    10.10 at 12:59:30; the closing print (13:00:00.4) at 10.50, and a trade after the close.
    Up 5% on Wednesday's 10.00 only with the closing print."""
    rows: list[tuple[dt.datetime, str, float]] = []
    for n, symbol in enumerate(SYMBOLS):
        for minute in range(210):
            price = 10.0 + (0.06 if (minute + n) % 7 == 0 else 0.0) + minute / 21000
            rows.append((OPEN + dt.timedelta(minutes=minute, seconds=20 + n), symbol, price))
        rows.append((CLOSE - dt.timedelta(seconds=30), symbol, 10.1))
        rows.append((CLOSE + dt.timedelta(milliseconds=400), symbol, 10.5))
        rows.append((CLOSE + dt.timedelta(seconds=30), symbol, 12.0))
    rows.sort()
    return [Tick(s, ts, round(p, 4), 100.0, f"{s}-{i}") for i, (ts, s, p) in enumerate(rows)]


def message(tick: Tick) -> str:
    """The MQTT feed's tick message of a trade."""
    return json.dumps({**msgspec.to_builtins(tick), "ts": tick.ts.isoformat()})


def replayed(rules: Path, *data: Path) -> list[Alert]:
    """What `market-monitor replay` prints over the files."""
    args = [a for path in data for a in ("--data", str(path))]
    res = subprocess.run(
        [sys.executable, "-m", "monitor", "replay", "--rules", str(rules), *args],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [msgspec.json.decode(line, type=Alert) for line in res.stdout.splitlines()]


def session_bars(daemon_daily: pl.DataFrame) -> list[tuple[object, ...]]:
    """The daemon's session bars of the early close: symbol and close."""
    bars = daemon_daily.filter(pl.col("session") == CLOSE.date()).sort("symbol")
    return bars.select("symbol", "close").rows()


def write_history(tmp_path: Path, rows: list[Tick]) -> tuple[Path, Path]:
    """Wednesday's daily bars (closes 10.00) and the session's trades, as replay reads them."""
    daily = tmp_path / "daily.csv"
    daily.write_text(
        "date,symbol,open,high,low,close,volume\n"
        + "".join(f"2024-11-27,{s},10.0,10.0,10.0,10.0,1000\n" for s in SYMBOLS)
    )
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(
        "ts,symbol,price,size,id\n"
        + "".join(f"{t.ts.isoformat()},{t.symbol},{t.price},100,{t.id}\n" for t in rows)
    )
    return daily, ticks


async def test_a_restart_after_an_early_close_takes_the_afternoon_whole(tmp_path: Path) -> None:
    """Trades live to noon (minute by minute on a simulated clock), the daemon stopped, the
    afternoon's (the closing print and a trade after the close among them) published while it
    is down, and the daemon started again at 13:30, after the 13:00 close: the backlog comes in
    one batch, the session bar closes on the closing print and the daily surge fires, the minute
    alerts are replay's, and no tick is late (the backlog's ticks past the saved clock waited
    for the first step, which judged them by the close clock it moved to the end of its batch:
    16 of them thrown away as `late_tick`, two minute alerts lost and another's metrics wrong)."""
    prefix = f"mm-early-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    rows = trades()
    daily, ticks = write_history(tmp_path, rows)
    want = replayed(rules, daily, ticks)
    assert {a.rule for a in want} == {"d.surge", "m.surge"}
    topic = f"{prefix}/ticks"
    morning = [t for t in rows if t.ts < NOON]
    afternoon = rows[len(morning) :]
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix, rules=rules, engine='late_ticks = "reject"')
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                clock = SimClock(OPEN - dt.timedelta(minutes=1))
                async with daemon_running(conf, clock=clock) as daemon:
                    history = [
                        {"symbol": s, "timeframe": "1d", "session": "2024-11-27", "open": 10.0,
                         "high": 10.0, "low": 10.0, "close": 10.0, "volume": 1000.0}
                        for s in SYMBOLS
                    ]  # fmt: skip
                    await client.publish(topic, json.dumps(history), qos=1)
                    for taken, tick in enumerate(morning, 1):  # (live: the clock at each)
                        clock.set(tick.ts)
                        await client.publish(topic, message(tick), qos=1)
                        async with asyncio.timeout(20):
                            while daemon.counters.total("ticks_in") < taken:  # noqa: ASYNC110
                                await asyncio.sleep(0.005)
                    clock.set(NOON)
                for tick in afternoon:  # (the broker keeps them for the daemon's session)
                    await client.publish(topic, message(tick), qos=1)
            later = SimClock(CLOSE + dt.timedelta(minutes=30))
            async with daemon_running(conf, clock=later) as daemon:
                async with asyncio.timeout(30):
                    while daemon.counters.total("ticks_in") < len(afternoon):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert daemon.engine.book_counts() == {"outside_session": len(SYMBOLS)}
                assert session_bars(daemon.engine.daily) == [(s, 10.5) for s in SYMBOLS]
            got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(want))
            assert said(got) == said(want)
        finally:
            redis = aioredis.Redis()
            await redis.delete(f"{prefix}:alerts")
            await redis.aclose()
