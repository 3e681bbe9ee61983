"""Notifier throughput: alerts per second from the Redis stream to a local json:// webhook.

    .venv/bin/python bench/notify.py [--alerts 500]

Needs Redis on 127.0.0.1:6379. One message per alert (group_by = ["id"], no group wait), one
receiver; "with charts" renders a PNG per alert from real ^RUT closes and posts it base64.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from monitor import logs
from monitor.core.model import Alert, History, encode_alert
from monitor.datafiles import DataSpec, read_daily
from monitor.notify.config import parse
from monitor.notify.service import Notifier
from monitor.store import Store

ROOT = Path(__file__).resolve().parents[1]


async def serve(counter: list[int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(h.split(b":")[1])
                    for h in head.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                counter[0] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def alerts(n: int) -> list[Alert]:
    history = History(4, ["1998-10-20", "2000-01-20", "2009-09-10", "2020-04-28"], [], "4 earlier")
    return [
        Alert(
            id=f"bench-{i}",
            rule="streak.daily",
            kind="streak",
            symbol="^RUT",
            timeframe="1d",
            session="2024-07-16",
            ts="2024-07-16T20:00:00Z",
            severity="notice",
            title=f"Russell 2000 streak #{i}",
            text="Russell 2000 rose 5 sessions in a row.",
            metrics={},
            history=history,
        )
        for i in range(n)
    ]


async def one(n: int, charts: bool, bars: Path) -> float:
    stream = f"mm-bench-notify-{uuid.uuid4().hex[:8]}"
    counter = [0]
    server = await serve(counter)
    port = server.sockets[0].getsockname()[1]
    config = parse(
        {
            "redis": {"stream": stream, "start": "0", "consumer": "bench", "batch": 500},
            "receivers": [{"name": "hook", "url": f"json://127.0.0.1:{port}/hook"}],
            "route": {"receivers": ["hook"], "group_by": ["id"], "group_wait_s": 0},
            "charts": {"enabled": charts, "bars": str(bars)},
            "runaway": {"max_alerts": 1_000_000},  # one rule fires n times: do not throttle it
        },
        environ={},
    )
    client = aioredis.Redis()
    stop = asyncio.Event()
    async with Notifier(config, tick_s=0.005) as notifier:
        task = asyncio.create_task(notifier.run(stop))
        start = time.perf_counter()
        async with client.pipeline(transaction=False) as pipe:
            for a in alerts(n):
                pipe.xadd(stream, {"id": a.id, "alert": encode_alert(a)})
            await pipe.execute()
        while notifier.counters.total("notify_acked") < n:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        stop.set()
        await task
    keys = [k async for k in client.scan_iter(f"{stream}*")]
    await client.delete(*keys)
    await client.aclose()
    server.close()
    assert counter[0] == n, counter
    return n / elapsed


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--alerts", type=int, default=500)
    args = p.parse_args()
    logs.configure(level="warning", json=True)
    with tempfile.TemporaryDirectory() as tmp:
        bars = read_daily(
            DataSpec(str(ROOT / "monitor/demo/rut_index_daily_1987_2026.csv"), "^RUT"),
            end=dt.date(2024, 7, 31),
        ).bars
        Store(tmp).save_bars(bars)
        path = Path(tmp) / "bars_daily.parquet"
        print(f"{'case':<16}{'alerts':>8}{'alerts/s':>12}")
        for charts, n in ((False, args.alerts), (True, max(20, args.alerts // 5))):
            rate = await one(n, charts, path)
            print(f"{'with charts' if charts else 'without charts':<16}{n:>8}{rate:>12.1f}")


if __name__ == "__main__":
    asyncio.run(main())
