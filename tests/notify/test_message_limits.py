"""Messages made to fit each service and read right on it: a group too long for a message lists
fewer alerts (and says how many more) instead of being cut mid-sentence; a one-alert message
does not repeat its title; a service Apprise sends as plain text gets plain text."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import msgspec
import pytest

from monitor.core.model import Alert
from monitor.notify.compose import body_format
from monitor.notify.config import ReceiverConfig
from monitor.notify.delivery import AppriseSender
from monitor.notify.render import LIST_LIMIT, Message, history_line, render
from monitor.notify.senders import (
    DISCORD_MAX_CHARS,
    SLACK_MAX_CHARS,
    TELEGRAM_MAX_CHARS,
    DiscordSender,
    SlackSender,
    TelegramSender,
)
from tests.notify.conftest import alert
from tests.notify.servers import WebhookServer


def group(n: int, words: int = 12) -> list[Alert]:
    """`n` alerts of one rule and session with texts of some length (and an `&` each)."""
    return [
        msgspec.structs.replace(
            alert(i), text=f"SC{i:03d} & co rose 12.0% on 4.1x its average volume" + " x" * words
        )
        for i in range(n)
    ]


def message(alerts: list[Alert], fmt: str = "markdown") -> Message:
    title, body = render(alerts, fmt)  # type: ignore[arg-type]
    return Message(title, body, fmt, alerts=tuple(alerts))  # type: ignore[arg-type]


def listed(text: str, total: int) -> int:
    """How many alerts a group's text lists, checked against its "and N more"."""
    shown = len(re.findall(r"SC\d{3} ", text))
    more = re.search(r"and (\d+) more", text)
    assert (int(more.group(1)) if more else 0) == total - shown, text
    return shown


@pytest.mark.parametrize("n", [14, 20, 50, 500])
def test_a_discord_group_fits_and_says_how_many_more(n: int) -> None:
    """Groups of 14 to 500 alerts fit Discord's 2,000 characters whole: as many listed as fit,
    then "and N more" and the shared history line. They used to be cut at 2,000 mid-line,
    without either."""
    alerts = group(n)
    (post,) = DiscordSender("discord://1/tok").posts(message(alerts))
    assert post.json is not None
    content = post.json["content"]
    assert len(content) <= DISCORD_MAX_CHARS and not content.endswith("…")
    shown = listed(content, n)
    assert 1 <= shown <= LIST_LIMIT
    assert content.endswith(f"\n_{history_line(alerts[0])}_")
    if n > shown:  # (the most that fit: one more line would not)
        bigger = render(alerts, "markdown", listed=shown + 1)[1]
        assert len(f"**{alerts[0].title}**\n{bigger}") > DISCORD_MAX_CHARS or shown == LIST_LIMIT


def test_a_telegram_group_is_measured_as_shown_and_fits() -> None:
    """Telegram counts 4,096 characters as shown (tags parsed, `&amp;` one character): a group
    of 500 long lines lists as many as fit, with "and N more" and its history line, as HTML."""
    alerts = group(500, words=120)
    (post, *_) = TelegramSender("tgram://bot123:abc/-100").posts(message(alerts))
    assert post.json is not None and post.json["parse_mode"] == "HTML"
    text = post.json["text"]
    shown_text = html.unescape(re.sub(r"<[^>]*>", "", text))
    assert len(shown_text) <= TELEGRAM_MAX_CHARS
    assert 1 <= listed(shown_text, 500) < LIST_LIMIT
    assert "<b>SC00</b>" in text and history_line(alerts[0]) in shown_text


def test_a_telegram_message_too_long_anyway_goes_as_plain_text() -> None:
    """A one-alert message past the limit (a long template) goes as plain text, cut short: no
    Markdown markers or backslashes shown."""
    long = msgspec.structs.replace(alert(1), text="SC01 rose_fast " * 400)
    title, body = render([long], "markdown")
    (post, *_) = TelegramSender("tgram://bot123:abc/-100").posts(
        Message(title, body, "markdown", alerts=(long,))
    )
    assert post.json is not None
    text = post.json["text"]
    assert len(text) <= TELEGRAM_MAX_CHARS and text.endswith("…")
    assert "**" not in text and "\\" not in text and text.startswith(long.title)


def receiver(url: str, fmt: str = "auto") -> ReceiverConfig:
    return msgspec.convert({"name": "r", "url": url, "format": fmt}, ReceiverConfig)


def test_a_service_apprise_sends_as_plain_text_gets_plain_text() -> None:
    """`format = "auto"`: plain text for ntfy, Gotify, Signal (Apprise sends them text and has
    no Markdown-to-text conversion: `**` and `\\#` used to show); Markdown for the chat
    services and json://, HTML for email; a format set in the config is kept."""
    auto = {
        url: body_format(receiver(url), url)
        for url in (
            "ntfy://127.0.0.1/alerts",
            "gotify://127.0.0.1/token",
            "signal://127.0.0.1/+15551234567/+15557654321",
            "tgram://123:abc/1",
            "discord://1/tok",
            "json://127.0.0.1/x",
            "mattermost://127.0.0.1/token",
            "mailto://user:pw@example.com",
        )
    }
    assert auto == {
        "ntfy://127.0.0.1/alerts": "text",
        "gotify://127.0.0.1/token": "text",
        "signal://127.0.0.1/+15551234567/+15557654321": "text",
        "tgram://123:abc/1": "markdown",
        "discord://1/tok": "markdown",
        "json://127.0.0.1/x": "markdown",
        "mattermost://127.0.0.1/token": "markdown",
        "mailto://user:pw@example.com": "html",
    }
    assert body_format(receiver("ntfy://h/t", "markdown"), "ntfy://h/t") == "markdown"


async def test_an_apprise_service_gets_the_title_once_and_a_group_that_fits() -> None:
    """Through Apprise (ntfy, at a local server): a one-alert message's body starts with its
    title, so no title goes beside it (most services showed it twice); a group is made to fit
    the service's limit (here 1,000 characters), listing fewer alerts, with "and N more"."""
    async with WebhookServer() as hooks:
        sender = AppriseSender(f"ntfy://127.0.0.1:{hooks.port}/alerts")
        one = alert(1)
        title, body = render([one], "text")
        await sender.send(Message(title, body, "text", alerts=(one,)))
        sender.max_chars = 1_000
        alerts = group(20)
        await sender.send(message(alerts, "text"))
        await sender.aclose()
    (single, grouped) = [b for _, b, _, _ in hooks.received]
    assert "title" not in single and single["message"].startswith(one.title)
    assert grouped["title"] == "20 symbols fired squeeze.daily on 2024-07-16"
    assert len(grouped["title"]) + len(grouped["message"]) <= 800
    assert 1 <= listed(grouped["message"], 20) < 20
    assert grouped["message"].endswith(history_line(alerts[0]))


def test_mail_through_apprise_keeps_its_subject() -> None:
    """A one-alert message (its body starts with the title) through Apprise: a mail service's
    plugin (mailto, SendGrid, Mailgun, ...) is given the title, its subject; a chat service's
    (Teams workflows, ntfy) is not, or it would show the title twice. SendGrid and Mailgun
    used to get none: "<no subject>"."""
    one = alert(1)
    title, body = render([one], "markdown")
    given: dict[str, str] = {}
    urls = {
        "mailto": "mailto://u:p@example.com",
        "sendgrid": "sendgrid://abcd:user@example.com/to@example.com",
        "mailgun": "mailgun://user@example.com/abcdef",
        "workflows": "workflows://h:443/a/b/c/d/e",
        "ntfy": "ntfy://127.0.0.1/alerts",
    }
    for name, url in urls.items():
        sender = AppriseSender(url)

        def notify(name: str = name, **kwargs: Any) -> bool:
            given[name] = kwargs["title"]
            return True

        sender._apprise.notify = notify  # type: ignore[method-assign]
        asyncio.run(sender.send(Message(title, body, "markdown", alerts=(one,))))
    assert given == {
        "mailto": one.title,
        "sendgrid": one.title,
        "mailgun": one.title,
        "workflows": "",
        "ntfy": "",
    }


def test_a_long_message_without_alerts_is_cut_at_a_line() -> None:
    """A message with no alerts to list fewer of (the digest) that is too long for Discord
    is cut after its last whole line that fits, then an ellipsis: not in the middle of an
    item."""
    lines = [f"- SC{i:03d} squeeze.daily: rose 12.0% on 4.1x its average volume" for i in range(60)]
    body = "\n".join(lines)
    (post,) = DiscordSender("discord://1/tok").posts(Message("Digest", body, "text"))
    assert post.json is not None
    content = post.json["content"]
    assert len(content) <= DISCORD_MAX_CHARS and content.endswith("…")
    kept = content.removesuffix("…").split("\n")[1:]  # (after the title)
    assert kept == [x.replace("_", "\\_") for x in lines[: len(kept)]] and len(kept) > 20


def test_a_slack_message_too_long_is_cut_to_slack_s_limit() -> None:
    """One alert with a 75,000-character text (its `&`, `<` and `_` escaped for mrkdwn, which
    makes it longer still) goes to Slack as at most 40,000 characters, cut at a line and never
    inside an entity, then an ellipsis. It used to go whole: 115,000 characters that Slack
    truncates where it likes."""
    long = msgspec.structs.replace(alert(1), text="SC01 & <co> _up_ fast\n" * 3_500)
    assert len(long.text) > 75_000
    title, body = render([long], "markdown")
    posts = SlackSender("slack://T0/B0/secret/#a/#b").posts(
        Message(title, body, "markdown", alerts=(long,))
    )
    assert len(posts) == 2
    for post in posts:
        assert post.json is not None
        text = post.json["text"]
        assert len(text) <= SLACK_MAX_CHARS and text.endswith("…")
        assert not re.search(r"&[a-z]*…$", text)
        assert text.removesuffix("…").endswith("fast")
        assert "SC01 &amp; &lt;co&gt;" in text


def test_a_slack_group_fits_and_says_how_many_more() -> None:
    """A group of 500 alerts with long texts lists as many as fit Slack's 40,000 characters,
    then "and N more" and the shared history line: not cut mid-line."""
    alerts = group(500, words=4_000)
    (post,) = SlackSender("slack://T0/B0/secret").posts(message(alerts))
    assert post.json is not None
    text = post.json["text"]
    assert len(text) <= SLACK_MAX_CHARS and not text.endswith("…")
    assert 1 <= listed(text, 500) < LIST_LIMIT
