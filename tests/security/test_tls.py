"""TLS to Mosquitto and Redis with a private CA: verified by default, refused without trust."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor import config as cfg
from monitor.core.model import Alert
from monitor.service import Daemon, run
from tests.security.daemon import (
    backfill,
    http_get,
    publish,
    rut_bars,
    stream_alerts,
    write_config,
)
from tests.security.pki import Pki
from tests.security.servers import TlsMosquitto, TlsRedisServer
from tests.test_service import replay_alerts, subscribed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture(scope="module")
def expected() -> list[Alert]:
    """What replay gives for ^RUT from 2024-07-10 to 2024-07-16: the 2024-07-16 alerts."""
    alerts = replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
    assert {a.session for a in alerts} == {"2024-07-16"}
    return alerts


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA with server certificates for 127.0.0.1/localhost and for another host."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[TlsMosquitto]:
    """Mosquitto with a TLS listener `good` (cert for 127.0.0.1) and `wrong` (another host)."""
    certs = {"good": pki.server("localhost", ip="127.0.0.1"), "wrong": pki.server("elsewhere")}
    with TlsMosquitto(tmp_path / "mosquitto", pki.ca, certs) as server:
        yield server


async def test_alerts_flow_over_tls_mqtt_and_tls_redis(
    tmp_path: Path, pki: Pki, broker: TlsMosquitto, expected: list[Alert]
) -> None:
    """^RUT bars for 2024-07-10..16 over mqtts:// reach the daemon, and the 2024-07-16 alerts
    reach the stream over rediss://, both verified against the private CA."""
    prefix = f"mm-tls-{uuid.uuid4().hex[:8]}"
    with TlsRedisServer(pki.ca, pki.server("localhost", ip="127.0.0.1")) as redis:
        conf = write_config(
            tmp_path,
            feeds=[
                {
                    "name": "tls",
                    "url": f"mqtts://127.0.0.1:{broker.tls_ports['good']}",
                    "topics": [f"{prefix}/#"],
                    "ca_file": str(pki.ca),
                }
            ],
            redis={"url": redis.url, "stream": f"{prefix}:alerts", "ca_file": str(pki.ca)},
        )
        backfill(conf)
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
        )
        try:
            daemon = await subscribed(ready)
            await publish(
                broker.tls_ports["good"],
                f"{prefix}/bars",
                rut_bars("2024-07-10", "2024-07-16"),
                ca=pki.ca,
            )
            got = await stream_alerts(
                redis.url, f"{prefix}:alerts", len(expected), ssl_ca_certs=str(pki.ca)
            )
            assert got == expected
            assert daemon.counters.get("feed_connects", feed="tls") == 1
            assert daemon.counters.get("redis_errors") == 0
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 20) == 0


@pytest.mark.parametrize("trust", ["no_ca_file", "cert_for_another_host"])
async def test_without_a_trusted_server_certificate_nothing_connects(
    tmp_path: Path, pki: Pki, broker: TlsMosquitto, expected: list[Alert], trust: str
) -> None:
    """With no CA file (so only the system CAs), or with a server certificate for another host,
    the MQTT feed never connects (failures logged and counted) and the alerts wait in the outbox;
    a feed that does trust the broker brings the bars in."""
    prefix = f"mm-untrusted-{uuid.uuid4().hex[:8]}"
    no_ca = trust == "no_ca_file"
    redis_cert = pki.server("localhost", ip="127.0.0.1") if no_ca else pki.server("elsewhere")
    untrusted: dict[str, Any] = {
        "name": "untrusted",
        "url": f"mqtts://127.0.0.1:{broker.tls_ports['good' if no_ca else 'wrong']}",
        "topics": [f"{prefix}/#"],
    }
    if not no_ca:
        untrusted["ca_file"] = str(pki.ca)
    with TlsRedisServer(pki.ca, redis_cert) as redis, capture_logs() as logs:
        redis_section = {"url": redis.url, "stream": f"{prefix}:alerts"}
        if not no_ca:
            redis_section["ca_file"] = str(pki.ca)
        conf = write_config(
            tmp_path,
            feeds=[
                {
                    "name": "trusted",
                    "url": f"mqtts://127.0.0.1:{broker.tls_ports['good']}",
                    "topics": [f"{prefix}/#"],
                    "ca_file": str(pki.ca),
                },
                untrusted,
            ],
            redis=redis_section,
            grace_s=0.5,
        )
        backfill(conf)
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
        )
        try:
            daemon = await subscribed(ready)
            await publish(
                broker.tls_ports["good"],
                f"{prefix}/bars",
                rut_bars("2024-07-10", "2024-07-16"),
                ca=pki.ca,
            )
            counters = daemon.counters
            async with asyncio.timeout(20):
                while (  # noqa: ASYNC110
                    counters.get("outbox_depth") < len(expected)
                    or counters.get("redis_errors") < 1
                    or counters.get("feed_reconnects", feed="untrusted") < 2
                ):
                    await asyncio.sleep(0.05)
            assert counters.get("feed_connects", feed="trusted") == 1
            assert counters.get("feed_connects", feed="untrusted") == 0
            assert counters.get("feed_connected", feed="untrusted") == 0
            assert counters.get("alerts_published") == 0
            port = int(counters.get("http_port"))
            health = json.loads(await asyncio.to_thread(http_get, port, "/healthz"))
            assert health["status"] == "degraded"
            assert health["reasons"] == [
                "feed untrusted disconnected",
                f"redis unavailable, {len(expected)} alerts waiting in the outbox",
            ]
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0
        admin = {"ssl_ca_certs": str(pki.ca), "ssl_check_hostname": False}
        assert await stream_alerts(redis.url, f"{prefix}:alerts", 1, timeout_s=0, **admin) == []

    why = "certificate verify failed"
    feed_errors = [
        e["error"]
        for e in logs
        if e["event"] == "feed_reconnecting" and e.get("feed") == "untrusted"
    ]
    assert feed_errors and all(why in error for error in feed_errors)
    assert not [e for e in logs if e["event"] == "feed_connected" and e["feed"] == "untrusted"]
    unavailable = [e for e in logs if e["event"] == "redis_unavailable"]
    assert len(unavailable) == 1 and why in unavailable[0]["error"]
    assert [e["depth"] for e in logs if e["event"] == "outbox_not_flushed"] == [len(expected)]
