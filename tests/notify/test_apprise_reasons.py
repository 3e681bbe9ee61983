"""Why an Apprise send failed, told: Apprise logs the cause (at DEBUG) and answers only False;
the notifier captures that log for the send and puts the cause in its log line and the dead
letter, the URL's secrets masked, and prints none of Apprise's DEBUG lines."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib

import apprise
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from tests.conftest import ROOT
from tests.notify.conftest import RUT_ALERT, publish
from tests.notify.servers import SmtpSink
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration

CAUSE = "SMTP AUTH extension not supported by server"


def login_url(smtp: SmtpSink) -> str:
    """A mailto:// URL that logs in, to a server that offers no AUTH."""
    return smtp.url().replace("mailto://", "mailto://bobuser:Sup3rSecretPw@")


async def test_a_mail_failure_gives_smtp_s_reason_in_the_log_and_the_dead_letter(
    stream: str,
) -> None:
    """A mail server without AUTH, a URL with a login: the retry log line and the dead letter
    say `SMTP AUTH extension not supported by server` (they used to say only "apprise could
    not notify mailto://127.0.0.1/…"), and neither shows the user or the password."""
    with SmtpSink() as smtp:
        config = make_config(
            stream,
            [{"name": "mail", "url": login_url(smtp), "max_attempts": 2}],
            delivery={"backoff_base_s": 0.01, "backoff_cap_s": 0.01, "jitter": 0.0},
        )
        await publish(stream, [RUT_ALERT])
        with capture_logs() as logged:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 1)
    client = aioredis.Redis()
    ((_, letter),) = await client.xrange(f"{stream}:dead")
    await client.aclose()
    reason = letter[b"reason"].decode()
    assert reason.startswith("gave up after 2 attempts: apprise could not notify mailto://127")
    assert CAUSE in reason
    (retry,) = [e for e in logged if e["event"] == "delivery_retry"]
    assert CAUSE in retry["error"]
    shown = reason + repr(logged)
    assert "Sup3rSecretPw" not in shown and "bobuser" not in shown
    assert smtp.messages == []


def test_apprise_s_debug_lines_are_not_printed() -> None:
    """While a send runs, Apprise logs at DEBUG (for its reason to be captured); with the
    service's logging set up, none of those lines reaches stderr: only its warning does."""
    with SmtpSink() as smtp:
        script = (
            "import asyncio\n"
            "from monitor import logs\n"
            "from monitor.notify.delivery import AppriseSender, ChannelUnavailable\n"
            "from monitor.notify.render import Message\n"
            "logs.configure(level='info', json=True)\n"
            f"sender = AppriseSender({login_url(smtp)!r}, 2.0)\n"
            "try:\n"
            "    asyncio.run(sender.send(Message('t', 'b', 'text')))\n"
            "except ChannelUnavailable as exc:\n"
            "    print(exc)\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        )  # fmt: skip
    assert CAUSE in res.stdout
    assert "Connection error while submitting email" in res.stderr  # (Apprise's own warning)
    assert "Socket Exception" not in res.stderr and CAUSE not in res.stderr
    assert "Sup3rSecretPw" not in res.stdout + res.stderr


def test_the_declared_apprise_is_one_whose_notify_captures_its_log() -> None:
    """pyproject.toml asks for an Apprise whose notify() takes log_callback and log_level
    (2.0 on), as the sender calls it: with the 1.9 it allowed, every Apprise send raised a
    TypeError (1.x's notify has neither)."""
    takes = inspect.signature(apprise.Apprise.notify).parameters
    assert {"log_callback", "log_level"} <= set(takes)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (floor,) = [m[1] for d in deps if (m := re.fullmatch(r"apprise>=([0-9.]+)", d))]
    assert tuple(int(n) for n in floor.split(".")) >= (2, 0)
