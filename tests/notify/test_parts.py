"""Config, rendering, the HTTP sender's status handling, the digest and the CLI parsers."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from pathlib import Path

import msgspec
import polars as pl
import pytest

from monitor.core.backoff import Backoff
from monitor.credentials import Secret
from monitor.errors import ConfigError
from monitor.notify.cli import add_parsers
from monitor.notify.config import DigestSection, TemplatesSection, load, parse, resolve_url
from monitor.notify.delivery import Courier, HttpJsonSender, Outcome
from monitor.notify.digest import build_digest
from monitor.notify.main import send_test
from monitor.notify.render import Message, escape, render
from monitor.waiting import retry_after
from tests.notify.conftest import RUT_ALERT, alert
from tests.notify.servers import WebhookServer

ROOT = Path(__file__).resolve().parents[2]


def test_url_placeholders_come_from_the_environment_and_stay_masked() -> None:
    """`{SLACK_TOKEN}` is filled from the environment; the result never shows in a repr."""
    config = parse(
        {
            "receivers": [{"name": "chat", "url": "slack://{SLACK_TOKEN}/#alerts"}],
            "route": {"receivers": ["chat"]},
        },
        environ={"SLACK_TOKEN": "a/b/c"},
    )
    url = resolve_url(config.receivers[0], "receivers[0].url", {"SLACK_TOKEN": "a/b/c"})
    assert (url, repr(url), isinstance(url, Secret)) == (
        "slack://a/b/c/#alerts",
        "Secret('***')",
        True,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {
                "receivers": [{"name": "chat", "url": "slack://{NOPE}"}],
                "route": {"receivers": ["chat"]},
            },
            "config: receivers[0].url: environment variable NOPE is not set",
        ),
        (
            {"receivers": [{"name": "chat", "url": "json://x"}], "route": {"receivers": ["mail"]}},
            "config: route.receivers: no receiver named 'mail'",
        ),
        (
            {"receivers": [{"name": "chat", "url": "json://x", "colour": 1}]},
            "config: receivers[0]: Object contains unknown field `colour`; it takes api_base, "
            "attach_chart, format, max_attempts, min_interval_s, name, quiet_hours, sender, "
            "timeout_s, url, url_env, url_file",
        ),
        (
            {
                "receivers": [
                    {
                        "name": "chat",
                        "url": "json://x",
                        "quiet_hours": {"start": "22h", "end": "07:00"},
                    }
                ],
                "route": {"receivers": ["chat"]},
            },
            "config: receivers[0].quiet_hours.start: not an HH:MM time: '22h'",
        ),
    ],
)
def test_config_errors_name_the_field(raw: dict[str, object], message: str) -> None:
    """Bad notifier configs raise ConfigError naming the field path."""
    with pytest.raises(ConfigError) as err:
        parse(raw, environ={})
    assert str(err.value) == message


def test_example_config_loads() -> None:
    """config/notify.example.toml is a valid config once its secrets are in the environment."""
    env = {"SLACK_TOKEN": "T/B/C", "SMTP_USER": "u", "SMTP_PASSWORD": "p"}
    config = load(ROOT / "config" / "notify.example.toml", environ=env)
    assert [r.name for r in config.receivers] == ["chat", "email", "webhook"]


def test_markdown_and_html_escape_names_and_templates_override() -> None:
    """Symbols with Markdown or HTML specials are escaped; a title/markdown template is used."""
    a = msgspec.structs.replace(alert(1, symbol="A_B*<x>"), title="A_B*<x> & co", history=None)
    assert escape("A_B*<x>", "markdown") == "A\\_B\\*\\<x\\>"
    assert render([a], "html")[1].split("\n")[0] == "<h3>A_B*&lt;x&gt; &amp; co</h3>"
    t = TemplatesSection(title="[$severity] $symbol", markdown="$symbol: $text")
    assert render([a], "markdown", t) == (
        "[notice] A_B*<x>",
        "A\\_B\\*\\<x\\>: A\\_B\\*\\<x\\> rose 12.0% on 4.1x its average volume.",
    )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After in seconds or as an HTTP date becomes seconds; junk becomes None."""
    assert [
        retry_after("3"),
        retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0),
        retry_after("soon"),
        retry_after(None),
    ] == [3.0, 6.0, None, None]


async def test_http_sender_honours_429_retry_after_and_gives_up_on_400() -> None:
    """A 429 with Retry-After: 1 is retried after a second; a 400 fails at once, unretried."""
    async with WebhookServer() as hooks:
        hooks.fail("/limited", 429, headers={"Retry-After": "1"})
        hooks.always("/bad", 400)
        backoff = Backoff(0.01, 0.02, jitter=0)
        msg = Message("t", "b", "markdown")
        outcomes = []
        for path in ("/limited", "/bad"):
            sender = HttpJsonSender(hooks.url(path))
            started = time.monotonic()
            outcomes.append(
                await Courier(path, sender, backoff=backoff, max_attempts=5).deliver(msg)
            )
            await sender.aclose()
            if path == "/limited":
                assert time.monotonic() - started >= 1.0
    assert outcomes == [Outcome(True, 2), Outcome(False, 1, "json://127.0.0.1/…: HTTP 400")]


async def test_notify_test_sends_a_sample_to_one_receiver() -> None:
    """`notify test --receiver chat` posts the sample alert to chat only."""
    async with WebhookServer() as hooks:
        config = parse(
            {
                "receivers": [
                    {"name": "chat", "url": hooks.url("/chat")},
                    {"name": "other", "url": hooks.url("/other")},
                ],
                "route": {"receivers": ["chat", "other"]},
            },
            environ={},
        )
        outcome = await send_test(config, "chat")
    assert outcome == Outcome(True, 1)
    assert [(p, b["title"]) for p, b, _, _ in hooks.received] == [
        ("/chat", "Russell 2000: 5 straight sessions up more than 1.0% (test message)")
    ]


def test_digest_states_the_rally_and_lists_the_alerts(bars_file: Path) -> None:
    """The digest compares IWM with QQQ over 1, 5 and 21 sessions and lists the day's alerts."""
    bars = pl.read_parquet(bars_file)
    d = build_digest([RUT_ALERT], bars, DigestSection(large=["QQQ"]), dt.date(2024, 7, 31))
    iwm = bars.filter(pl.col("symbol") == "IWM").get_column("close")
    qqq = bars.filter(pl.col("symbol") == "QQQ").get_column("close")
    i1, q1 = iwm[-1] / iwm[-2] - 1, qqq[-1] / qqq[-2] - 1
    assert d.title == "Market monitor digest, 2024-07-31: 1 alerts"
    lines = d.bodies["text"].split("\n")
    assert lines[0] == "The small-cap rally"
    assert lines[1].startswith(f"- IWM against QQQ: 1d {i1:+.1%} vs {q1:+.1%} ({i1 - q1:+.1%});")
    assert lines[-2:] == [
        "Alerts (streak.daily ×1)",
        "- ^RUT: Russell 2000: 5 straight sessions up more than 1.0%",
    ]


def test_cli_parsers_take_config_before_or_after_the_subcommand() -> None:
    """`notify test`, `silence add` and `silence expire` parse with --config in either place."""
    p = argparse.ArgumentParser()
    add_parsers(p.add_subparsers(dest="command"))
    a = p.parse_args(["notify", "test", "--config", "n.toml", "--receiver", "chat"])
    b = p.parse_args(
        [
            "silence",
            "--config",
            "n.toml",
            "add",
            "--rule",
            "squeeze.*",
            "--for",
            "2h",
            "--comment",
            "earnings",
        ]
    )
    c = p.parse_args(["notify", "--config", "n.toml"])
    assert (a.command, a.notify_command, a.config, a.receiver) == (
        "notify",
        "test",
        "n.toml",
        "chat",
    )
    assert (b.silence_command, b.rule, b.symbol, b.duration, b.comment, b.config) == (
        "add",
        "squeeze.*",
        None,
        "2h",
        "earnings",
        "n.toml",
    )
    assert (c.notify_command, c.config) == (None, "n.toml")
    assert asyncio.iscoroutinefunction(send_test)
