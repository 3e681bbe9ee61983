"""`market-monitor feed-replay`: publish daily bars from a history file to MQTT, as a data
provider would, at a chosen rate. For demos, tests and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit

import msgspec
import polars as pl

from monitor.datafiles import parse_data_arg, read_many
from monitor.errors import ConfigError


class WireBar(msgspec.Struct):
    """The generic bar message of the MQTT feed."""

    symbol: str
    timeframe: str
    session: str
    open: float
    high: float
    low: float
    close: float
    volume: float | None


def bar_messages(bars: pl.DataFrame) -> list[bytes]:
    """One JSON message per daily bar, in session order."""
    enc = msgspec.json.Encoder()
    out = []
    for row in bars.sort("session", "symbol").iter_rows(named=True):
        out.append(
            enc.encode(
                WireBar(
                    symbol=row["symbol"],
                    timeframe="1d",
                    session=row["session"].isoformat(),
                    open=row["open"],
                    high=row["high"],
                    low=row["low"],
                    close=row["close"],
                    volume=row["volume"],
                )
            )
        )
    return out


def feed_replay(args: argparse.Namespace) -> int:
    """Entry point of the `feed-replay` command."""
    loaded = read_many(
        [parse_data_arg(a) for a in args.data],
        adjusted=args.adjusted,
        start=args.start,
        end=args.end,
    )
    messages = bar_messages(loaded.bars)
    asyncio.run(publish(args.url, args.topic, messages, qos=args.qos, rate=args.rate))
    print(f"published {len(messages)} bars to {args.topic}", file=sys.stderr)
    return 0


async def publish(url: str, topic: str, messages: list[bytes], *, qos: int, rate: float) -> None:
    """Publish `messages` in order, at most `rate` per second (0 = as fast as possible)."""
    import aiomqtt

    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"--url: expected mqtt://host[:port], got {url!r}")
    try:
        async with aiomqtt.Client(parts.hostname, parts.port or 1883) as client:
            gap = 1.0 / rate if rate > 0 else 0.0
            for message in messages:
                await client.publish(topic, message, qos=qos)
                if gap:
                    await asyncio.sleep(gap)
    except aiomqtt.MqttError as exc:
        raise ConfigError(f"--url {url}: {exc}") from None
