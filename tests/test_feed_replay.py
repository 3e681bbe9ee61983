"""`feed-replay` refusing what it cannot do, in one line and with the right exit code."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.redis_server import free_port
from tests.cli_here import cli_here
from tests.conftest import RUT
from tests.feeds.mosquitto_server import MosquittoServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("topic", ["market/#", "market/+/bars", ""])
def test_a_topic_with_a_wildcard_is_a_usage_error(topic: str) -> None:
    """A topic to publish to with + or # (or none at all) exits 64 with one line saying why,
    before any file is read or broker reached."""
    res = cli_here("feed-replay", "--data", f"^RUT={RUT}", "--topic", topic)
    assert (res.returncode, res.stdout, res.stderr) == (
        64,
        "",
        f"market-monitor: usage error: --topic {topic!r}: a topic to publish to cannot be "
        "empty or contain + or # (wildcards are for subscribing)\n",
    )


@pytest.mark.parametrize(
    ("dates", "code", "said"),
    [
        (
            ["--from", "2024-08-01", "--to", "2024-07-01"],
            2,
            "market-monitor: --from 2024-08-01 is after --to 2024-07-01\n",
        ),
        (
            ["--from", "2030-01-01"],
            65,
            "market-monitor: data error: --data: nothing to publish (check the files, --from and"
            " --to)\n",
        ),
    ],
)
def test_dates_that_leave_nothing_to_publish_are_said_before_connecting(
    dates: list[str], code: int, said: str
) -> None:
    """A --from after --to (refused as `replay` refuses it), or after the data's last session:
    feed-replay says so, before it connects (no broker listens here), instead of "published 0
    bars" and exit 0."""
    port = free_port()
    res = cli_here(
        "feed-replay", "--data", f"^RUT={RUT}", "--topic", "t/bars",
        "--url", f"mqtt://127.0.0.1:{port}", *dates,
    )  # fmt: skip
    assert (res.returncode, res.stderr) == (code, said)


def test_a_broker_that_refuses_the_connection_is_unavailable_not_a_config_error() -> None:
    """With nothing listening at --url, feed-replay exits 69 (service unavailable) with one
    line naming the broker, not 78 (the configuration is fine)."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    res = cli_here("feed-replay", "--data", f"^RUT={RUT}", "--from", "2024-07-01", "--url", url)
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
        res = cli_here(
            "feed-replay", "--data", f"^RUT={RUT}", "--from", "2024-07-01", "--url", url, *login,
            env={"MM_TEST_FEED_PASSWORD": "Sup3rSecret"},
        )  # fmt: skip
    assert (res.returncode, res.stdout) == (78, "")
    assert res.stderr.startswith(f"market-monitor: config error: mqtt broker at {url}: ")
    assert "Sup3rSecret" not in res.stderr


def test_a_minute_file_with_its_times_in_a_date_column_is_read_as_minute_bars(
    tmp_path: Path,
) -> None:
    """Minute bars whose time column is named `date`: its values carry many times of day, so
    the file is minute bars, read as the same file with the column named `datetime` is (it
    used to be read as daily bars, a session's minutes but one dropped as duplicates). A daily
    file stamped at one time of day (`2024-07-16 00:00:00`) stays daily."""
    from monitor.datafiles import DataSpec
    from monitor.minutefiles import is_minute_file, read_minutes
    from tests.conftest import DATA

    named = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
    dated = tmp_path / "spy_dated.csv"
    header, rest = named.read_text().split("\n", 1)
    dated.write_text(header.replace("datetime", "date") + "\n" + rest)
    assert is_minute_file(dated)
    got = read_minutes(DataSpec(path=str(dated), symbol="SPY"))
    assert got.height > 1000 and got.equals(read_minutes(DataSpec(path=str(named), symbol="SPY")))
    daily = tmp_path / "rut_stamped.csv"
    lines = RUT.read_text().splitlines()
    daily.write_text("\n".join([lines[0], *(f"{x[:10]} 00:00:00{x[10:]}" for x in lines[1:50])]))
    assert not is_minute_file(daily)


def test_feed_replay_says_which_rows_it_rejected(tmp_path: Path) -> None:
    """Rows of a daily file that feed-replay does not publish (a duplicate date, a negative
    close) are counted and named on stderr, as `replay` names them; the rest is published."""
    data = tmp_path / "rut.csv"
    lines = RUT.read_text().splitlines()
    bad = lines[-1].split(",")
    bad[1] = "-1"  # (the close: Date,Close,High,Low,Open,Volume)
    data.write_text("\n".join([*lines[:-1], lines[-2], ",".join(bad)]) + "\n")
    topic = f"mm-rejected-{uuid.uuid4().hex[:8]}/bars"
    res = cli_here(
        "feed-replay", "--data", f"^RUT={data}", "--from", "2026-01-01", "--topic", topic
    )
    assert res.returncode == 0, res.stderr
    said = res.stderr.splitlines()
    assert said[0] == "market-monitor: rows rejected or fixed: bad_price=1, duplicate=1"
    assert said[1].startswith("market-monitor: the first rows rejected: ")
    assert f"{data}:{len(lines)} ^RUT (duplicate)" in said[1]
    assert f"{data}:{len(lines) + 1} ^RUT (bad_price)" in said[1]
    assert said[2].startswith("published ")


def test_feed_replay_warns_of_minutes_whose_times_look_hours_off(tmp_path: Path) -> None:
    """SPY's minutes of 2024-03-08 written as naive UTC times (as pandas writes them) are read
    as New York times: feed-replay (to the local broker) says so before publishing, as
    `replay` does; the file with its offsets draws no such line."""
    import polars as pl

    from tests.conftest import DATA

    named = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
    frame = pl.read_csv(named).with_columns(
        pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%:z").dt.convert_time_zone("UTC")
    )
    naive = tmp_path / "spy_utc.csv"
    frame.with_columns(pl.col("datetime").dt.replace_time_zone(None)).write_csv(naive)
    topic = f"mm-clock-{uuid.uuid4().hex[:8]}/bars"
    for data, warned in ((naive, True), (named, False)):
        res = cli_here(
            "feed-replay", "--data", f"SPY={data}", "--to", "2024-03-08", "--topic", topic
        )
        assert res.returncode == 0, res.stderr
        assert ("warning: SPY (" in res.stderr) is warned, res.stderr
        assert "published" in res.stderr


@contextlib.contextmanager
def publishing_under_way(port: int, topic: str) -> Iterator[threading.Event]:
    """An event set when the broker on `port` delivers the second message on `topic`
    (subscribed before this yields): a publisher is under way then, however long it took to
    start, and, publishing one at a time with QoS 1, has the first acknowledged (the broker
    may deliver a message before its publisher has the acknowledgement)."""
    import paho.mqtt.client as paho

    got, subscribed = threading.Event(), threading.Event()
    seen: list[object] = []

    def on_message(*_: object) -> None:
        seen.append(None)
        if len(seen) >= 2:
            got.set()

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        yield got
    finally:
        sub.loop_stop()
        sub.disconnect()


class ResettingRelay:
    """A TCP relay to the broker (in threads) whose `reset` ends the client's connection with a
    TCP reset, not a close: what a broker host going down can leave the client with."""

    def __init__(self, target: int) -> None:
        import socket
        import threading

        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.clients.append(client)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: object, dst: object) -> None:
        import contextlib
        import socket

        assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def reset(self) -> None:
        import socket
        import struct

        self.server.close()
        for client in self.clients:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()


@pytest.mark.parametrize("loss", ["killed", "reset"])
def test_a_broker_lost_mid_run_says_how_far_it_got_and_how_to_go_on(
    tmp_path: Path, loss: str
) -> None:
    """The broker dies (or its host: the connection reset) while feed-replay publishes 3,000
    ticks at 40 a second: it exits 69 with one line saying the connection was lost, how many
    it published, the last one's time and the --from to run again with, and no asyncio
    traceback. Before, it said only 'The client is not currently connected' (or 'Operation
    timed out'), with no way to resume; and a reset had the MQTT client's own "failed to
    receive on socket: [Errno 104] Connection reset by peer" first, written by Python's
    last-resort log handler."""
    import subprocess
    import sys

    from tests.test_commands import ROOT

    rows = [f"2024-07-16 10:{k // 60:02d}:{k % 60:02d},AAA,10.0,100,t{k}" for k in range(3000)]
    ticks = tmp_path / "ticks.csv"
    ticks.write_text("ts,symbol,price,size,id\n" + "\n".join(rows) + "\n")
    with MosquittoServer(tmp_path / "broker") as broker:
        relay = ResettingRelay(broker.port) if loss == "reset" else None
        url = f"mqtt://127.0.0.1:{relay.port if relay else broker.port}"
        args = ["--data", f"AAA={ticks}", "--url", url, "--rate", "40", "--qos", "1"]
        with publishing_under_way(broker.port, "t/ticks") as publishing:
            run = subprocess.Popen(
                [sys.executable, "-m", "monitor", "feed-replay", *args, "--topic", "t/ticks"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            assert publishing.wait(60)  # (a fixed 1.5 s was too short on a loaded machine)
        if relay is not None:
            relay.reset()
        else:
            broker.kill()
        _, err = run.communicate(timeout=60)
    assert run.returncode == 69, err
    assert err.startswith(f"market-monitor: mqtt broker at {url}: connection lost ("), err
    assert " of 3000 messages, the last of 2024-07-16T14:0" in err
    assert "to go on, run again with --from 2024-07-16 " in err
    assert (err.count("\n"), "Traceback" in err, "never retrieved" in err) == (1, False, False)


def test_ctrl_c_mid_run_says_how_far_it_got_and_how_to_go_on(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while feed-replay publishes 3,000 ticks at 20 a second (more than a
    slow machine gets through before the signal): it exits 130 with the line a lost broker
    gives (how many it published, the last one's time, the --from to run again with) and one
    saying it was interrupted. Before, a KeyboardInterrupt traceback out of asyncio's runner,
    and no way to tell where to resume."""
    import signal
    import subprocess
    import sys

    from tests.test_commands import ROOT

    rows = [f"2024-07-16 10:{k // 60:02d}:{k % 60:02d},AAA,10.0,100,t{k}" for k in range(3000)]
    ticks = tmp_path / "ticks.csv"
    ticks.write_text("ts,symbol,price,size,id\n" + "\n".join(rows) + "\n")
    topic = f"feeds_test/replay/{uuid.uuid4().hex}"
    args = ["--data", f"AAA={ticks}", "--rate", "20", "--qos", "1", "--topic", topic]
    with publishing_under_way(1883, topic) as publishing, subprocess.Popen(
        [sys.executable, "-m", "monitor", "feed-replay", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as run:  # fmt: skip
        assert publishing.wait(60)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    stopped, interrupted = err.splitlines()
    assert stopped.startswith("market-monitor: stopped: published "), err
    assert " of 3000 messages, the last of 2024-07-16T14:0" in stopped
    assert "to go on, run again with --from 2024-07-16 " in stopped
    assert interrupted == "market-monitor: interrupted"


def test_daily_bars_before_minute_bars_do_not_hold_up_a_paced_publish() -> None:
    """With --speed, the daily bars (untimed) go out first and the minute bars follow paced by
    their own times: before, the first minute bar waited its epoch time since 1970 divided by
    the speed (33 days at --speed 600) after the last daily bar, and nothing more was sent."""
    import asyncio

    import aiomqtt

    from monitor.feed_replay import publish

    topic = f"feeds_test/replay/{uuid.uuid4().hex}"
    minute = 1_710_000_000_000  # (2024-03-09T16:00Z, epoch ms)
    messages = [(0, b"d1"), (0, b"d2"), (minute, b"m1"), (minute + 60_000, b"m2")]

    async def run() -> list[bytes]:
        async with aiomqtt.Client("127.0.0.1", 1883) as sub:
            await sub.subscribe(topic, qos=1)
            await asyncio.wait_for(
                publish("mqtt://127.0.0.1:1883", topic, messages, qos=1, rate=0, speed=600), 30
            )
            got: list[bytes] = []
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    got.append(message.payload)  # type: ignore[arg-type]
                    if len(got) == len(messages):
                        return got
        return got

    assert asyncio.run(run()) == [b"d1", b"d2", b"m1", b"m2"]
