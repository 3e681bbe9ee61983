"""Floods and a soak: the whole universe through the real broker and Redis on a simulated clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from pathlib import Path

import aiomqtt
import polars as pl
import pytest
import redis.asyncio as aioredis

from monitor import config as cfg
from monitor.cli import main
from monitor.clock import SimClock
from monitor.core.model import DAILY_SCHEMA, FeedBatch
from monitor.core.rules.spec import parse_rules
from monitor.replay import build_engine
from monitor.service import Daemon, run
from tests.conftest import RULES
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_daemon_faults import stream_alerts
from tests.test_service import subscribed, write_config

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SYMBOLS = [f"S{i:04d}" for i in range(2000)]


def rss_mb() -> float:
    """This process's resident memory, MB (the daemon runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_flood_at_ten_times_the_rate_stays_bounded_and_is_caught_up(
    tmp_path: Path,
) -> None:
    """Two floods of 200,000 ticks for 2,000 symbols, as fast as the broker takes them: the
    engine queue never exceeds its bound, every tick is taken in (nothing shed), and memory does
    not grow from the first flood to the second."""
    prefix = f"mm-flood-{uuid.uuid4().hex[:8]}"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix, engine="queue_size = 200")
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        clock = SimClock(dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC))
        t0 = int(clock.now().timestamp() * 1000)
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(
                cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append
            )
        )
        try:
            daemon = await subscribed(ready)
            depth: list[int] = []
            rss: list[float] = []
            for flood in range(2):
                rng = random.Random(flood)
                # Trades of 20 seconds, the clock at their end (none from the future).
                clock.set(clock.now().replace(minute=5 * flood, second=20))
                messages = [
                    json.dumps(
                        [
                            {"symbol": SYMBOLS[(m * 100 + k) % 2000],
                             "ts": t0 + flood * 300_000 + (m * 100 + k) // 10,
                             "price": round(10 + rng.random(), 2), "size": 100,
                             "id": f"{flood}-{m}-{k}"}
                            for k in range(100)
                        ]
                    ).encode()
                    for m in range(2000)
                ]  # fmt: skip
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    sender = asyncio.create_task(_send(client, f"{prefix}/t", messages))
                    while (
                        not sender.done()
                        or daemon.counters.total("ticks_in") < (flood + 1) * 200_000
                    ):
                        depth.append(daemon.queue.qsize())
                        await asyncio.sleep(0.02)
                    await sender
                rss.append(rss_mb())
            assert max(depth) <= 200
            assert daemon.counters.total("ticks_in") == 400_000
            assert daemon.counters.total("rejections") == 0
            assert rss[1] < rss[0] * 1.10, rss
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0


async def _send(client: aiomqtt.Client, topic: str, messages: list[bytes]) -> None:
    for m in messages:
        await client.publish(topic, m, qos=0)


SOAK_RULES = b"""
[[rules]]
id = "streak.soak"
kind = "streak"
universe = true
count = 3
min_return = 0.004
[[rules]]
id = "surge.soak"
kind = "surge"
universe = true
window = 3
min_return = 0.04
[[rules]]
id = "breadth.soak"
kind = "breadth"
universe = true
window = 2
min_share = 0.55
[[rules]]
id = "movers.soak"
kind = "movers"
universe = true
window = 3
top = 5
min_return = 0.03
"""


def soak_history(sessions: list[dt.date], rng: random.Random) -> pl.DataFrame:
    """Random-walk daily bars for the universe over `sessions`."""
    rows: dict[str, list[object]] = {k: [] for k in DAILY_SCHEMA}
    for sym in SYMBOLS:
        price = 20.0
        for day in sessions:
            price *= 1 + rng.gauss(0.0005, 0.02)
            for k, v in zip(
                DAILY_SCHEMA, (sym, day, price, price * 1.01, price * 0.99, price, 1e6), strict=True
            ):
                rows[k].append(v)
    return pl.DataFrame(rows, schema=DAILY_SCHEMA)


async def test_a_simulated_week_of_the_universe_matches_replay(tmp_path: Path) -> None:
    """A week of minute bars for 2,000 symbols goes through the real broker and Redis on an
    accelerated clock: the alerts on the stream equal what the engine gives for the same bars in
    one batch (ids included), with queue depth bounded and memory flat through the week."""
    from monitor.calendar import nyse_sessions

    prefix = f"mm-soak-{uuid.uuid4().hex[:8]}"
    (tmp_path / "soak_rules.toml").write_bytes(SOAK_RULES)
    conf = write_config(tmp_path, prefix)
    conf.write_text(
        conf.read_text().replace(
            f'file = "{RULES}"',
            'file = "soak_rules.toml"',
        )
    )
    calendar = nyse_sessions(dt.date(2024, 1, 1))
    days = (
        calendar.between(dt.date(2024, 5, 15), dt.date(2024, 7, 19)).get_column("session").to_list()
    )
    history_days, week = days[:-5], days[-5:]
    rng = random.Random(11)
    history = soak_history(history_days, rng)
    history.write_parquet(tmp_path / "history.parquet")
    assert (
        main(["backfill", "--config", str(conf), "--data", str(tmp_path / "history.parquet")]) == 0
    )

    last = history.group_by("symbol").agg(pl.col("close").last()).rows()
    price = dict(last)
    minutes: list[pl.DataFrame] = []
    for day in week:
        opened = calendar.open_of(day)
        cols: dict[str, list[object]] = {
            k: [] for k in ("symbol", "start", "open", "high", "low", "close", "volume")
        }
        for sym in SYMBOLS:
            drift = rng.gauss(0.001, 0.012)
            for m in range(6):
                p0 = price[sym]
                p1 = p0 * (1 + drift / 6 + rng.gauss(0, 0.001))
                price[sym] = p1
                for k, v in zip(
                    cols,
                    (
                        sym,
                        opened + dt.timedelta(minutes=m),
                        p0,
                        max(p0, p1),
                        min(p0, p1),
                        p1,
                        1000.0,
                    ),
                    strict=True,
                ):
                    cols[k].append(v)
        minutes.append(pl.DataFrame(cols).with_columns(pl.col("start").dt.cast_time_unit("us")))

    rules = parse_rules(SOAK_RULES)
    oracle = build_engine(rules, calendar)
    oracle.ingest_daily(history)
    oracle.warm(calendar.close_of(history_days[-1]))
    batch = FeedBatch.empty("oracle")
    batch.minute_bars = pl.concat(minutes)
    oracle.ingest(batch)
    expected = oracle.advance(calendar.close_of(week[-1]) + dt.timedelta(seconds=10)).alerts
    assert len(expected) > 20

    clock = SimClock(calendar.close_of(history_days[-1]))
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append)
    )
    try:
        daemon = await subscribed(ready)
        rss: list[float] = []
        depth = sent = 0
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            for day, bars in zip(week, minutes, strict=True):
                clock.set(calendar.open_of(day) + dt.timedelta(minutes=7))
                rows = [
                    {"symbol": s, "timeframe": "1m", "start": int(t.timestamp() * 1000), "open": o,
                     "high": h, "low": lo, "close": c, "volume": v}
                    for s, t, o, h, lo, c, v in bars.iter_rows()
                ]  # fmt: skip
                for i in range(0, len(rows), 200):
                    await client.publish(
                        f"{prefix}/bars", json.dumps(rows[i : i + 200]).encode(), qos=1
                    )
                sent += len(rows)
                async with asyncio.timeout(60):  # every minute bar in before the close
                    while daemon.counters.get("bars_in", timeframe="1m") < sent:
                        depth = max(depth, daemon.queue.qsize())
                        await asyncio.sleep(0.02)
                before = daemon.counters.get("bars_closed", timeframe="1d")
                clock.set(calendar.close_of(day) + dt.timedelta(seconds=10))
                async with asyncio.timeout(60):
                    while daemon.counters.get("bars_closed", timeframe="1d") < before + len(
                        SYMBOLS
                    ):
                        depth = max(depth, daemon.queue.qsize())
                        await asyncio.sleep(0.05)
                rss.append(rss_mb())
        got = await stream_alerts(
            "redis://127.0.0.1:6379/0", f"{prefix}:alerts", len(expected), timeout_s=30
        )
        assert [a.id for a in got] == [a.id for a in expected]
        assert got == expected
        assert daemon.counters.total("rejections") == 0
        assert depth <= daemon.config.engine.queue_size
        assert rss[-1] < rss[1] * 1.15, rss
        print(  # the soak's figures, shown with `pytest -s`
            f"soak: {sent:,} minute bars of {len(SYMBOLS):,} symbols over {len(week)} sessions, "
            f"{len(got)} alerts equal to replay's; RSS MB per session {[round(r) for r in rss]}; "
            f"max queue depth {depth}"
        )
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0
        r = aioredis.Redis()
        await r.delete(f"{prefix}:alerts")
        await r.aclose()
