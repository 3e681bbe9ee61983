"""`market-monitor notify` and `silence` when they cannot start: one line on stderr and a sysexits
code (69 Redis unreachable, 78 configuration or a Redis refusing us), never a traceback. The
service itself waits for a Redis that does not answer (tests/notify/test_health.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.alerts.redis_server import RedisServer, free_port
from tests.cli_here import cli_here

pytestmark = pytest.mark.integration

COMMANDS = {
    "notify": ["notify"],
    "notify test": ["notify", "test", "--receiver", "hook"],
    "notify dead list": ["notify", "dead", "list"],
    "silence list": ["silence", "list"],
    "silence add": ["silence", "add", "--rule", "squeeze.*", "--for", "2h"],
}


def cli(args: list[str], conf: Path, env: dict[str, str]) -> tuple[int, str]:
    """`market-monitor ARGS --config CONF` (in this process: tests/cli_here.py): exit code and
    stderr."""
    res = cli_here(*args, "--config", str(conf), env=env)
    return res.returncode, res.stderr


def write_config(
    path: Path, redis_url: str, url: str = "json://127.0.0.1:9/alerts", *, password: bool = False
) -> Path:
    """A notifier config with one receiver, `hook` (and the Redis password from $MM_TEST_PW)."""
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\nstream = "mm-cli-{uuid.uuid4().hex[:8]}"\n'
        + ('password_env = "MM_TEST_PW"\n' if password else "")
        + f'[[receivers]]\nname = "hook"\nurl = "{url}"\n[route]\nreceivers = ["hook"]\n'
    )
    return path


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A private Redis that wants the password `s3cret`."""
    with RedisServer(None, "--requirepass", "s3cret") as server:
        yield server


REFUSED = "config error: redis at redis://127.0.0.1:{port}/0 refused the login"


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("unreachable", 69, "redis at redis://127.0.0.1:{port}/0 unreachable: Error 111"),
        ("wrong password", 78, REFUSED),
        ("no password", 78, REFUSED),
    ],
)
def test_redis_that_does_not_answer_or_refuses_us_is_one_line_and_a_sysexits_code(
    tmp_path: Path, locked_redis: RedisServer, case: str, code: int, says: str
) -> None:
    """`notify test`, `notify dead list`, `silence list` and `silence add` each print one line
    naming Redis and exit 69 when nothing listens; they and the service exit 78 when Redis
    refuses the (missing) password: no retry fixes that."""
    port = free_port() if case == "unreachable" else locked_redis.port
    url = f"redis://127.0.0.1:{port}/0"
    # (no password: none configured at all; a variable set empty is a config error of its own)
    conf = write_config(tmp_path / "notify.toml", url, password=case != "no password")
    env = {"MM_TEST_PW": "wrong" if case == "wrong password" else "unused"}
    commands = [n for n in COMMANDS if not (case == "unreachable" and n == "notify")]
    results = [cli(COMMANDS[n], conf, env) for n in commands]
    for name, (got, err) in zip(commands, results, strict=True):
        assert (name, got, len(err.splitlines())) == (name, code, 1), err
        assert err.startswith("market-monitor: ") and says.format(port=port) in err, err


def test_an_unusable_receiver_url_is_a_config_error_in_service_and_test_mode(
    tmp_path: Path,
) -> None:
    """`url = "foo://bar/baz"` (no sender takes it) exits 78 with one line naming the field,
    for the service as for `notify test`, like every other config error."""
    conf = write_config(tmp_path / "notify.toml", "redis://127.0.0.1:6379/0", "foo://bar/baz")
    expected = (
        78,
        "market-monitor: config error: receivers[0].url: "
        "not an Apprise URL Apprise can use: foo://***\n",
    )
    for args in (COMMANDS["notify"], COMMANDS["notify test"]):
        assert cli(args, conf, {}) == expected


def test_a_silence_for_no_time_is_a_usage_error(tmp_path: Path) -> None:
    """`silence add --for 0s` is refused (exit 2, one line) and stores nothing: a silence that
    ends as it starts would silence nothing."""
    conf = write_config(tmp_path / "notify.toml", "redis://127.0.0.1:6379/0")
    stream = next(line for line in conf.read_text().splitlines() if line.startswith("stream"))
    key = stream.split('"')[1] + ":silences"
    args = ["silence", "add", "--rule", "squeeze.*", "--for", "0s"]
    assert cli(args, conf, {}) == (
        2,
        "market-monitor: --for: must be longer than zero: '0s'\n",
    )
    client = redis.Redis()
    try:
        assert client.exists(key) == 0
    finally:
        client.close()
