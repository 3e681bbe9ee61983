"""An MQTT feed logs in to a broker that refuses anonymous clients, with its user name from
the config or from the environment (`username_env`)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import aiomqtt
import pytest
import redis.asyncio as aioredis

from monitor.cli import main
from tests.conftest import RUT
from tests.feeds.mosquitto_server import MosquittoServer
from tests.security.test_secrets import mosquitto_passwd
from tests.test_daemon_faults import rut_bars, stream_alerts
from tests.test_service import daemon_running, replay_alerts, write_config

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("by", ["username", "username_env"])
async def test_the_feed_logs_in_with_its_user_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    """With `username` (or `username_env` naming a variable) and `password_env`, the daemon's
    MQTT feed is let in by a broker with a password file, and the bars published there give
    replay's alerts on Redis. `username_env` used to be ignored: the feed connected anonymously
    and was refused for ever."""
    prefix = f"mm-login-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MM_TEST_MQTT_USER", "monitor")
    monkeypatch.setenv("MM_TEST_MQTT_PASSWORD", "s3cret-pw")
    passwd = mosquitto_passwd(tmp_path / "passwd", "monitor", "s3cret-pw")
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        broker.config.write_text(
            broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
            + f"password_file {passwd}\n"
        )
        broker.restart()
        user = 'username = "monitor"' if by == "username" else 'username_env = "MM_TEST_MQTT_USER"'
        conf = write_config(tmp_path, prefix)
        conf.write_text(
            conf.read_text()
            .replace("mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{broker.port}")
            .replace("qos = 1\n", f'qos = 1\n{user}\npassword_env = "MM_TEST_MQTT_PASSWORD"\n')
        )
        to = ["--to", "2024-07-09"]
        assert main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", *to]) == 0
        expected = replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
        async with daemon_running(conf):
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username="monitor", password="s3cret-pw"
            ) as client:
                for message in rut_bars("2024-07-10", "2024-07-16"):
                    await client.publish(f"{prefix}/bars", message, qos=1)
            got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", 3)
    assert got == expected
    client_r = aioredis.Redis()
    await client_r.delete(f"{prefix}:alerts")
    await client_r.aclose()
