"""TLS to Mosquitto and Redis with a private CA: verified by default, refused without trust."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor import config as cfg
from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import RedisPublisher
from monitor.core.payload import feed_health_alert
from monitor.service import Daemon, run
from tests.security.daemon import (
    ALERTS_0716,
    backfill,
    http_get,
    publish,
    rut_bars,
    stream_alerts,
    summary,
    write_config,
)
from tests.security.pki import Pki
from tests.security.servers import TlsMosquitto, TlsRedisServer
from tests.test_service import daemon_running, subscribed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FEEDS = ("trusted", "no-ca", "other-host")
NOT_TRUSTED = "certificate verify failed: self-signed certificate in certificate chain"
WRONG_HOST = "certificate verify failed: IP address mismatch"


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
    tmp_path: Path, pki: Pki, broker: TlsMosquitto
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
        async with daemon_running(conf, stop_timeout_s=20) as daemon:
            await publish(
                broker.tls_ports["good"],
                f"{prefix}/bars",
                rut_bars("2024-07-10", "2024-07-16"),
                ca=pki.ca,
            )
            got = await stream_alerts(
                redis.url, f"{prefix}:alerts", len(ALERTS_0716), ssl_ca_certs=str(pki.ca)
            )
            assert summary(got) == ALERTS_0716
            assert daemon.counters.get("feed_connects", feed="tls") == 1
            assert daemon.counters.get("redis_errors") == 0


async def test_without_a_trusted_server_certificate_nothing_connects(
    tmp_path: Path, pki: Pki, broker: TlsMosquitto
) -> None:
    """Verification is on by default: a feed with no CA file (so only the system CAs) and a feed
    whose broker shows a certificate for another host never connect (failures logged and counted),
    and with no CA file for Redis the alerts wait in the outbox; a trusting feed brings bars in."""
    prefix = f"mm-untrusted-{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}/#"]
    good = f"mqtts://127.0.0.1:{broker.tls_ports['good']}"
    with TlsRedisServer(pki.ca, pki.server("localhost", ip="127.0.0.1")) as redis:
        conf = write_config(
            tmp_path,
            feeds=[
                {"name": "trusted", "url": good, "topics": topics, "ca_file": str(pki.ca)},
                {"name": "no-ca", "url": good, "topics": topics},
                {
                    "name": "other-host",
                    "url": f"mqtts://127.0.0.1:{broker.tls_ports['wrong']}",
                    "topics": topics,
                    "ca_file": str(pki.ca),
                },
            ],
            redis={"url": redis.url, "stream": f"{prefix}:alerts"},
            grace_s=0.5,
        )
        backfill(conf)
        stop = asyncio.Event()
        ready: list[Daemon] = []
        with capture_logs() as logs:
            task = asyncio.create_task(
                run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
            )
            try:
                daemon = await subscribed(ready)
                bars = rut_bars("2024-07-10", "2024-07-16")
                await publish(broker.tls_ports["good"], f"{prefix}/bars", bars, ca=pki.ca)
                counters = daemon.counters
                async with asyncio.timeout(20):
                    while (  # noqa: ASYNC110
                        counters.get("outbox_depth") < len(ALERTS_0716)
                        or counters.get("redis_errors") < 1
                        or counters.get("feed_reconnects", feed="no-ca") < 2
                        or counters.get("feed_reconnects", feed="other-host") < 2
                    ):
                        await asyncio.sleep(0.05)
                connects = {f: counters.get("feed_connects", feed=f) for f in FEEDS}
                assert connects == {"trusted": 1, "no-ca": 0, "other-host": 0}
                assert counters.get("alerts_published") == 0
                port = int(counters.get("http_port"))
                health = json.loads(await asyncio.to_thread(http_get, port, "/healthz"))
                assert health["status"] == "degraded"
                # (each with why: the broker's certificate refused, for want of its CA or
                # for another host's name; Redis's, refused too)
                no_ca, other_host, redis_reason = health["reasons"]
                assert no_ca.startswith("feed no-ca disconnected: [SSL: CERTIFICATE_VERIFY_FAILED]")
                assert other_host.startswith("feed other-host disconnected: ")
                assert "CERTIFICATE_VERIFY_FAILED" in other_host or "match" in other_host
                assert redis_reason.startswith("redis unavailable (")
                assert redis_reason.endswith(f"), {len(ALERTS_0716)} alerts waiting in the outbox")
            finally:
                stop.set()
                assert await asyncio.wait_for(task, 30) == 0
        tls = {"ssl_ca_certs": str(pki.ca)}
        assert await stream_alerts(redis.url, f"{prefix}:alerts", 1, timeout_s=0, **tls) == []

    errors = {
        f: {e["error"] for e in logs if e["event"] == "feed_reconnecting" and e["feed"] == f}
        for f in FEEDS
    }
    assert errors["trusted"] == set()
    assert errors["no-ca"] and all(NOT_TRUSTED in error for error in errors["no-ca"])
    assert errors["other-host"] and all(WRONG_HOST in error for error in errors["other-host"])
    connected = [e["feed"] for e in logs if e["event"] == "feed_connected"]
    assert connected == ["trusted"]
    unavailable = [e["error"] for e in logs if e["event"] == "redis_unavailable"]
    assert len(unavailable) == 1 and NOT_TRUSTED in unavailable[0]
    assert [e["depth"] for e in logs if e["event"] == "outbox_not_flushed"] == [len(ALERTS_0716)]


async def test_redis_with_a_certificate_for_another_host_gets_no_alerts(
    tmp_path: Path, pki: Pki
) -> None:
    """A rediss:// server whose certificate, signed by the trusted CA, names another host is
    refused: the alert stays in the outbox and `redis_unavailable` says why."""
    alert = feed_health_alert(
        "feed_stale", "probe", dt.datetime(2024, 7, 16, 15, tzinfo=dt.UTC), 60.0
    )
    with (
        TlsRedisServer(pki.ca, pki.server("elsewhere")) as redis,
        Outbox(tmp_path / "outbox.sqlite") as outbox,
        capture_logs() as logs,
    ):
        async with RedisPublisher(
            redis.url, "mm-tls", "mm-tls", outbox, ssl_ca_certs=str(pki.ca), timeout_s=2.0
        ) as publisher:
            assert publisher.submit([alert]) == 1
            assert await publisher.flush(1.0) is False
        assert outbox.depth() == 1
    unavailable = [e["error"] for e in logs if e["event"] == "redis_unavailable"]
    assert len(unavailable) == 1 and WRONG_HOST in unavailable[0]
