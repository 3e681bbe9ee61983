"""Secrets never show: not in logs, reprs, metrics or health, not even while Redis is down."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor import config as cfg
from monitor import credentials
from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import RedisPublisher
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.feeds.mqtt import MqttFeed
from tests.alerts.redis_server import RedisServer
from tests.cli_here import cli_here
from tests.conftest import ROOT
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
from tests.security.servers import TlsMosquitto

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


class Daemon:
    """`python -m monitor run --config conf` as a child process, its output in files."""

    def __init__(self, conf: Path, env: dict[str, str]) -> None:
        self.out = conf.parent / "daemon.stdout"
        self.err = conf.parent / "daemon.stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(conf)],
                cwd=ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )

    def events(self) -> list[dict[str, object]]:
        """The JSON log lines written so far."""
        lines = self.err.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for(self, event: str, timeout_s: float = 30.0) -> dict[str, object]:
        """The first log line with `event`, once it is there."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.events():
                if line["event"] == event:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} in: {self.err.read_text()[-3000:]}")

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL if still running (clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def daemon(conf: Path, env: dict[str, str]) -> Iterator[Daemon]:
    """A running daemon child process, killed on the way out if a test failed."""
    child = Daemon(conf, env)
    try:
        yield child
    finally:
        child.kill()


def mosquitto_passwd(path: Path, user: str, password: str) -> Path:
    """A Mosquitto password file with one user."""
    command = ["mosquitto_passwd", "-c", "-b", str(path), user, password]
    subprocess.run(command, check=True, capture_output=True, timeout=10)
    return path


async def test_secrets_never_appear_in_logs_metrics_or_health(tmp_path: Path) -> None:
    """With a Redis password from the environment and an MQTT password from a file, debug logs,
    /metrics and /healthz through alerts flowing, a Redis outage and a broker outage never
    contain either password."""
    prefix = f"mm-secret-{uuid.uuid4().hex[:8]}"
    redis_secret = f"redis-{secrets.token_urlsafe(24)}"
    mqtt_secret = f"mqtt-{secrets.token_urlsafe(24)}"
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "mqtt").write_text(mqtt_secret + "\n")
    (credentials / "mqtt").chmod(0o600)
    passwd = mosquitto_passwd(tmp_path / "mosquitto.passwd", "monitor", mqtt_secret)
    pki = Pki(tmp_path / "pki")
    cert = pki.server("localhost", ip="127.0.0.1")
    with (
        RedisServer(None, "--requirepass", redis_secret) as redis,
        TlsMosquitto(tmp_path / "mosquitto", pki.ca, {"tls": cert}, password_file=passwd) as mq,
    ):
        port = mq.tls_ports["tls"]
        conf = write_config(
            tmp_path,
            feeds=[
                {
                    "name": "broker",
                    "url": f"mqtts://127.0.0.1:{port}",
                    "topics": [f"{prefix}/#"],
                    "ca_file": str(pki.ca),
                    "username": "monitor",
                    "password_file": str(credentials / "mqtt"),
                }
            ],
            redis={"url": redis.url, "stream": f"{prefix}:alerts", "password_env": "MM_REDIS"},
            grace_s=1.0,
        )
        with conf.open("a") as f:
            f.write('[log]\nlevel = "debug"\njson = true\n')
        backfill(conf)
        auth = {"username": "monitor", "password": mqtt_secret, "ca": pki.ca}
        texts: list[str] = []
        with daemon(conf, {"MM_REDIS": redis_secret}) as child:
            http = int(str(child.wait_for("service_ready")["port"]))
            child.wait_for("feed_subscribed")
            await publish(port, f"{prefix}/bars", rut_bars("2024-07-10", "2024-07-16"), **auth)
            got = await stream_alerts(redis.url, f"{prefix}:alerts", 3, password=redis_secret)
            assert summary(got) == ALERTS_0716

            async def scrape() -> None:
                for path in ("/metrics", "/healthz"):
                    texts.append(await asyncio.to_thread(http_get, http, path))

            await scrape()
            redis.kill()
            await publish(port, f"{prefix}/bars", rut_bars("2024-07-17", "2024-11-15"), **auth)
            child.wait_for("redis_unavailable")
            child.wait_for("outbox_waiting")
            child.wait_for("redis_retry")
            await scrape()
            assert "redis unavailable" in texts[-1]
            redis.start()
            child.wait_for("redis_recovered")
            mq.kill()
            child.wait_for("feed_reconnecting")
            await scrape()
            assert child.terminate() == 0
        texts += [child.out.read_text(), child.err.read_text()]
        check = await asyncio.to_thread(
            cli_here, "config", "check", "--config", str(conf), env={"MM_REDIS": redis_secret}
        )
        assert check.returncode == 0, check.stderr
        texts += [check.stdout, check.stderr]

    events = {str(e["event"]) for e in child.events()}
    fired = {"redis_unavailable", "redis_retry", "redis_recovered", "feed_reconnecting"}
    assert fired <= events
    everything = "\n".join(texts)
    assert "redis_errors" in everything  # the metrics were scraped
    assert redis_secret not in everything
    assert mqtt_secret not in everything


async def test_reprs_and_masked_config_hide_passwords(tmp_path: Path) -> None:
    """The publisher and feed reprs, the publisher's log URL, a `Secret` and the masked config
    show no password, whether it came in the URL or as a resolved secret."""
    secret = secrets.token_hex(12)
    resolved = credentials.Secret(secret)
    conf = write_config(
        tmp_path,
        feeds=[{"name": "b", "url": "mqtts://127.0.0.1:8883", "topics": ["t/#"]}],
        redis={"url": f"rediss://monitor:{secret}@127.0.0.1:6380/0"},
    )
    config = cfg.load(conf)
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        publisher = RedisPublisher(config.redis.url, "c", "s", outbox)
        other = RedisPublisher("rediss://127.0.0.1/0", "c", "s", outbox, password=resolved)
    feed = MqttFeed(
        "b",
        "mqtts://127.0.0.1:8883",
        ["t/#"],
        queue=asyncio.Queue(),
        counters=Counters(),
        backoff=Backoff(),
        username="monitor",
        password=resolved,
    )
    shown = [
        repr(publisher),
        publisher.url,
        repr(other),
        repr(feed),
        repr(resolved),
        f"{resolved!r}",
        json.dumps(cfg.masked(config)),
    ]
    assert all(secret not in text for text in shown), shown
    assert publisher.url == "rediss://monitor:***@127.0.0.1:6380/0"


async def test_a_credential_file_readable_by_others_draws_a_warning(tmp_path: Path) -> None:
    """`market-monitor run` with a credential file of mode 644 logs
    `credential_readable_by_others` naming the file (not its content), runs, and exits 0 on
    SIGTERM."""
    secret = secrets.token_hex(12)
    password_file = tmp_path / "redis-password"
    password_file.write_text(secret)
    password_file.chmod(0o644)
    with RedisServer(None, "--requirepass", secret) as redis:
        conf = write_config(
            tmp_path, feeds=[], redis={"url": redis.url, "password_file": str(password_file)}
        )
        with daemon(conf, {}) as child:
            warning = child.wait_for("credential_readable_by_others")
            child.wait_for("service_ready")
            assert child.terminate() == 0
    assert warning["path"] == str(password_file)
    assert warning["level"] == "warning"
    assert warning["fix"] == f"chmod go-rwx {password_file}"
    assert "config_writable_by_others" not in {e["event"] for e in child.events()}
    assert secret not in child.err.read_text() + child.out.read_text()
