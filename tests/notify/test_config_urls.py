"""The notifier's `[redis] url`: one the Redis client would refuse at start (a port out of range
or not a number, no host, a scheme it does not take) is a ConfigError naming `redis.url` when the
config loads (exit 78), not a `ValueError` traceback when the client is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.notify import config as ncfg
from monitor.notify.cli import main as notify_main
from tests.cli_here import cli_here


def write(tmp: Path, redis_url: str) -> Path:
    """A notifier config with this Redis URL and one receiver."""
    path = tmp / "notify.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    return path


NOT_A_NUMBER = "not a valid url (a port that is not a number, or a broken [IPv6] host)"
BAD = [
    (
        "redis://127.0.0.1:116999/0",
        "not a valid url (a port outside 1-65535): 'redis://127.0.0.1:116999/…'",
    ),
    ("redis://127.0.0.1:0/0", "not a valid url (a port outside 1-65535): 'redis://127.0.0.1:0/…'"),
    ("redis://ops:pa55@127.0.0.1:x/0", f"{NOT_A_NUMBER}: 'redis://127.0.0.1:x/…'"),
    ("rediss://[::1:6380/0", f"{NOT_A_NUMBER}: 'rediss://[::1:6380/…'"),
    ("redis:///0", "must be redis://host[:port][/db], not 'redis:///…'"),
    ("rediss://:6380", "must be rediss://host[:port][/db], not 'rediss://:6380'"),
    (
        "http://127.0.0.1:6379/0",
        "must be redis://..., rediss://... or unix://..., not 'http://127.0.0.1:6379/…'",
    ),
]
IDS = ["port-range", "port-zero", "port-not-a-number", "ipv6", "no-host", "tls-no-host", "scheme"]


@pytest.mark.parametrize(("url", "error"), BAD, ids=IDS)
def test_the_loader_refuses_a_redis_url_the_client_would_refuse(
    tmp_path: Path, url: str, error: str
) -> None:
    """`load` raises ConfigError naming the file and `redis.url`, quoting scheme and host only
    (never the password)."""
    conf = write(tmp_path, url)
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {})
    assert str(caught.value) == f"{conf}: redis.url: {error}"
    assert "pa55" not in str(caught.value)


def test_an_environment_override_is_checked_too(tmp_path: Path) -> None:
    """`MARKET_MONITOR_NOTIFY__REDIS__URL` goes through the same check as the file, and the
    error names the variable (the file does not hold the value), as the daemon's does."""
    conf = write(tmp_path, "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {"MARKET_MONITOR_NOTIFY__REDIS__URL": "redis://127.0.0.1:116999/0"})
    assert str(caught.value) == (
        "MARKET_MONITOR_NOTIFY__REDIS__URL: not a valid url (a port outside 1-65535): "
        "'redis://127.0.0.1:116999/…'"
    )


def test_an_override_is_text_where_the_field_is_and_a_bad_one_names_the_variable(
    tmp_path: Path,
) -> None:
    """A variable's value that reads as a number sets a text field as the text written
    (`START=0`: read from the stream's start, as the docs say; `STREAM=2024`); where the field
    takes a number, a value that is none is an error naming the variable, not the file."""
    conf = write(tmp_path, "redis://127.0.0.1:6379/0")
    env = {
        "MARKET_MONITOR_NOTIFY__REDIS__START": "0",
        "MARKET_MONITOR_NOTIFY__REDIS__STREAM": "2024",
    }
    config = ncfg.load(conf, env)
    assert (config.redis.start, config.redis.stream) == ("0", "2024")
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {"MARKET_MONITOR_NOTIFY__HTTP__PORT": "abc"})
    assert str(caught.value) == "MARKET_MONITOR_NOTIFY__HTTP__PORT: Expected `int`, got `str`"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://ops:s3cret@redis.internal:6380/1",
        "redis://[::1]:6379",
        "redis://localhost",
        "unix:///run/redis/redis.sock?db=2",
    ],
)
def test_urls_the_client_takes_still_load(tmp_path: Path, url: str) -> None:
    """redis://, rediss:// (any port 1-65535, or none) and unix:// (a socket path) load."""
    assert ncfg.load(write(tmp_path, url), {}).redis.url == url


def test_the_notifier_exits_78_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`python -m monitor.notify notify` with a Redis port out of range: exit 78 and one line on
    stderr (it used to die with `ValueError: Port out of range`, exit 1)."""
    conf = write(tmp_path, "redis://127.0.0.1:116999/0")
    res = cli_here("notify", "--config", str(conf), entry=notify_main)
    assert (res.returncode, res.stderr) == (
        78,
        f"market-monitor: config error: {conf}: redis.url: not a valid url (a port outside "
        "1-65535): 'redis://127.0.0.1:116999/…'\n",
    )


RECEIVER_PORT = "the port is no number from 1 to 65535"
BAD_RECEIVERS = [
    ("json://127.0.0.1:99999/alerts", f"json://127.0.0.1/…: {RECEIVER_PORT}"),
    ("json://127.0.0.1:0/alerts", f"json://127.0.0.1/…: {RECEIVER_PORT}"),
    ("jsons://ops:s3cret/alerts", f"jsons://ops/…: {RECEIVER_PORT}"),
    ("json://[::1/alerts", "json://…: an IPv6 host's bracket is not closed"),
    ("json://", "json://…: no host"),
    ("json:///alerts", "json://…: no host"),
    ("xml://127.0.0.1:99999/alerts", f"xml://127.0.0.1/…: {RECEIVER_PORT}"),
]


@pytest.mark.parametrize(("url", "error"), BAD_RECEIVERS)
def test_config_check_refuses_a_webhook_url_no_send_can_use(
    tmp_path: Path, url: str, error: str
) -> None:
    """A json://, jsons:// or xml:// receiver URL without a host, with a port past 65535 or
    not a number, or an IPv6 bracket not closed is refused by config check, exit 78 and one
    line naming the receiver (the password of a URL missing its '@host' not shown). Before,
    the check passed them all; then a port past 65535 stopped the notifier with an
    OverflowError at its first alert, a bracket with a ValueError traceback, and no host was
    retried for minutes as a network failure."""
    conf = tmp_path / "notify.toml"
    conf.write_text(f'[[receivers]]\nname = "hook"\nurl = "{url}"\n[route]\nreceivers = ["hook"]\n')
    res = cli_here("config", "check", "--config", str(conf))
    assert (res.returncode, res.stderr) == (
        78,
        f"market-monitor: config error: receivers[0].url: {error}\n",
    )
