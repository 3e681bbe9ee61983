"""`market-monitor tail` against a Redis that is not there, or goes away and comes back."""

from __future__ import annotations

import datetime as dt
import functools
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from typing import IO

import msgspec
import pytest
import redis

from monitor.core.model import Alert, encode_alert
from monitor.tail import render
from tests.alerts.redis_server import RedisServer, free_port
from tests.cli_here import cli_here
from tests.conftest import ROOT
from tests.test_service import replay_alerts

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

STREAM = "market-monitor:alerts"
REDIS_URL = "redis://127.0.0.1:6379/0"  # the shared Redis: each test its own channel


class Lines:
    """The lines of a child's pipe as they come, read by a thread (a full pipe never stalls)."""

    def __init__(self, pipe: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line)

    def next(self, timeout_s: float = 10.0) -> str:
        """The next line, waiting for it up to `timeout_s`."""
        return self._lines.get(timeout=timeout_s)

    def rest(self) -> list[str]:
        """The lines left, once the pipe is at its end (the child has exited)."""
        self._thread.join(10)
        return list(self._lines.queue)


class Tail:
    """`market-monitor tail ARGS` as a child process, with its stdout and stderr `Lines`. On
    leaving the block it is killed if still running, and `left` holds the lines of both that
    were not read."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "tail", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out, self.err = Lines(self.proc.stdout), Lines(self.proc.stderr)
        self.left: tuple[list[str], list[str]] = ([], [])

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *_: object) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.left = (self.out.rest(), self.err.rest())
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


def add_entries(server: RedisServer, *entries: tuple[str, Alert]) -> None:
    """Alerts added to the stream of `server` under the given entry ids."""
    client = redis.Redis(port=server.port)
    for entry_id, alert in entries:
        client.xadd(STREAM, {"id": alert.id, "alert": encode_alert(alert)}, id=entry_id)
    client.close()


def publish(url: str, channel: str, *payloads: bytes) -> None:
    """`payloads` PUBLISHed on `channel` of the Redis at `url`, in order."""
    client = redis.Redis.from_url(url)
    for payload in payloads:
        client.publish(channel, payload)
    client.close()


def test_tail_without_redis_is_unavailable_not_a_config_error() -> None:
    """With nothing listening at the URL, `tail` exits 69 (service unavailable) with one line
    naming Redis, not 78: the configuration is fine."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    res = cli_here("tail", "--url", url)
    assert res.returncode == 69
    assert res.stderr.startswith(f"market-monitor: redis at {url} unreachable: ")
    assert res.stderr.count("\n") == 1


def test_tail_rides_out_a_redis_restart_and_resumes_after_the_last_alert_it_printed() -> None:
    """Redis is killed and restarted (its stream restored, as from its AOF) while `tail` runs:
    tail says so once, and prints the alerts added after the last one it printed, skipping none
    and repeating none; an alert already there when it started is never printed."""
    july = replay_alerts(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
    before = msgspec.structs.replace(july[0], id="already-there-when-tail-started")
    stream = [("1-0", before), ("2-0", july[0]), ("3-0", july[1]), ("4-0", july[2])]
    with RedisServer() as server:
        add = functools.partial(add_entries, server)
        add(stream[0])
        with Tail("--url", server.url, "--json", "--count", "3") as tail:
            assert tail.err.next() == f"listening on {STREAM} (Ctrl-C to stop)\n"
            add(stream[1])
            printed = [tail.out.next()]
            server.kill()
            down = f"market-monitor: redis at {server.url} unreachable, retrying\n"
            assert tail.err.next() == down
            server.start()
            add(*stream[:3])  # what it held before, restored, and one added since
            printed.append(tail.out.next())
            add(stream[3])
            printed.append(tail.out.next())
            assert tail.proc.wait(10) == 0
    assert [msgspec.json.decode(line, type=Alert) for line in printed] == july
    assert tail.left == ([], [f"market-monitor: redis at {server.url} reachable again\n"])


def test_tail_rides_out_a_failover_that_ends_its_read() -> None:
    """The Redis tail reads is made a replica (a failover demoting it) that serves no stale
    data: Redis ends tail's blocked read ("UNBLOCKED ... instance state changed"), or refuses
    the next ("MASTERDOWN"), whichever tail is in. tail says Redis is refusing for now and goes
    on, printing the next alert once it is a master again (before: a config error, exit 78)."""
    july = replay_alerts(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
    with RedisServer() as server:
        add = functools.partial(add_entries, server)
        with Tail("--url", server.url, "--json", "--count", "2") as tail:
            assert tail.err.next() == f"listening on {STREAM} (Ctrl-C to stop)\n"
            add(("1-0", july[0]))
            printed = [tail.out.next()]
            admin = redis.Redis.from_url(server.url)
            admin.config_set("replica-serve-stale-data", "no")  # (every read refused meanwhile)
            admin.replicaof("127.0.0.1", str(free_port()))  # (a master that is not there)
            refusing = f"market-monitor: redis at {server.url} refusing for now, retrying\n"
            assert tail.err.next() == refusing
            admin.replicaof("NO", "ONE")
            admin.close()
            add(("2-0", july[1]))
            printed.append(tail.out.next())
            assert tail.proc.wait(10) == 0
    assert [msgspec.json.decode(line, type=Alert) for line in printed] == july[:2]


def test_tail_says_when_alerts_were_trimmed_from_the_stream_during_an_outage() -> None:
    """Redis comes back holding only entries newer than the last one tail printed (the stream
    trimmed past it, as `maxlen` does while tail is cut off): tail says which alerts are gone,
    once, and prints what is there."""
    july = replay_alerts(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
    with RedisServer() as server:
        add = functools.partial(add_entries, server)
        with Tail("--url", server.url, "--json", "--count", "2") as tail:
            assert tail.err.next() == f"listening on {STREAM} (Ctrl-C to stop)\n"
            add(("2-0", july[0]))
            printed = [tail.out.next()]
            server.kill()
            assert tail.err.next().endswith(" unreachable, retrying\n")
            server.start()
            add(("5-0", july[2]))  # 3-0 and 4-0 were trimmed meanwhile
            assert tail.err.next().endswith(" reachable again\n")
            assert tail.err.next() == (
                f"market-monitor: {STREAM} no longer holds 2-0, the last entry read: any alerts "
                "added after it and before 5-0, its oldest entry now, are gone unread "
                "(trimmed past [redis] maxlen, or lost by Redis)\n"
            )
            printed.append(tail.out.next())
            assert tail.proc.wait(10) == 0
    assert [msgspec.json.decode(line, type=Alert) for line in printed] == [july[0], july[2]]
    assert tail.left == ([], [])


def test_tail_reads_the_stream_it_is_given() -> None:
    """`--url` and `--stream` without a config: the alerts of that stream, not the default's."""
    with RedisServer(None) as server:
        alert = replay_alerts(dt.date(2024, 7, 16), dt.date(2024, 7, 16))[0]
        client = redis.Redis(port=server.port)
        client.xadd("desk:alerts", {"id": alert.id, "alert": encode_alert(alert)}, id="1-0")
        client.close()
        url = f"redis://127.0.0.1:{server.port}/0"
        res = cli_here(
            "tail", "--url", url, "--stream", "desk:alerts", "--since", "0", "--count", "1",
            "--json",
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert msgspec.json.decode(res.stdout.strip(), type=Alert) == alert


def test_tail_shows_control_characters_instead_of_sending_them_to_the_terminal() -> None:
    """An alert on the stream whose words carry escape sequences (anyone who may XADD to it can
    write one) is printed with them spelled out (`\\x1b`), not sent to the terminal: a title
    could otherwise clear the screen or retitle the window. `--json` keeps the payload as is."""
    with RedisServer(None) as server:
        alert = replay_alerts(dt.date(2024, 7, 16), dt.date(2024, 7, 16))[0]
        evil = msgspec.structs.replace(alert, title="\x1b[2J\x1b]0;pwned\x07" + alert.title)
        client = redis.Redis(port=server.port)
        client.xadd(STREAM, {"id": evil.id, "alert": encode_alert(evil)}, id="1-0")
        client.close()
        url = f"redis://127.0.0.1:{server.port}/0"
        res = cli_here("tail", "--url", url, "--since", "0", "--count", "1")
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert f"    \\x1b[2J\\x1b]0;pwned\\x07{alert.title}\n" in res.stdout


def test_tail_channel_prints_an_alert_published_on_it_readably_and_as_json() -> None:
    """`tail --channel` prints an alert PUBLISHed on the config's `[redis] channel` as text (no
    entry id: a message has none), and `--channel NAME --json` the same alert as one JSON line;
    both exit 0 after `--count 1`."""
    channel = f"mm-tail-{uuid.uuid4().hex[:8]}"
    alert = replay_alerts(dt.date(2024, 7, 16), dt.date(2024, 7, 16))[0]
    conf = str(ROOT / "config" / "demo.toml")
    env = {**os.environ, "MARKET_MONITOR__REDIS__CHANNEL": channel}
    with (
        Tail("--config", conf, "--channel", "--count", "1", env=env) as text,
        Tail("--url", REDIS_URL, "--channel", channel, "--json", "--count", "1") as json,
    ):
        assert text.err.next() == f"listening on {channel} (Ctrl-C to stop)\n"
        assert json.err.next() == f"listening on {channel} (Ctrl-C to stop)\n"
        publish(REDIS_URL, channel, encode_alert(alert))
        assert text.proc.wait(10) == 0
        assert json.proc.wait(10) == 0
    out, err = text.left
    assert ("".join(out), err) == (render(alert), [])
    assert out[0] == "2024-07-16 NOTICE   drawdown.high ^RUT\n"  # (no entry id)
    out, err = json.left
    assert ([msgspec.json.decode(line, type=Alert) for line in out], err) == ([alert], [])


def test_tail_channel_stops_after_count_alerts() -> None:
    """`--channel --count 2` prints the first two of three alerts published and exits 0."""
    channel = f"mm-tail-{uuid.uuid4().hex[:8]}"
    alerts = replay_alerts(dt.date(2024, 7, 1), dt.date(2024, 7, 31))[:3]
    with Tail("--url", REDIS_URL, "--channel", channel, "--json", "--count", "2") as tail:
        assert tail.err.next() == f"listening on {channel} (Ctrl-C to stop)\n"
        publish(REDIS_URL, channel, *map(encode_alert, alerts))
        assert tail.proc.wait(10) == 0
    out, err = tail.left
    assert ([msgspec.json.decode(line, type=Alert) for line in out], err) == (alerts[:2], [])


def test_tail_channel_reports_and_skips_a_message_that_is_not_an_alert() -> None:
    """A message on the channel that is not JSON, or JSON but not an alert, is said in one line
    on stderr (control characters spelled out) and skipped; the alert after them is printed."""
    channel = f"mm-tail-{uuid.uuid4().hex[:8]}"
    alert = replay_alerts(dt.date(2024, 7, 16), dt.date(2024, 7, 16))[0]
    with Tail("--url", REDIS_URL, "--channel", channel, "--json", "--count", "1") as tail:
        assert tail.err.next() == f"listening on {channel} (Ctrl-C to stop)\n"
        publish(REDIS_URL, channel, b"hello\x1b[2J", b'{"id": "x"}', encode_alert(alert))
        assert tail.proc.wait(10) == 0
    out, err = tail.left
    assert [msgspec.json.decode(line, type=Alert) for line in out] == [alert]
    assert err == [
        f"market-monitor: skipped a message on {channel}, not an alert (JSON is malformed: "
        "invalid character (byte 0)): b'hello\\x1b[2J'\n",
        f"market-monitor: skipped a message on {channel}, not an alert (Object missing "
        'required field `rule`): b\'{"id": "x"}\'\n',
    ]


@pytest.mark.parametrize(
    ("args", "refused", "given"),
    [
        (["--channel", "--since", "0"], "--since", "--channel"),
        (["--since", "0", "--channel", "c"], "--channel", "--since"),
        (["--channel", "c", "--stream", "s"], "--stream", "--channel"),
    ],
)
def test_tail_channel_with_since_or_stream_is_a_usage_error(
    args: list[str], refused: str, given: str
) -> None:
    """`--channel` with `--since` (an entry id, which a channel has not) or `--stream` exits 2
    with one error line naming both flags, rather than ignoring one."""
    res = cli_here("tail", "--url", REDIS_URL, *args, "--count", "1")
    assert (res.returncode, res.stdout) == (2, "")
    refusal = f"market-monitor tail: error: argument {refused}: not allowed with argument {given}"
    assert res.stderr.splitlines()[-1] == refusal


def test_tail_channel_rides_out_a_redis_restart_and_says_what_it_missed() -> None:
    """Redis is killed and restarted while `tail --channel` is subscribed: tail says so once,
    subscribes again, says that alerts published meanwhile were not seen and which
    `tail --since` reads them from the stream, and prints the alert published after."""
    july = replay_alerts(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
    channel = f"mm-tail-{uuid.uuid4().hex[:8]}"
    with (
        RedisServer() as server,
        Tail("--url", server.url, "--channel", channel, "--json", "--count", "2") as tail,
    ):
        assert tail.err.next() == f"listening on {channel} (Ctrl-C to stop)\n"
        before_ms = int(time.time() * 1000)
        publish(server.url, channel, encode_alert(july[0]))
        printed = [tail.out.next()]
        down_ms = int(time.time() * 1000)
        server.kill()
        down = f"market-monitor: redis at {server.url} unreachable, retrying\n"
        assert tail.err.next() == down
        server.start()
        assert tail.err.next() == f"market-monitor: redis at {server.url} reachable again\n"
        unseen = tail.err.next()
        publish(server.url, channel, encode_alert(july[1]))
        printed.append(tail.out.next())
        assert tail.proc.wait(10) == 0
    assert [msgspec.json.decode(line, type=Alert) for line in printed] == july[:2]
    found = re.fullmatch(
        f"market-monitor: alerts published on {channel} while disconnected were not seen "
        r"\(pub/sub keeps none\); the stream keeps them: `market-monitor tail --since (\d+)` "
        r"\(with this tail's --config or --url\) prints those added since Redis last answered "
        r"\(by this machine's clock\)\n",
        unseen,
    )
    assert found is not None, unseen
    assert before_ms <= int(found.group(1)) <= down_ms
    assert tail.left == ([], [])


@pytest.mark.parametrize(("source", "shown"), [("--stream", "--json"), ("--channel", "--text")])
def test_tail_exits_once_the_reader_of_its_output_has_gone(source: str, shown: str) -> None:
    """`tail --json | head -1`: once the reader of tail's stdout has read the first alert and
    closed its end, tail exits within seconds with a broken pipe's 141, saying nothing, rather
    than at its next write (the next alert, hours away maybe); from the stream (JSON) and the
    channel (text) alike."""
    name = f"mm-tail-{uuid.uuid4().hex[:8]}"
    alert = replay_alerts(dt.date(2024, 7, 16), dt.date(2024, 7, 16))[0]
    args = ["tail", "--url", REDIS_URL, source, name, *([shown] if shown == "--json" else [])]
    client = redis.Redis.from_url(REDIS_URL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    err = Lines(proc.stderr)
    try:
        assert err.next() == f"listening on {name} (Ctrl-C to stop)\n"
        if source == "--stream":
            client.xadd(name, {"id": alert.id, "alert": encode_alert(alert)})
        else:
            client.publish(name, encode_alert(alert))
        first = proc.stdout.readline()
        proc.stdout.close()  # (head -1 exits)
        code = proc.wait(5)
    finally:
        proc.kill()
        proc.wait(10)
        said = err.rest()
        proc.stderr.close()
        client.delete(name)
        client.close()
    if shown == "--json":
        assert msgspec.json.decode(first, type=Alert) == alert
    else:
        assert first == render(alert).splitlines(keepends=True)[0]
    assert (code, said) == (141, [])
