"""A password or token in a URL's query string (`?password=`, which redis-py reads as the login's
password; `?token=` on a provider's stream URL) never shows: not in the daemon's log, `config
check` in either format, the notifier's or tail's errors."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import RedisPublisher
from monitor.config_check import config_check
from monitor.core.counters import Counters
from tests.alerts.redis_server import RedisServer
from tests.cli_here import cli_here
from tests.conftest import RULES

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PASSWORD = "RedisPW_7f3a9"
WRONG = "WrongRedis_55"


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `condition()` holds (TimeoutError after `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_the_daemon_logs_a_redis_url_with_its_query_password_masked(tmp_path: Path) -> None:
    """`[redis] url = "redis://host:port/0?password=..."`: the publisher logs in with it, and
    its `redis_reachable` line shows the URL with `password=***` (it showed the password)."""
    counters = Counters()
    with (
        RedisServer(None, "--requirepass", PASSWORD) as server,
        capture_logs() as logs,
        Outbox(tmp_path / "outbox.db") as outbox,
    ):
        url = f"{server.url}?password={PASSWORD}"
        async with RedisPublisher(url, "c", "s", outbox, counters=counters) as pub:
            stop = asyncio.Event()
            task = asyncio.create_task(pub.watch(stop), name="redis-check")
            await until(lambda: counters.get("redis_available") == 1)
            stop.set()
            await asyncio.wait_for(task, 5)
    reachable = [e for e in logs if e["event"] == "redis_reachable"]
    assert [e["url"] for e in reachable] == [f"{server.url}?password=***"]
    assert PASSWORD not in repr(logs)


def test_config_check_masks_query_secrets_of_every_url_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis URL's `?password=`, a feed URL's `?token=` and a `rest_url`'s password are
    masked in `config check`'s TOML and JSON output alike (the last two were printed)."""
    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:6379/0?password={PASSWORD}"\n'
        '[[feeds]]\nkind = "websocket"\nurl = "wss://stream.example/v1?token=FinTok_777"\n'
        'provider = "finnhub"\nsymbols = ["IWM"]\nkey_env = "MM_TEST_KEY"\n'
        '[[feeds]]\nkind = "websocket"\nurl = "wss://stream.example/v2/iex"\n'
        'provider = "alpaca"\nsymbols = ["IWM"]\nkey_env = "MM_TEST_KEY"\n'
        'secret_env = "MM_TEST_KEY"\nrest_url = "https://u:RestPW_123@data.example"\n'
        f'[rules]\nfile = "{RULES}"\n'
    )
    conf.chmod(0o600)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MM_TEST_KEY", "k")
        code = config_check(argparse.Namespace(config=str(conf), format="toml"))
        toml = capsys.readouterr().out
        assert config_check(argparse.Namespace(config=str(conf), format="json")) == code == 0
        data = json.loads(capsys.readouterr().out)
    assert (data["redis"]["url"], data["feeds"][0]["url"], data["feeds"][1]["rest_url"]) == (
        "redis://127.0.0.1:6379/0?password=***",
        "wss://stream.example/v1?token=***",
        "https://u:***@data.example",
    )
    assert 'url = "redis://127.0.0.1:6379/0?password=***"' in toml
    assert 'url = "wss://stream.example/v1?token=***"' in toml
    assert 'rest_url = "https://u:***@data.example"' in toml
    for secret in (PASSWORD, "FinTok_777", "RestPW_123"):
        assert secret not in toml + json.dumps(data)


def test_the_notifier_and_tail_refused_a_query_password_mask_it(tmp_path: Path) -> None:
    """A wrong `?password=` in the notifier's `[redis] url` or in `tail --url`: exit 78 with
    the URL masked (both printed the password); tail's fix is about the password in --url,
    not a config that gives none."""
    with RedisServer(None, "--requirepass", PASSWORD) as server:
        url = f"{server.url}?password={WRONG}"
        conf = tmp_path / "notify.toml"
        conf.write_text(
            f'[redis]\nurl = "{url}"\n[[receivers]]\nname = "hook"\n'
            'url = "json://127.0.0.1:9/alerts"\n[route]\nreceivers = ["hook"]\n'
        )
        notify = cli_here("notify", "--config", str(conf))
        tail = cli_here("tail", "--url", url, "--count", "1")
    masked = f"{server.url}?password=***"
    assert (notify.returncode, tail.returncode) == (78, 78)
    assert notify.stderr.startswith(
        f"market-monitor: config error: redis at {masked} refused the login"
    ), notify.stderr
    assert tail.stderr.startswith(f"market-monitor: config error: redis at {masked}: ")
    assert tail.stderr.partition("; fix: ")[2] == (
        "the password in --url was refused: check it (or pass --config, whose [redis]"
        " password_env or password_file tail then uses)\n"
    )
    assert WRONG not in notify.stderr + tail.stderr
