"""`feed-replay` to a broker that refuses anonymous clients: a user name, a password from a
variable or a file (never on the command line), and mqtts:// verified against `--ca-file`."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import aiomqtt
import pytest

from monitor.datafiles import parse_data_arg, read_many
from monitor.feed_replay import bar_messages
from tests.cli_here import cli_here
from tests.conftest import RUT
from tests.security.pki import Pki
from tests.security.servers import TlsMosquitto
from tests.security.test_secrets import mosquitto_passwd
from tests.test_commands import cli

pytestmark = pytest.mark.integration

USER, PASSWORD = "publisher", "s3cret-Feed-Replay-41"
SPAN = ("--from", "2024-07-10", "--to", "2024-07-16")


def expected_messages() -> list[bytes]:
    """The bars feed-replay publishes for ^RUT over SPAN, in order."""
    spec = parse_data_arg(f"^RUT={RUT}")
    bars = read_many([spec], start=dt.date(2024, 7, 10), end=dt.date(2024, 7, 16)).bars
    return bar_messages(bars)


async def replay_and_receive(
    port: int, topic: str, count: int, args: list[str], env: dict[str, str]
) -> tuple[int, str, list[bytes]]:
    """Subscribe (as USER, on the plain listener at `port`), run `feed-replay ARGS --topic
    topic`; its exit code, stderr and the first `count` payloads received."""
    async with aiomqtt.Client("127.0.0.1", port, username=USER, password=PASSWORD) as sub:
        await sub.subscribe(topic, qos=1)
        res = await asyncio.to_thread(cli, "feed-replay", *args, "--topic", topic, env=env)
        got: list[bytes] = []
        if res.returncode == 0:
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    got.append(message.payload)
                    if len(got) == count:
                        break
    return res.returncode, res.stderr, got


@pytest.mark.parametrize("source", ["password-env", "password-file"])
async def test_feed_replay_logs_in_over_tls_with_a_password_not_on_the_command_line(
    tmp_path: Path, source: str
) -> None:
    """With `--username` and `--password-env` (a variable's name) or `--password-file`, and
    `--ca-file` the private CA for mqtts://, feed-replay publishes every bar to a Mosquitto that
    refuses anonymous clients and exits 0; the password is in no argument."""
    pki = Pki(tmp_path / "pki")
    passwd = mosquitto_passwd(tmp_path / "passwd", USER, PASSWORD)
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    by = {"password-env": "MM_TEST_FEED_PASSWORD", "password-file": str(secret)}
    topic = f"mm-replay-login-{uuid.uuid4().hex[:8]}/bars"
    want = expected_messages()
    certs = {"tls": pki.server("localhost", ip="127.0.0.1")}
    with TlsMosquitto(tmp_path / "mosquitto", pki.ca, certs, password_file=passwd) as broker:
        url = f"mqtts://127.0.0.1:{broker.tls_ports['tls']}"
        args = ["--data", f"^RUT={RUT}", *SPAN, "--url", url, "--username", USER]
        args += [f"--{source}", by[source]]
        args += ["--ca-file", str(pki.ca)]
        assert PASSWORD not in " ".join(args)
        env = {"MM_TEST_FEED_PASSWORD": PASSWORD}
        code, err, got = await replay_and_receive(broker.port, topic, len(want), args, env)
    assert (code, err, got) == (0, f"published {len(want)} bars to {topic}\n", want)


@pytest.mark.parametrize(
    ("args", "env", "code", "line"),
    [
        (
            ["--password-env", "MM_TEST_FEED_PASSWORD"],
            {},
            64,
            "usage error: --password-env: needs --username (MQTT sends a password only with a "
            "user name)",
        ),
        (
            ["--ca-file", "ca.pem"],
            {},
            64,
            "usage error: --ca-file: needs an mqtts:// --url, not 'mqtt://127.0.0.1:1883'",
        ),
        (
            ["--username", USER, "--password-env", "MM_TEST_UNSET_FEED_PASSWORD"],
            {},
            78,
            "config error: --password-env: environment variable MM_TEST_UNSET_FEED_PASSWORD is "
            "not set",
        ),
        (
            ["--username", USER, "--password-file", "/nonexistent/mqtt-password"],
            {},
            78,
            "config error: --password-file: cannot read /nonexistent/mqtt-password: No such file "
            "or directory",
        ),
        (
            ["--url", "mqtts://127.0.0.1:8883", "--ca-file", "/nonexistent/ca.pem"],
            {},
            78,
            "config error: --ca-file: cannot read /nonexistent/ca.pem: No such file or directory",
        ),
        (
            ["--url", "mqtt://publisher:s3cret@127.0.0.1:1883"],
            {},
            64,
            "usage error: --url: credentials belong in --username and --password-env or "
            "--password-file, not the url: 'mqtt://publisher:***@127.0.0.1:1883'",
        ),
        (
            ["--url", "mqtt://127.0.0.1:18a3"],
            {},
            64,
            "usage error: --url: not a valid url (a port that is not a number, or a broken "
            "[IPv6] host): 'mqtt://127.0.0.1:18a3'",
        ),
    ],
    ids=[
        "password-without-user",
        "ca-without-tls",
        "unset-variable",
        "no-file",
        "no-ca-file",
        "credentials-in-url",
        "bad-port",
    ],
)
def test_login_options_that_cannot_work_fail_before_any_broker_is_reached(
    args: list[str], env: dict[str, str], code: int, line: str
) -> None:
    """A password without a user name, a CA file without mqtts://, credentials in the url
    (they would be ignored) or a url that does not parse is a usage error (64); a
    password variable that is not set or a password or CA file that cannot be read is a config
    error (78) naming the option: one line each, before a file is read or a broker reached."""
    res = cli_here("feed-replay", "--data", f"^RUT={RUT}", *SPAN, *args, env=env)
    assert (res.returncode, res.stdout, res.stderr) == (code, "", f"market-monitor: {line}\n")
