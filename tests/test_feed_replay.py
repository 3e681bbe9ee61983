"""`feed-replay` refusing what it cannot do, in one line and with the right exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.alerts.redis_server import free_port
from tests.conftest import RUT
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_commands import cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("topic", ["market/#", "market/+/bars", ""])
def test_a_topic_with_a_wildcard_is_a_usage_error(topic: str) -> None:
    """A topic to publish to with + or # (or none at all) exits 64 with one line saying why,
    before any file is read or broker reached."""
    res = cli("feed-replay", "--data", f"^RUT={RUT}", "--topic", topic)
    assert (res.returncode, res.stdout, res.stderr) == (
        64,
        "",
        f"market-monitor: usage error: --topic {topic!r}: a topic to publish to cannot be "
        "empty or contain + or # (wildcards are for subscribing)\n",
    )


def test_a_broker_that_refuses_the_connection_is_unavailable_not_a_config_error() -> None:
    """With nothing listening at --url, feed-replay exits 69 (service unavailable) with one
    line naming the broker, not 78 (the configuration is fine)."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    res = cli("feed-replay", "--data", f"^RUT={RUT}", "--from", "2024-07-01", "--url", url)
    assert (res.returncode, res.stdout, res.stderr) == (
        69,
        "",
        f"market-monitor: mqtt broker at {url}: [Errno 111] Connection refused\n",
    )


def test_a_broker_that_refuses_anonymous_clients_is_a_config_error(tmp_path: Path) -> None:
    """A broker that will not let feed-replay in (a user it does not know): trying again will
    not help, so exit 78 with one line naming the broker, never the password."""
    broker = MosquittoServer(tmp_path)
    text = broker.config.read_text()
    broker.config.write_text(text.replace("allow_anonymous true", "allow_anonymous false"))
    with broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        login = ["--username", "ops", "--password-env", "MM_TEST_FEED_PASSWORD"]
        res = cli(
            "feed-replay", "--data", f"^RUT={RUT}", "--from", "2024-07-01", "--url", url, *login,
            env={"MM_TEST_FEED_PASSWORD": "Sup3rSecret"},
        )  # fmt: skip
    assert (res.returncode, res.stdout) == (78, "")
    assert res.stderr.startswith(f"market-monitor: config error: mqtt broker at {url}: ")
    assert "Sup3rSecret" not in res.stderr
