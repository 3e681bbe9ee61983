"""`market-monitor notify dead list|resend`: the alerts a receiver could not be given are
listed, and re-sent through the receiver's courier once it works again; what the delivery log
says the receiver has is not sent twice, and what it now has leaves `{stream}:dead`."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from monitor.core.model import Alert, encode_alert
from monitor.notify import dead
from monitor.notify.compose import Composer, body_format
from monitor.notify.config import load
from monitor.notify.delivery import HttpJsonSender, Sender
from monitor.notify.dispatch import RESEND_MAX_ALERTS
from monitor.notify.render import Message
from monitor.notify.service import Notifier
from tests.cli_here import cli_here
from tests.conftest import ROOT
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import running, until

pytestmark = pytest.mark.integration

SURGE = alert(1, rule="surge.daily", kind="surge", symbol="IWM")
SQUEEZE = alert(2)


async def cli(conf: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`market-monitor notify dead ARGS --config CONF` in this process (tests/cli_here.py), in a
    thread while the test's loop serves the webhook it sends to: exit code, stdout, stderr. One
    at a time (the command's output, environment and logging are the process's): two at once
    are processes (`cli_process`)."""
    quiet = {"MARKET_MONITOR_NOTIFY__LOG__LEVEL": "error"}
    argv = ("notify", "dead", *args, "--config", str(conf))
    res = await asyncio.to_thread(cli_here, *argv, env={**quiet, **(env or {})})
    return res.returncode, res.stdout, res.stderr


async def cli_process(conf: Path, *args: str) -> tuple[int, str, str]:
    """`python -m monitor notify dead ARGS --config CONF`: exit code, stdout, stderr."""
    quiet = {"MARKET_MONITOR_NOTIFY__LOG__LEVEL": "error"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "notify", "dead", *args, "--config", str(conf),
        cwd=ROOT, env={**os.environ, **quiet},
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


async def bury(stream: str, alerts: list[Alert], receiver: str = "chat") -> list[str]:
    """XADD a dead letter of each of `alerts` for `receiver`, as the notifier writes one; their
    ids in `{stream}:dead`, oldest first."""
    client = aioredis.Redis()
    for a in alerts:
        await client.xadd(
            f"{stream}:dead",
            {
                "id": a.id,
                "entry": "1-0",
                "receiver": receiver,
                "reason": "gave up after 2 attempts: HTTP 500",
                "attempts": 2,
                "ts": "2024-07-16T20:05:00+00:00",
                "alert": encode_alert(a),
            },
        )
    await client.aclose()
    return await letter_ids(stream)


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


async def test_two_resends_at_once_send_each_alert_once(stream: str, tmp_path: Path) -> None:
    """Two `resend --all` started together against a webhook answering 2 s late: each alert
    goes to the receiver once (one resend sends it, the other finds it claimed, `being sent
    elsewhere`, or sent), and every letter leaves the dead stream."""
    alerts = [SURGE, SQUEEZE, alert(3, rule="streak.daily", kind="streak")]
    keys = await bury(stream, alerts)
    async with WebhookServer() as hooks:
        hooks.slow("/chat", 2.0)
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        runs = await asyncio.gather(*(cli_process(conf, "resend", "--all") for _ in range(2)))
    sent = sorted(a["id"] for b in hooks.bodies("/chat") for a in b["alerts"])
    assert sent == sorted(a.id for a in alerts)
    lines = sorted(line for _, out, _ in runs for line in out.splitlines())
    assert sorted(line.split("  ")[0] for line in lines if line.endswith(": sent")) == sorted(keys)
    assert all(
        line.endswith((": already sent", "being sent elsewhere (another resend claimed it: "
                       "not sent by this one)"))
        for line in lines if not line.endswith(": sent")
    ), lines  # fmt: skip
    assert await letter_ids(stream) == []


async def test_an_alert_claimed_by_another_resend_is_left_to_it(
    stream: str, tmp_path: Path
) -> None:
    """A letter whose alert another resend has claimed (its claim key set) is not sent: it is
    reported `being sent elsewhere`, stays in the dead stream, and `resend` exits 1; the other
    letter goes and is removed."""
    surge_key, squeeze_key = await bury(stream, [SURGE, SQUEEZE])
    client = aioredis.Redis()
    await client.set(f"{stream}:notify:sending:chat:{SURGE.id}", "other", ex=60)
    await client.aclose()
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        code, out, err = await cli(conf, "resend", "--all")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"{surge_key}  chat  surge.daily IWM: being sent elsewhere (another resend claimed it: "
        "not sent by this one)",
        f"{squeeze_key}  chat  squeeze.daily SC02: sent",
    ]
    assert [[a["id"] for a in b["alerts"]] for b in hooks.bodies("/chat")] == [[SQUEEZE.id]]
    assert await letter_ids(stream) == [surge_key]


async def test_a_large_group_is_resent_in_messages_of_bounded_size(
    stream: str, tmp_path: Path
) -> None:
    """50 letters of one rule and session go in messages of at most RESEND_MAX_ALERTS (20)
    alerts, each alert once, and all leave the dead stream; claims are released after."""
    alerts = [alert(n) for n in range(50)]
    await bury(stream, alerts)
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        code, out, err = await cli(conf, "resend", "--all")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 50 and all(x.endswith(": sent") for x in out.splitlines())
    bodies = hooks.bodies("/chat")
    assert RESEND_MAX_ALERTS == 20
    assert [len(b["alerts"]) for b in bodies] == [20, 20, 10]
    assert [a["id"] for b in bodies for a in b["alerts"]] == [a.id for a in alerts]
    assert await letter_ids(stream) == []
    client = aioredis.Redis()
    assert [k async for k in client.scan_iter(f"{stream}:notify:sending:*")] == []
    await client.aclose()


POISON = "poison"


class ComposerWithABug(Composer):
    """A Composer that raises on any message carrying the alert `POISON`."""

    async def message(self, receiver: str, alerts: Sequence[Alert]) -> Message:
        """Render as usual, except `POISON`."""
        if any(a.id == POISON for a in alerts):
            raise KeyError("a rendering bug")
        return await super().message(receiver, alerts)


async def test_a_letter_that_cannot_be_rendered_does_not_stop_the_others(
    stream: str, tmp_path: Path
) -> None:
    """One of three letters of a group cannot be rendered: the other two go in one message and
    leave the dead stream; that one is reported `failed: could not render: ...` and stays."""
    poison = msgspec.structs.replace(alert(9), id=POISON)
    good_1, good_2 = alert(1), alert(2)
    keys = await bury(stream, [good_1, poison, good_2])
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        config = load(conf)
        senders: dict[str, Sender] = {"chat": HttpJsonSender(hooks.url("/chat"))}
        notifier = Notifier(config, senders=senders, consume=False)
        r = config.receivers[0]
        notifier.composer = ComposerWithABug(config, {"chat": body_format(r, r.url)}, senders)
        async with notifier:
            done = await dead.resend(notifier, [], None, everything=True)
    assert done.lines == [
        f"{keys[0]}  chat  squeeze.daily SC01: sent",
        f"{keys[1]}  chat  squeeze.daily SC09: failed: could not render: "
        "KeyError: 'a rendering bug'",
        f"{keys[2]}  chat  squeeze.daily SC02: sent",
    ]
    assert (done.removed, done.ok) == ([keys[0], keys[2]], False)
    assert [[a["id"] for a in b["alerts"]] for b in hooks.bodies("/chat")] == [
        [good_1.id, good_2.id]
    ]
    assert await letter_ids(stream) == [keys[1]]


async def test_list_refuses_a_receiver_it_does_not_know(stream: str, tmp_path: Path) -> None:
    """`list --receiver nosuch` exits 78 naming it, as `resend` does; `list --receiver gone`
    (removed from the config, letters left) and `--receiver '*'` list theirs, and `list`
    alone lists every letter."""
    gone = await bury(stream, [SURGE], receiver="gone")
    star = await bury(stream, [SQUEEZE], receiver="*")
    conf = write_config(tmp_path / "notify.toml", stream, "json://127.0.0.1:9/chat")
    code, out, err = await cli(conf, "list", "--receiver", "nosuch")
    assert (code, out) == (78, "")
    assert err == "market-monitor: config error: receivers: no receiver named 'nosuch'\n"
    code, out, err = await cli(conf, "resend", "--receiver", "gone")
    assert (code, out) == (78, "")
    assert err == "market-monitor: config error: receivers: no receiver named 'gone'\n"
    code, out, err = await cli(conf, "list", "--receiver", "gone")
    assert (code, err) == (0, "")
    assert [line.split("  ")[0] for line in out.splitlines()] == gone
    code, out, err = await cli(conf, "list", "--receiver", "*")
    assert (code, err) == (0, "")
    assert [line.split("  ")[0] for line in out.splitlines()] == star[1:]
    code, out, err = await cli(conf, "list", "--receiver", "chat")
    assert (code, out, err) == (0, "", "")
    code, out, err = await cli(conf, "list")
    assert (code, err) == (0, "")
    assert [line.split("  ")[0] for line in out.splitlines()] == star


async def test_list_needs_no_secrets_and_resend_only_those_of_its_receivers(
    stream: str, tmp_path: Path
) -> None:
    """From a shell without the service's secrets (a `{TOKEN}` unset, a `url_file` credential
    of a unit not running): `dead list` works (it sends nothing; it used to exit 78 naming a
    receiver's url), `resend` of a letter of a receiver whose URL resolves sends it, and
    `resend` to a receiver whose secret is missing exits 78 naming that receiver's url."""
    async with WebhookServer() as hooks:
        conf = write_config(tmp_path / "notify.toml", stream, hooks.url("/chat"))
        conf.write_text(
            conf.read_text().replace(
                '[route]\nreceivers = ["chat"]',
                '[[receivers]]\nname = "team"\nurl = "slack://{MM_TEST_UNSET_SLACK_TOKEN}/#a"\n'
                '[[receivers]]\nname = "mail"\nurl_file = "/nonexistent/credentials/mail"\n'
                '[route]\nreceivers = ["chat", "team", "mail"]',
            )
        )
        await bury(stream, [SURGE])
        chat_key, team_key = await bury(stream, [SQUEEZE], "team")
        code, out, err = await cli(conf, "list")
        assert (code, err) == (0, "")
        assert [line.split("  ")[0] for line in out.splitlines()] == [chat_key, team_key]
        code, out, err = await cli(conf, "resend", "--id", chat_key)
        assert (code, out, err) == (0, f"{chat_key}  chat  surge.daily IWM: sent\n", "")
        assert [b["alerts"][0]["id"] for b in hooks.bodies("/chat")] == [SURGE.id]
        code, out, err = await cli(conf, "resend", "--receiver", "team")
        assert (code, out) == (78, "")
        assert err.startswith("market-monitor: config error: ") and "receivers[1].url" in err
    assert await letter_ids(stream) == [team_key]
