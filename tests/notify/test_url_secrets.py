"""`{NAME}` placeholders in receiver URLs: values with URL-reserved characters reach the provider
as they are (percent-encoded in the URL, decoded by Apprise and by our senders); a lowercase
`{name}`, no placeholder, is warned of."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.notify import config as ncfg
from monitor.notify.config import fill_placeholders, parse, resolve_url
from monitor.notify.delivery import make_sender
from monitor.notify.render import Message
from monitor.notify.service import Notifier
from tests.cli_here import cli_here
from tests.notify.servers import SmtpSink, WebhookServer

PASSWORD = "p@ss/w#rd:%?&x=1 +"  # every character that would end or split a URL part
USER = "desk@example.com"
MESSAGE = Message("title", "body", "text")


@pytest.mark.parametrize("kind", ["http", "apprise"])
async def test_webhook_password_with_reserved_characters_is_sent_as_it_is(kind: str) -> None:
    """`json://bob:{HOOK_PASSWORD}@host/path` with a password holding @ / # : % ? & + and a space
    sends Basic auth for exactly that password, through our sender and through Apprise's."""
    async with WebhookServer() as hooks:
        env = {"HOOK_PASSWORD": PASSWORD}
        config = parse(
            {
                "receivers": [
                    {
                        "name": "hook",
                        "url": f"json://bob:{{HOOK_PASSWORD}}@127.0.0.1:{hooks.port}/auth",
                        "sender": kind,
                    }
                ],
                "route": {"receivers": ["hook"]},
            },
            environ=env,
        )
        url = resolve_url(config.receivers[0], "receivers[0].url", env)
        sender = make_sender(url, kind, 5.0)
        await sender.send(MESSAGE)
        await sender.aclose()
    expected = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    assert [(path, h.get("authorization")) for path, h in hooks.headers] == [("/auth", expected)]


async def test_smtp_login_gets_the_user_and_password_from_the_environment() -> None:
    """`mailto://{SMTP_USER}:{SMTP_PASSWORD}@host` logs in to the SMTP server with the user (an
    address, with its @) and the password exactly as the environment has them."""
    env = {"SMTP_USER": USER, "SMTP_PASSWORD": PASSWORD}
    with SmtpSink(logins=True) as smtp:
        config = parse(
            {
                "receivers": [
                    {
                        "name": "email",
                        "url": f"mailto://{{SMTP_USER}}:{{SMTP_PASSWORD}}@127.0.0.1:{smtp.port}"
                        "?from=monitor@example.com&to=ops@example.com&mode=insecure",
                    }
                ],
                "route": {"receivers": ["email"]},
            },
            environ=env,
        )
        url = resolve_url(config.receivers[0], "receivers[0].url", env)
        sender = make_sender(url, "auto", 5.0)
        await sender.send(MESSAGE)
        await sender.aclose()
    assert (smtp.logins, [m["To"] for m in smtp.messages]) == (
        [(USER, PASSWORD)],
        ["ops@example.com"],
    )


@pytest.mark.parametrize(
    ("template", "filled"),
    [
        # credentials and query values: every reserved character encoded
        ("mailtos://{U}:{P}@smtp.example.com?to={TO}",
         "mailtos://a%40b.c:x%2Fy%40z%23w%3Av@smtp.example.com?to=o%40p.q%2Cr%40s.t"),
        # host and path: `/` and `:` kept, so one variable may be host:port or several segments
        ("slack://{SLACK_TOKEN}/#alerts", "slack://T000/B000/XXXX/#alerts"),
        ("json://{HOST}/alerts", "json://127.0.0.1:8080/alerts"),
        ("tgram://{TG}/{CHAT}", "tgram://123:ABC/%40channel%23x"),
        # a placeholder in the scheme is the whole URL
        ("{HOOK}", "json://u:p@h:1/x?a=b"),
    ],
)  # fmt: skip
def test_placeholders_are_encoded_for_where_they_sit(template: str, filled: str) -> None:
    """A value is percent-encoded by position: wholly in user info and query, all but `/` and
    `:` in host and path, not at all when it stands for the scheme (the whole URL)."""
    env = {
        "U": "a@b.c",
        "P": "x/y@z#w:v",
        "TO": "o@p.q,r@s.t",
        "SLACK_TOKEN": "T000/B000/XXXX",
        "HOST": "127.0.0.1:8080",
        "TG": "123:ABC",
        "CHAT": "@channel#x",
        "HOOK": "json://u:p@h:1/x?a=b",
    }
    assert fill_placeholders(template, env, "receivers[0].url") == filled


def test_a_lowercase_placeholder_is_warned_of_as_sent_as_written(tmp_path: Path) -> None:
    """`{token}` in a receiver's url is no placeholder (names are upper case) and was sent as
    written without a word: `config check` warns of it (exit 0), and so does the notifier at
    start (`receiver_placeholder_unfilled`); `{TOKEN}` is filled and draws nothing."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/{token}/{TOKEN}"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    want = (
        "receivers[0].url: {token} is sent as written: a placeholder is a variable's name in"
        " upper case, {TOKEN}"
    )
    res = cli_here("config", "check", "--config", str(conf), env={"TOKEN": "t"})
    assert (res.returncode, res.stderr) == (0, f"market-monitor: warning: {want}\n")
    with capture_logs() as logs:
        Notifier(ncfg.load(conf, {"TOKEN": "t"}), environ={"TOKEN": "t"})
    assert [(e["event"], e["detail"]) for e in logs if e["log_level"] == "warning"] == [
        ("receiver_placeholder_unfilled", want)
    ]
