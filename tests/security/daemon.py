"""Helpers for running the daemon against private (TLS, ACL, password) servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import redis.asyncio as aioredis

from monitor.cli import main
from monitor.core.model import Alert, decode_alert
from monitor.datafiles import DataSpec, read_daily
from monitor.feed_replay import bar_messages
from tests.conftest import RULES, RUT

# What `market-monitor replay` gives for ^RUT over 2024-07-10..16 after history to 2024-07-09
# (tests/test_service.py checks the daemon against replay itself; here the rule ids suffice).
ALERTS_0716 = [
    ("drawdown.high", "^RUT", "2024-07-16"),
    ("streak.daily", "^RUT", "2024-07-16"),
    ("surge.5d", "^RUT", "2024-07-16"),
]


def summary(alerts: list[Alert]) -> list[tuple[str, str, str]]:
    """(rule, symbol, session) of each alert, sorted."""
    return sorted((a.rule, a.symbol, a.session) for a in alerts)


def toml_table(name: str, values: dict[str, Any], *, array: bool = False) -> str:
    """`[name]` (or `[[name]]`) with string, number, bool and list values."""
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head, *(f"{k} = {json.dumps(v)}" for k, v in values.items())]) + "\n"


def write_config(
    tmp: Path,
    *,
    feeds: list[dict[str, Any]],
    redis: dict[str, Any],
    grace_s: float = 10.0,
    name: str = "monitor.toml",
) -> Path:
    """A daemon config with its own store, the shipped rules, HTTP on a free port."""
    path = tmp / name
    parts = [
        toml_table("store", {"path": str(tmp / "store")}),
        *(toml_table("feeds", {"kind": "mqtt", "qos": 1, **f}, array=True) for f in feeds),
        toml_table("redis", redis),
        toml_table("rules", {"file": str(RULES)}),
        toml_table("http", {"port": 0}),
        toml_table("engine", {"batch_max_age_ms": 20}),
        toml_table("shutdown", {"grace_s": grace_s}),
    ]
    path.write_text("\n".join(parts))
    path.chmod(0o600)
    return path


def backfill(conf: Path, to: str = "2024-07-09") -> None:
    """^RUT history up to `to` into the daemon's store."""
    assert main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", to]) == 0


def rut_bars(first: str, last: str) -> list[bytes]:
    """^RUT daily bars between two sessions as generic MQTT bar messages."""
    bars = read_daily(
        DataSpec(path=str(RUT), symbol="^RUT"),
        start=dt.date.fromisoformat(first),
        end=dt.date.fromisoformat(last),
    ).bars
    return bar_messages(bars)


async def publish(
    port: int,
    topic: str,
    messages: list[bytes],
    *,
    ca: Path | None = None,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Publish messages in order (QoS 1) on a loopback broker, over TLS when `ca` is given."""
    tls = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    async with aiomqtt.Client(
        "127.0.0.1", port, tls_context=tls, username=username, password=password
    ) as client:
        for m in messages:
            await client.publish(topic, m, qos=1)


def http_get(port: int, path: str) -> str:
    """The body of GET http://127.0.0.1:port/path, whatever the status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    return body.decode()


async def stream_alerts(
    url: str, stream: str, want: int, timeout_s: float = 20.0, **client: Any
) -> list[Alert]:
    """The stream's alerts once there are `want` (or what is there at the timeout)."""
    redis = aioredis.Redis.from_url(url, **client)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            entries = await redis.xrange(stream)
            if len(entries) >= want or loop.time() > deadline:
                return [decode_alert(f[b"alert"]) for _, f in entries]
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
