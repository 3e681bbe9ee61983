"""Command-line values the commands cannot use: one line naming the flag and exit 2, as argparse
gives (78 for a --url, as `tail --url`), never a traceback, a run that never ends or a silence
wider than asked."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis

from monitor.cli import _parser
from monitor.core.model import Alert, encode_alert
from monitor.notify.silences import parse_duration
from tests.cli_here import cli_here

REDIS_URL = "redis://127.0.0.1:6379/0"
ALERT = Alert(
    id="args-test", rule="streak.daily", kind="streak", symbol="^RUT", timeframe="1d",
    session="2024-07-16", ts="2024-07-16T20:00:00Z", severity="notice",
    title="Russell 2000: 5 straight sessions up", text="Russell 2000 rose in 5 sessions.",
    metrics={"streak": 5}, history=None,
)  # fmt: skip


def refused(*args: str) -> str:
    """The last stderr line of a command line refused with exit 2 (having printed nothing)."""
    res = cli_here(*args)
    assert (res.returncode, res.stdout) == (2, ""), res.stderr
    return res.stderr.splitlines()[-1]


@pytest.fixture
def stream() -> Iterator[str]:
    """A stream name of this test's own; its Redis keys are deleted afterwards."""
    name = f"mm-args-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def notify_conf(tmp_path: Path, stream: str) -> str:
    """A notifier config on the local Redis, with the test's own stream."""
    path = tmp_path / "notify.toml"
    path.write_text(
        f'[redis]\nurl = "{REDIS_URL}"\nstream = "{stream}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    return str(path)


@pytest.mark.integration
def test_a_silence_longer_than_366_days_is_a_usage_error(notify_conf: str, stream: str) -> None:
    """`silence add --for 99999999999d` (past what a date holds) exits 2 naming --for and the
    longest silence, and stores nothing."""
    res = cli_here(
        "silence", "--config", notify_conf, "add", "--rule", "x", "--for", "99999999999d"
    )
    assert (res.returncode, res.stderr) == (
        2,
        "market-monitor: --for: must be at most 366 days: '99999999999d'\n",
    )
    assert redis.Redis.from_url(REDIS_URL).exists(f"{stream}:silences") == 0


def test_a_silence_of_366_days_is_the_longest_taken() -> None:
    """366 days (52w and 8784h too) is a duration; a second more is not."""
    assert parse_duration("366d") == dt.timedelta(days=366)
    assert parse_duration("8784h") == dt.timedelta(days=366)
    assert parse_duration("52w") == dt.timedelta(weeks=52)
    with pytest.raises(ValueError, match="must be at most 366 days: '31622401s'"):
        parse_duration("31622401s")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("flag", "value"),
    [("--rule", ""), ("--rule", "  "), ("--symbol", ""), ("--symbol", " ")],
)
def test_an_empty_rule_or_symbol_is_a_usage_error(
    notify_conf: str, stream: str, flag: str, value: str
) -> None:
    """An empty --rule (which would match nothing) or --symbol (which would silence every
    symbol), as an unset shell variable gives, exits 2 naming the flag and stores nothing."""
    args = {"--rule": "squeeze.*", "--symbol": "GME", flag: value}
    line = refused(
        "silence", "--config", notify_conf, "add", "--rule", args["--rule"],
        "--symbol", args["--symbol"], "--for", "2h",
    )  # fmt: skip
    assert line == f"market-monitor silence add: error: argument {flag}: must not be empty"
    assert redis.Redis.from_url(REDIS_URL).exists(f"{stream}:silences") == 0


SECONDS = "must be a number of seconds above 0 and at most 86400"


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "86401", "1e400", "soon"])
@pytest.mark.parametrize(("command", "flag"), [("status", "--timeout"), ("watch", "--interval")])
def test_a_wait_that_is_not_a_positive_number_of_seconds_is_a_usage_error(
    command: str, flag: str, value: str
) -> None:
    """`status --timeout` and `watch --interval` take a finite number of seconds above zero,
    up to a day: anything else exits 2 naming the flag (`watch --once` keeps a wrong value
    from looping)."""
    once = ["--once"] if command == "watch" else []
    line = refused(command, "--url", "http://127.0.0.1:9", *once, flag, value)
    assert line == f"market-monitor {command}: error: argument {flag}: {SECONDS}, not {value!r}"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "http://[::1",
            "not a valid url (a port that is not a number, or a broken [IPv6] host): 'http://[::1'",
        ),
        (
            "http://127.0.0.1:99999",
            "not a valid url (a port outside 1-65535): 'http://127.0.0.1:99999'",
        ),
        ("http://a b", "not a valid url (a space or a control character): 'http://a b'"),
        ("notaurl", "must be http://host[:port] or https://host[:port], not '(no scheme)'"),
        ("", "must be http://host[:port] or https://host[:port], not '(no scheme)'"),
        ("ftp://x", "must be http://host[:port] or https://host[:port], not 'ftp://x'"),
        ("http:///healthz", "must be http://host[:port] or https://host[:port], not 'http:///…'"),
    ],
)
@pytest.mark.parametrize("command", ["status", "watch"])
def test_a_url_that_is_not_a_daemon_url_is_a_config_error_naming_url(
    command: str, url: str, says: str
) -> None:
    """`status --url` and `watch --url` refuse a URL the HTTP client cannot use as `tail --url`
    does: exit 78, one line naming --url, not a traceback nor "down" as if a daemon were asked."""
    once = ["--once"] if command == "watch" else []
    res = cli_here(command, "--url", url, *once)
    assert (res.returncode, res.stdout, res.stderr) == (
        78,
        "",
        f"market-monitor: config error: --url: {says}\n",
    )


NOT_IDS = ["abc", "", "-", "+", "1.5", "12-", "-3", "1-2-3", "١٢", "18446744073709551616",
           "1-18446744073709551616", pytest.param("9" * 5000, id="5000-digits")]  # fmt: skip


@pytest.mark.parametrize("value", NOT_IDS)
def test_a_since_that_is_not_an_entry_id_is_a_usage_error(stream: str, value: str) -> None:
    """`tail --since` takes 0, $ or an entry id (MS or MS-SEQ in digits, each below 2**64):
    anything else exits 2 naming --since, not 78 as if the config were wrong."""
    line = refused("tail", "--url", REDIS_URL, "--stream", stream, "--since", value)
    assert line == (
        "market-monitor tail: error: argument --since: must be 0, $ or an entry id "
        f"(MS or MS-SEQ, in digits), not {value!r}"
    )


SINCE_TAKEN = ["0", "00", "5", "1718000000000-3", "18446744073709551615", "18446744073709551615-4"]


@pytest.mark.parametrize("value", [*SINCE_TAKEN, "$"])
def test_a_since_redis_reads_from_is_taken(value: str) -> None:
    """0, $ and entry ids up to the largest Redis holds pass --since as given."""
    assert _parser().parse_args(["tail", "--since", value]).since == value


@pytest.mark.integration
@pytest.mark.parametrize("value", SINCE_TAKEN)
def test_tail_since_an_entry_id_still_prints_the_alert_after_it(stream: str, value: str) -> None:
    """With an alert at the largest entry id, `tail --since ID --count 1` prints it and exits 0
    for every id before it, the incomplete (MS) and the largest ones included."""
    client = redis.Redis.from_url(REDIS_URL)
    client.xadd(stream, {"id": ALERT.id, "alert": encode_alert(ALERT)}, id=f"{2**64 - 1}-5")
    client.close()
    res = cli_here(
        "tail", "--url", REDIS_URL, "--stream", stream, "--since", value, "--count", "1", "--json"
    )  # fmt: skip
    assert (res.returncode, res.stderr) == (0, "")
    assert msgspec.json.decode(res.stdout, type=Alert) == ALERT


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_a_count_that_is_not_a_positive_whole_number_is_a_usage_error(
    stream: str, value: str
) -> None:
    """`tail --count 0` or `-1` would never stop: they exit 2 naming --count."""
    line = refused("tail", "--url", REDIS_URL, "--stream", stream, "--since", "0", "--count", value)
    assert line == (
        f"market-monitor tail: error: argument --count: must be a whole number above 0, "
        f"not {value!r}"
    )


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_stream_is_a_usage_error(value: str) -> None:
    """`tail --stream ''` exits 2 naming --stream rather than reading the default stream."""
    line = refused("tail", "--url", REDIS_URL, "--stream", value, "--since", "0", "--count", "1")
    assert line == "market-monitor tail: error: argument --stream: must not be empty"


def test_a_password_in_the_status_url_is_used_not_printed() -> None:
    """`status --url http://bob:PASSWORD@...` prints the address with the password masked (it
    printed it whole, in a report that goes to logs and tickets)."""
    password = "hunter2-" + uuid.uuid4().hex[:8]
    res = cli_here("status", "--url", f"http://bob:{password}@127.0.0.1:9")
    assert res.returncode == 2
    assert password not in res.stdout + res.stderr
    assert "http://bob:***@127.0.0.1:9" in res.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["tail", "--channel", "\x01\udcff"],
        ["tail", "--stream", "\udcff", "--since", "0"],
        ["silence", "add", "--rule", "x", "--symbol", "\udcff", "--for", "1h"],
        ["silence", "add", "--rule", "x", "--for", "1h", "--comment", "\udcff"],
        ["silence", "expire", "\udcff"],
    ],
    ids=["channel", "stream", "symbol", "comment", "expire"],
)
def test_arguments_that_are_not_utf8_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8 (the shell passes them as they are) in a name or text that
    goes to Redis: exit 2 naming the argument. Before, a UnicodeEncodeError traceback."""
    with pytest.raises(SystemExit) as raised:
        _parser().parse_args(argv)
    assert raised.value.code == 2
    assert "not UTF-8 text" in capsys.readouterr().err
