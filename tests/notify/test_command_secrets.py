"""`notify test --receiver NAME` and `notify digest` from an operator's shell without the
service's secrets: each resolves the URLs of the receivers it sends to only, so another
receiver's unset `{TOKEN}` or unreadable `url_file` does not stop it (exit 78 naming that
receiver's url); a missing secret of a receiver it sends to still does."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from tests.cli_here import cli_here
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer

pytestmark = pytest.mark.integration


async def notify(conf: Path, *args: str) -> tuple[int, str, str]:
    """`market-monitor notify --config CONF ARGS` in this process (tests/cli_here.py), in a
    thread while the test's loop serves the webhook: exit code, stdout, stderr."""
    env = {"MARKET_MONITOR_NOTIFY__LOG__LEVEL": "error"}
    argv = ("notify", "--config", str(conf), *args)
    res = await asyncio.to_thread(cli_here, *argv, env=env, unset=["MM_TEST_UNSET_SLACK_TOKEN"])
    return res.returncode, res.stdout, res.stderr


def write_config(path: Path, stream: str, url: str, digest_to: str) -> Path:
    """`chat` (a web hook that works), `team` (a Slack token from a variable not set) and
    `mail` (a systemd credential of a unit not running); the digest goes to `digest_to`."""
    path.write_text(
        f'[redis]\nstream = "{stream}"\nconsumer = "c1"\n'
        f'[[receivers]]\nname = "chat"\nurl = "{url}"\n'
        '[[receivers]]\nname = "team"\nurl = "slack://{MM_TEST_UNSET_SLACK_TOKEN}/#a"\n'
        '[[receivers]]\nname = "mail"\nurl_file = "/nonexistent/credentials/mail"\n'
        '[route]\nreceivers = ["chat", "team", "mail"]\n'
        f'[digest]\nenabled = true\nat = "00:00"\ntz = "UTC"\nreceivers = ["{digest_to}"]\n'
        "[delivery]\nmax_attempts = 2\nbackoff_base_s = 0.05\nbackoff_cap_s = 0.1\njitter = 0\n"
    )
    return path


async def test_test_resolves_the_url_of_the_receiver_it_tests_only(
    stream: str, tmp_path: Path
) -> None:
    """`notify test --receiver chat` sends the sample to chat though team's and mail's
    secrets are not set (it used to exit 78 naming receivers[1].url); `--receiver team`
    exits 78 naming team's url, and sends nothing."""
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"), "chat")
        code, out, err = await notify(conf, "test", "--receiver", "chat")
        assert (code, err) == (0, "")
        assert out.startswith("sent a test alert to chat")
        assert [b["alerts"][0]["id"] for b in hooks.bodies("/chat")] == ["notify-test-sample"]
        code, out, err = await notify(conf, "test", "--receiver", "team")
        assert (code, out) == (78, "")
        assert err.startswith("market-monitor: config error: ") and "receivers[1].url" in err
    assert len(hooks.received) == 1


async def test_digest_resolves_the_urls_of_the_digest_receivers_only(
    stream: str, tmp_path: Path
) -> None:
    """`notify digest` sends the day's digest to its receiver, chat, though the other
    receivers' secrets are not set (it used to exit 78 naming receivers[1].url); with the
    digest going to team, whose secret is not set, it exits 78 naming team's url."""
    now = dt.datetime.now(dt.UTC)
    await publish(stream, [alert(1)])
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"), "chat")
        code, out, err = await notify(conf, "digest")
        assert (code, err) == (0, "")
        assert out == f"digest:{now.date().isoformat()} to chat: sent\n"
        assert len(hooks.bodies("/chat")) == 1
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"), "team")
        code, out, err = await notify(conf, "digest")
        assert (code, out) == (78, "")
        assert err.startswith("market-monitor: config error: ") and "receivers[1].url" in err
    assert len(hooks.received) == 1


async def test_test_and_digest_join_no_consumer_group(stream: str, tmp_path: Path) -> None:
    """`notify test` and `notify digest` on a stream whose service never ran make no consumer
    group: they made it at `start` ("$", past the alerts already there), so the service
    started afterwards never read those alerts."""
    import redis.asyncio as aioredis

    await publish(stream, [alert(1)])
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"), "chat")
        assert (await notify(conf, "test", "--receiver", "chat"))[0] == 0
        assert (await notify(conf, "digest"))[0] == 0
    client = aioredis.Redis()
    try:
        assert await client.xinfo_groups(stream) == []
    finally:
        await client.aclose()
