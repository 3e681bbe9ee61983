"""`market-monitor notify dead list|resend`: the alerts a receiver could not be given are
listed, and re-sent through the receiver's courier once it works again; what the delivery log
says the receiver has is not sent twice, and what it now has leaves `{stream}:dead`."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from monitor.core.model import Alert, encode_alert
from monitor.notify.config import load
from tests.conftest import ROOT
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import running, until

pytestmark = pytest.mark.integration

SURGE = alert(1, rule="surge.daily", kind="surge", symbol="IWM")
SQUEEZE = alert(2)


async def cli(conf: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m monitor notify dead ARGS --config CONF`: exit code, stdout, stderr."""
    quiet = {"MARKET_MONITOR_NOTIFY__LOG__LEVEL": "error"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "notify", "dead", *args, "--config", str(conf),
        cwd=ROOT, env={**os.environ, **quiet, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(path: Path, stream: str, url: str) -> Path:
    """A notifier config file with one receiver, `chat`, giving up after two quick attempts."""
    path.write_text(
        f'[redis]\nstream = "{stream}"\nconsumer = "c1"\nstart = "0"\nblock_ms = 100\n'
        "claim_idle_s = 0.5\nclaim_interval_s = 0.1\n"
        f'[[receivers]]\nname = "chat"\nurl = "{url}"\n'
        '[route]\nreceivers = ["chat"]\ngroup_wait_s = 0\ngroup_interval_s = 0\ngroup_by = ["id"]\n'
        "[delivery]\nmax_attempts = 2\nbackoff_base_s = 0.05\nbackoff_cap_s = 0.1\njitter = 0\n"
    )
    return path


async def dead_letters(conf: Path, stream: str, alerts: list[Alert]) -> list[str]:
    """Run the notifier until each of `alerts` is dead-lettered; the dead letters' ids."""
    await publish(stream, alerts)
    async with running(load(conf)) as notifier:
        await until(lambda: notifier.counters.total("notify_acked") == len(alerts))
    return await letter_ids(stream)


async def letter_ids(stream: str) -> list[str]:
    """The ids of the entries in `{stream}:dead`, oldest first."""
    client = aioredis.Redis()
    letters = await client.xrange(f"{stream}:dead")
    await client.aclose()
    return [k.decode() for k, _ in letters]


async def test_dead_letters_are_listed_and_resent_once_the_receiver_is_back(
    stream: str, tmp_path: Path
) -> None:
    """Two alerts dead-lettered while the webhook answered 500 are listed with their rule,
    symbol and reason; `resend --id` sends the one named and removes its letter; `resend
    --all` finds the other in the delivery log (it reached the receiver some other way), sends
    nothing and removes its letter too."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 500)
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        surge_key, squeeze_key = await dead_letters(conf, stream, [SURGE, SQUEEZE])
        hooks.always("/chat", None)
        reason = "gave up after 2 attempts: json://127.0.0.1/…: HTTP 500"

        code, out, err = await cli(conf, "list")
        assert (code, err) == (0, "")
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        lines = out.splitlines()
        assert [line.split("  ")[0] for line in lines] == [surge_key, squeeze_key]
        assert [line.split("  ", 2)[2] for line in lines] == [
            f"chat  surge.daily IWM  {SURGE.id}  {reason}",
            f"chat  squeeze.daily SC02  {SQUEEZE.id}  {reason}",
        ]
        assert all(line.split("  ")[1].startswith(day) for line in lines)

        client = aioredis.Redis()
        await client.set(f"{stream}:notify:sent:chat:{SQUEEZE.id}", "1", ex=60)
        await client.aclose()
        code, out, err = await cli(conf, "resend", "--id", surge_key)
        assert (code, out, err) == (0, f"{surge_key}  chat  surge.daily IWM: sent\n", "")
        assert [b["alerts"][0]["id"] for b in hooks.bodies("/chat")] == [SURGE.id]
        assert await letter_ids(stream) == [squeeze_key]

        code, out, _ = await cli(conf, "list")
        assert out.splitlines() == [f"{lines[1]}  (delivered since)"]
        code, out, err = await cli(conf, "resend", "--all")
        assert (code, out, err) == (
            0,
            f"{squeeze_key}  chat  squeeze.daily SC02: already sent\n",
            "",
        )
        assert len(hooks.bodies("/chat")) == 1
        assert await letter_ids(stream) == []


async def test_a_resend_that_fails_again_keeps_the_letter(stream: str, tmp_path: Path) -> None:
    """The receiver still down: `resend --receiver chat` says why it failed, exits 1 and leaves
    the letter in `{stream}:dead`, once (no second letter for the same failure)."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 503)
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        (key,) = await dead_letters(conf, stream, [SURGE])
        code, out, err = await cli(conf, "resend", "--receiver", "chat")
    assert (code, err) == (1, "")
    assert out == (
        f"{key}  chat  surge.daily IWM: failed: "
        "gave up after 2 attempts: json://127.0.0.1/…: HTTP 503\n"
    )
    assert await letter_ids(stream) == [key]


async def test_resend_without_saying_which_letters_is_a_usage_error(
    stream: str, tmp_path: Path
) -> None:
    """`dead resend` alone names no letter: exit 2, one line; `--id` with `--all` is refused
    by argparse (exit 2) too; nothing is sent."""
    conf = write_config(tmp_path / "notify.toml", stream, "json://127.0.0.1:9/chat")
    code, out, err = await cli(conf, "resend")
    assert (code, out) == (2, "")
    assert err == "market-monitor: dead resend: say which letters: --id, --receiver or --all\n"
    code, _, err = await cli(conf, "resend", "--all", "--id", "1-0")
    assert code == 2 and "not allowed with argument" in err


@pytest.mark.chaos
@pytest.mark.parametrize("xdel", [True, False], ids=["documented", "without-xdel"])
async def test_resend_as_the_documented_acl_user(tmp_path: Path, xdel: bool) -> None:
    """As the `notifier` ACL user of docs/security.md, `resend` sends the letter and removes it.
    Without XDEL (a rule of before), it sends it, says on stderr that it stays in the dead
    stream and exits 1; `list` marks it `(delivered since)` and a second `resend` sends
    nothing."""
    from tests.alerts.redis_server import RedisServer
    from tests.security.test_notifier_acl import documented_rule

    stream = f"mm-dead-acl-{uuid.uuid4().hex[:8]}"
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        rule = documented_rule("notifier", stream, "pw")
        assert "+xdel" in rule
        rule = rule if xdel else [r for r in rule if r != "+xdel"]
        await admin.execute_command("ACL", "SETUSER", "notifier", *rule)
        async with WebhookServer() as hooks:
            hooks.always("/chat", 500)
            conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
            text = conf.read_text().replace("[redis]\n", f'[redis]\nurl = "{server.url}"\n')
            conf.write_text(text)
            await admin.xadd(stream, {"id": SURGE.id, "alert": encode_alert(SURGE)})
            async with running(load(conf)) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 1)
            ((key, _),) = await admin.xrange(f"{stream}:dead")
            key = key.decode()
            hooks.always("/chat", None)
            acl = tmp_path / "acl.toml"
            acl.write_text(
                text.replace(server.url, f"redis://notifier@127.0.0.1:{server.port}/0").replace(
                    "[redis]\n", '[redis]\npassword_env = "MM_DEAD_PW"\n'
                )
            )
            env = {"MM_DEAD_PW": "pw"}
            code, out, err = await cli(acl, "resend", "--all", env=env)
            if xdel:
                assert (code, out, err) == (0, f"{key}  chat  surge.daily IWM: sent\n", "")
                assert await admin.xrange(f"{stream}:dead") == []
                await admin.aclose()
                return
            assert (code, out) == (1, f"{key}  chat  surge.daily IWM: sent\n")
            assert err.startswith(
                f"market-monitor: the letters sent stay in {stream}:dead: the Redis user may "
                "not XDEL (grant +xdel, docs/security.md)"
            ), err
            code, out, _ = await cli(acl, "list", env=env)
            assert code == 0 and out.endswith("  (delivered since)\n")
            code, out, _ = await cli(acl, "resend", "--all", env=env)
            assert out == f"{key}  chat  surge.daily IWM: already sent\n"
        await admin.aclose()
    assert len(hooks.bodies("/chat")) == 1
