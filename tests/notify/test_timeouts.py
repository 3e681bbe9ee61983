"""A receiver's `timeout_s` holds for Apprise URLs too (as their socket timeouts): a mail server
that accepts the connection and never answers fails the attempt after `timeout_s` (retried like
any transient failure), and SIGTERM during such a send does not wait Apprise's own 15 s."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from monitor.core.backoff import Backoff
from monitor.notify.config import RedisSection
from monitor.notify.delivery import Courier, make_sender, with_socket_timeouts
from monitor.notify.inbox import section_client
from monitor.notify.render import Message
from tests.conftest import ROOT
from tests.notify.conftest import alert, publish
from tests.notify.test_service import until


class SilentServer:
    """A TCP server on loopback that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)  # kept open, unanswered, until the server closes

    def mail_url(self) -> str:
        """A mailto:// URL to this server (no TLS, so the wait is for the SMTP greeting)."""
        return (
            f"mailto://127.0.0.1:{self.port}?from=monitor@example.com&to=ops@example.com"
            "&mode=insecure"
        )


@asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    """A SilentServer for the block."""
    silent = SilentServer()
    server = await asyncio.start_server(silent._accept, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    try:
        yield silent
    finally:
        for w in silent._writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_a_mail_server_that_never_answers_fails_the_attempt_after_timeout_s() -> None:
    """With timeout_s = 0.5 a silent SMTP server fails the send in about half a second (not
    Apprise's 15 s), as ChannelUnavailable: a failure the courier retries, then dead-letters."""
    async with silent_server() as silent:
        sender = make_sender(silent.mail_url(), "auto", 0.5)
        courier = Courier("email", sender, backoff=Backoff(0.01, 0.01, jitter=0), max_attempts=1)
        started = time.monotonic()
        async with asyncio.timeout(6):
            outcome = await courier.deliver(Message("title", "body", "text"))
        took = time.monotonic() - started
        await sender.aclose()
    assert (outcome.ok, outcome.attempts, silent.connections) == (False, 1, 1)
    assert outcome.reason.startswith(
        "gave up after 1 attempts: apprise could not notify mailto://127.0.0.1/…: "
    )
    assert "timed out" in outcome.reason
    assert 0.4 < took < 2.0


def test_apprise_urls_get_timeout_s_as_their_socket_timeouts() -> None:
    """`cto` and `rto` are added with the receiver's timeout_s unless the URL has its own."""
    assert [
        with_socket_timeouts("ntfy://topic", 2.0),
        with_socket_timeouts("mailto://h?to=a@b.c&cto=30", 2.5),
        with_socket_timeouts("mailto://h?RTO=1&cto=30", 2.5),
    ] == [
        "ntfy://topic?cto=2&rto=2",
        "mailto://h?to=a@b.c&cto=30&rto=2.5",
        "mailto://h?RTO=1&cto=30",
    ]


async def sigterm_mid_send(
    stream: str, tmp_path: Path, timeout_s: float, delivery: str = ""
) -> tuple[int, float, list[str]]:
    """A notifier process sending one alert by mail to a silent SMTP server (`timeout_s`,
    `[delivery]` lines added), SIGTERMed once the server has the connection: its exit code,
    seconds from the signal to its exit (at most 20), and the events it logged."""
    async with silent_server() as silent:
        conf = tmp_path / "notify.toml"
        conf.write_text(
            f'[redis]\nstream = "{stream}"\nconsumer = "c1"\nstart = "0"\nblock_ms = 100\n'
            f"[delivery]\nmax_attempts = 1\n{delivery}"
            f'[[receivers]]\nname = "email"\nurl = "{silent.mail_url()}"\n'
            f"timeout_s = {timeout_s}\n"
            '[route]\nreceivers = ["email"]\ngroup_wait_s = 0\n[log]\njson = true\n'
        )
        await publish(stream, [alert(1)])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor.notify", "notify", "--config", str(conf),
            cwd=ROOT, env=dict(os.environ),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            await until(lambda: silent.connections == 1, 20)
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            async with asyncio.timeout(20):
                _, err = await proc.communicate()
            took = time.monotonic() - started
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    lines = err.decode().splitlines()
    return proc.returncode, took, [json.loads(x)["event"] for x in lines if x.startswith("{")]


@pytest.mark.integration
async def test_sigterm_during_a_hung_mail_send_stops_the_notifier_quickly(
    stream: str, tmp_path: Path
) -> None:
    """The notifier process, SIGTERMed while Apprise waits on a silent SMTP server with
    timeout_s = 1, exits 0 within a few seconds, not when the server would answer (never: the
    wait gives up at 20 s). (The bound is loose: a loaded machine took 3.3 s once.)"""
    code, took, _ = await sigterm_mid_send(stream, tmp_path, timeout_s=1)
    assert code == 0
    assert took < 10.0


async def test_a_send_hung_past_the_stop_grace_does_not_hold_the_process(
    stream: str, tmp_path: Path
) -> None:
    """SIGTERMed while Apprise waits on a silent SMTP server for up to 30 s (timeout_s), with
    `[delivery] stop_grace_s = 1`: the send is cut off after the grace and the process exits
    then, not when the hung send's thread gives up (before, the executor's thread held it
    past a unit's TimeoutStopSec: it then took the 20 s this waits, and more)."""
    code, _, events = await sigterm_mid_send(stream, tmp_path, 30, "stop_grace_s = 1\n")
    assert code == 0
    assert "delivery_abandoned" in events and events[-1] == "notifier_stopped"


@pytest.mark.integration
async def test_a_read_blocked_longer_than_ten_seconds_is_no_outage() -> None:
    """`[redis] block_ms = 11000`: the notifier's client waits out an idle XREADGROUP blocked
    that long and gets an empty answer (its fixed 10 s socket timeout took each such read for
    an outage: redis_unavailable TimeoutError and a reconnect every ~11 s)."""
    stream = f"mm-block-{uuid.uuid4().hex[:8]}"
    section = RedisSection(url="redis://127.0.0.1:6379/0", stream=stream, block_ms=11_000)
    client = section_client(section)
    try:
        await client.xgroup_create(stream, "g", id="$", mkstream=True)
        started = time.monotonic()
        got = await client.xreadgroup("g", "c", {stream: ">"}, block=section.block_ms)
        assert (got, time.monotonic() - started >= 11.0) == ([], True)
    finally:
        await client.delete(stream)
        await client.aclose()
