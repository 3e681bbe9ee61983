"""Telegram, Slack and Discord senders against local fakes of their APIs: rate limits honoured,
attachments where each provider takes them, permanent errors dead-lettered, tokens never shown."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import pytest
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.errors import ConfigError, DeliveryError, TransientError
from monitor.notify.config import parse, resolve_url
from monitor.notify.delivery import AppriseSender, Courier, HttpJsonSender, Outcome, make_sender
from monitor.notify.render import Message, render
from monitor.notify.senders import (
    DiscordSender,
    SlackSender,
    TelegramSender,
    UnsupportedUrl,
    discord_markdown,
    slack_mrkdwn,
    telegram_html,
)
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

TG_SECRET = "AAH-s3cret_Token"
TG = f"123456:{TG_SECRET}"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
FAST = Backoff(0.01, 0.02, jitter=0)
TITLE, BODY = render([alert(1)], "markdown")
MSG = Message(TITLE, BODY, "markdown", (("SC01.png", PNG),))


@dataclass(frozen=True)
class Seen:
    """One request the fake API answered."""

    path: str
    query: str
    content_type: str
    body: bytes
    status: int
    at: float  # time.monotonic()

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def form(self) -> dict[str, tuple[str | None, bytes]]:
        """A multipart body as {field: (filename, bytes)}."""
        head = f"Content-Type: {self.content_type}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        return {
            str(part.get_param("name", header="content-disposition")): (
                part.get_filename(),
                part.get_payload(decode=True),
            )
            for part in msg.iter_parts()
        }


class FakeApi:
    """An HTTP/1.1 server on 127.0.0.1 answering scripted replies per path, else 200."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._script: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self._server: asyncio.Server | None = None
        self.base = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def reply(
        self,
        path: str,
        status: int,
        body: dict[str, Any] | bytes = b"",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests to `path` with this."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self._script.setdefault(path, []).extend([(status, headers or {}, raw)] * times)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path, _, query = lines[0].split(" ")[1].partition("?")
                headers = {
                    k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                script = self._script.get(path)
                status, extra, answer = script.pop(0) if script else (200, {}, b'{"ok":true}')
                self.requests.append(
                    Seen(
                        path, query, headers.get("content-type", ""), body, status, time.monotonic()
                    )
                )
                more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n"
                    f"Content-Type: application/json\r\n{more}\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


TG_TEXT = (
    "<b>SC01: squeeze on volume</b>\n"
    "SC01 rose 12.0% on 4.1x its average volume.\n"
    "<i>4 earlier times since 1998; over the next 21 sessions, +6.0% on average (median +5.7%), "
    "4 of 4 up.</i>\n"
    "squeeze.daily · notice · 2024-07-16"
)


async def test_telegram_429_retry_after_is_waited_and_nothing_is_sent_twice() -> None:
    """sendPhoto answering 429 with parameters.retry_after 0.3 is retried no sooner than 0.3 s
    later; the text went once, the PNG reached sendPhoto once, and no log line shows the token."""
    async with FakeApi() as api:
        api.reply(
            f"/bot{TG}/sendPhoto",
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 0.3",
                "parameters": {"retry_after": 0.3},
            },
        )
        sender = make_sender(f"tgram://{TG}/-1001234?api_base={api.base}")
        with capture_logs() as logs:
            outcome = await Courier("tg", sender, backoff=FAST, max_attempts=3).deliver(MSG)
        await sender.aclose()
    text, limited, photo = api.requests
    assert outcome == Outcome(True, 2)
    assert [(r.path, r.status) for r in api.requests] == [
        (f"/bot{TG}/sendMessage", 200),
        (f"/bot{TG}/sendPhoto", 429),
        (f"/bot{TG}/sendPhoto", 200),
    ]
    assert photo.at - limited.at >= 0.3
    assert text.json() == {"chat_id": "-1001234", "text": TG_TEXT, "parse_mode": "HTML"}
    assert photo.form() == {"chat_id": (None, b"-1001234"), "photo": ("SC01.png", PNG)}
    assert [(e["event"], e["error"]) for e in logs] == [
        ("delivery_retry", "tgram://***: HTTP 429 Too Many Requests: retry after 0.3")
    ]
    assert TG_SECRET not in repr(logs)


async def test_slack_429_retry_after_header_is_waited() -> None:
    """A Slack webhook answering 429 with Retry-After: 0.3 gets the mrkdwn text once, no sooner
    than 0.3 s after the refusal, with the channel and bot name from the URL."""
    async with FakeApi() as api:
        hook = "/services/T000/B000/XXXX"
        api.reply(hook, 429, b"rate_limited", {"Retry-After": "0.3"})
        sender = make_sender(f"slack://monitor@T000/B000/XXXX/#alerts?api_base={api.base}")
        outcome = await Courier("slack", sender, backoff=FAST, max_attempts=3).deliver(MSG)
        await sender.aclose()
    limited, sent = api.requests
    assert (outcome, limited.path, limited.status, sent.path, sent.status) == (
        Outcome(True, 2),
        hook,
        429,
        hook,
        200,
    )
    assert sent.at - limited.at >= 0.3
    assert sent.json() == {
        "text": "*SC01: squeeze on volume*\n"
        "SC01 rose 12.0% on 4.1x its average volume.\n"
        "_4 earlier times since 1998; over the next 21 sessions, +6.0% on average (median "
        "+5.7%), 4 of 4 up._\nsqueeze.daily · notice · 2024-07-16",
        "username": "monitor",
        "channel": "#alerts",
    }


async def test_discord_429_retry_after_is_waited_and_the_chart_is_files0() -> None:
    """A Discord webhook answering 429 with JSON retry_after 0.3 gets the message once, no
    sooner than 0.3 s later, as payload_json with the PNG as files[0]."""
    async with FakeApi() as api:
        hook = "/api/webhooks/111222/tok-EN"
        api.reply(hook, 429, {"message": "You are being rate limited.", "retry_after": 0.3})
        sender = make_sender(f"discord://111222/tok-EN?api_base={api.base}")
        outcome = await Courier("discord", sender, backoff=FAST, max_attempts=3).deliver(MSG)
        await sender.aclose()
    limited, sent = api.requests
    assert (outcome, limited.status, sent.path, sent.query, sent.status) == (
        Outcome(True, 2),
        429,
        hook,
        "wait=true",
        200,
    )
    assert sent.at - limited.at >= 0.3
    form = sent.form()
    assert form["files[0]"] == ("SC01.png", PNG)
    assert json.loads(form["payload_json"][1]) == {
        "content": BODY,
        "allowed_mentions": {"parse": []},  # (a name holding @everyone pings no one)
        "attachments": [{"id": 0, "filename": "SC01.png"}],
    }


async def test_discord_exhausted_bucket_delays_the_next_send() -> None:
    """After a 200 with X-RateLimit-Remaining: 0 and Reset-After: 0.3, the next message waits
    0.3 s before its request instead of collecting a 429."""
    async with FakeApi() as api:
        hook = "/api/webhooks/111222/tok"
        api.reply(hook, 200, {}, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.3"})
        sender = DiscordSender(f"discord://111222/tok?api_base={api.base}")
        text_only = Message("t", "b", "markdown")
        await sender.send(text_only)
        await sender.send(text_only)
        await sender.aclose()
    first, second = api.requests
    sent = {"content": "**t**\nb", "allowed_mentions": {"parse": []}}
    assert (first.status, second.status, first.json()) == (200, 200, sent)
    assert second.at - first.at >= 0.3


@pytest.mark.parametrize(
    ("url", "path", "status", "body", "reason"),
    [
        (
            f"tgram://{TG}/42",
            f"/bot{TG}/sendMessage",
            401,
            {"ok": False, "error_code": 401, "description": "Unauthorized"},
            "tgram://***: HTTP 401 Unauthorized",
        ),
        (
            "slack://T000/B000/XXXX",
            "/services/T000/B000/XXXX",
            400,
            b"invalid_payload",
            "slack://***: HTTP 400 invalid_payload",
        ),
        (
            "discord://111222/tok",
            "/api/webhooks/111222/tok",
            404,
            {"message": "Unknown Webhook", "code": 10015},
            "discord://***: HTTP 404 Unknown Webhook",
        ),
    ],
    ids=["telegram-401", "slack-400", "discord-404"],
)
async def test_permanent_errors_go_to_the_dead_letter_path_at_once(
    url: str, path: str, status: int, body: dict[str, Any] | bytes, reason: str
) -> None:
    """A 400/401/404 raises DeliveryError (not a transient error) and the courier gives up after
    one attempt with the provider's reason, for the service to dead-letter."""
    async with FakeApi() as api:
        api.reply(path, status, body, times=2)
        sender = make_sender(f"{url}?api_base={api.base}")
        with pytest.raises(DeliveryError) as err:
            await sender.send(MSG)
        outcome = await Courier("r", sender, backoff=FAST, max_attempts=5).deliver(MSG)
        await sender.aclose()
    assert (str(err.value), isinstance(err.value, TransientError)) == (reason, False)
    assert outcome == Outcome(False, 1, reason)
    assert [r.status for r in api.requests] == [status, status]


async def test_apprise_url_forms_pick_the_native_senders_or_apprise() -> None:
    """tgram (with chats), slack webhooks and discord URLs get native senders; bot tokens, chat
    detection and other schemes stay with Apprise; api_base is refused where Apprise would run."""
    cases = [
        ("tgram://bot123:abc/-100/@chan:7?to=55", "auto", TelegramSender),
        ("tgram://123:abc", "auto", AppriseSender),
        ("tgram://123:abc/42", "apprise", AppriseSender),
        ("slack://T1/B2/C3/#alerts/%40bob", "auto", SlackSender),
        ("slack://xoxb-1-2-abc/#alerts", "auto", AppriseSender),
        ("discord://1/tok?thread=9", "auto", DiscordSender),
        ("json://127.0.0.1/x", "auto", HttpJsonSender),
        ("ntfy://topic", "auto", AppriseSender),
    ]
    senders = [make_sender(url, kind) for url, kind, _ in cases]
    assert [type(s) for s in senders] == [cls for _, _, cls in cases]
    assert isinstance(senders[0], TelegramSender) and isinstance(senders[3], SlackSender)
    assert (senders[0].chats, senders[3].channels) == (
        [("-100", None), ("@chan", 7), ("55", None)],
        ["#alerts", "@bob"],
    )
    for s in senders:
        await s.aclose()
    with pytest.raises(UnsupportedUrl):
        make_sender("tgram://123:abc", "http")
    with pytest.raises(DeliveryError) as err:
        make_sender("ntfy://topic?api_base=http://127.0.0.1:1")
    assert str(err.value) == "ntfy://***: api_base needs a native sender (tgram, slack, discord)"


def test_api_base_receiver_option_rides_on_the_url_and_only_for_native_schemes() -> None:
    """`api_base` on a tgram receiver reaches its sender as ?api_base=; on json:// it is a
    ConfigError naming the field."""
    env = {"TG": TG}
    raw: dict[str, Any] = {
        "receivers": [{"name": "tg", "url": "tgram://{TG}/42", "api_base": "http://127.0.0.1:9"}],
        "route": {"receivers": ["tg"]},
    }
    url = resolve_url(parse(raw, environ=env).receivers[0], "receivers[0].url", env)
    assert url == f"tgram://{TG}/42?api_base=http%3A%2F%2F127.0.0.1%3A9"
    raw["receivers"][0]["url"] = "json://127.0.0.1/x"
    with pytest.raises(ConfigError) as err:
        parse(raw, environ=env)
    assert str(err.value) == (
        "config: receivers[0].api_base: only for tgram, slack, discord receivers"
    )


@pytest.mark.parametrize(
    ("fmt", "body", "telegram", "slack", "discord"),
    [
        (
            "markdown",
            "**A\\_B\\*\\<x\\>** & _hist_ `r\\_1`",
            "<b>A_B*&lt;x&gt;</b> &amp; <i>hist</i> <code>r_1</code>",
            # (Slack has no escapes: a `*` at a word's edge between zero-width spaces; inside
            # a word, as in `A_B`, a marker formats nothing and is left)
            "*A_B\u200b*\u200b&lt;x&gt;* &amp; _hist_ `r_1`",
            "**A\\_B\\*\\<x\\>** & _hist_ `r\\_1`",
        ),
        ("markdown", "**open", "**open", "\u200b*\u200b\u200b*\u200bopen", "**open"),
        (
            "html",
            '<h3>A&lt;B</h3>\n<p style="c">x &amp; <i>y</i></p>',
            "<b>A&lt;B</b>\nx &amp; <i>y</i>",
            "A&lt;B\nx &amp; y",
            "A\\<B\nx & y",
        ),
        (
            "text",
            "a_b <c> & *d*",
            "a_b &lt;c&gt; &amp; *d*",
            "a_b &lt;c&gt; &amp; \u200b*\u200bd\u200b*\u200b",
            None,
        ),
    ],
    ids=["markdown", "unclosed", "html", "text"],
)
def test_bodies_are_converted_and_escaped_for_each_provider(
    fmt: str, body: str, telegram: str, slack: str, discord: str | None
) -> None:
    """Markdown, HTML and text bodies become Telegram HTML, Slack mrkdwn and Discord Markdown
    with user text inert (escaped), and an unclosed marker stays text."""
    expected_discord = discord if discord is not None else "a\\_b \\<c\\> & \\*d\\*"
    assert (telegram_html(body, fmt), slack_mrkdwn(body, fmt), discord_markdown(body, fmt)) == (
        telegram,
        slack,
        expected_discord,
    )


@pytest.mark.integration
async def test_a_rate_limited_telegram_receiver_does_not_delay_a_json_receiver(
    stream: str,
) -> None:
    """Telegram answering 429 with retry_after 1 waits alone: the json:// receiver has both
    alerts before Telegram's retry, and Telegram then gets each alert exactly once."""
    async with FakeApi() as api, WebhookServer() as hooks:
        api.reply(
            f"/bot{TG}/sendMessage",
            429,
            {"ok": False, "error_code": 429, "parameters": {"retry_after": 1}},
        )
        config = make_config(
            stream,
            [
                {"name": "tg", "url": f"tgram://{TG}/42", "api_base": api.base},
                {"name": "hook", "url": hooks.url("/hook")},
            ],
        )
        await publish(stream, [alert(1), alert(2)])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 2)
    limited, *sent = api.requests
    assert [(r.status, r.json()["text"].split("\n")[0]) for r in sent] == [
        (200, "<b>SC01: squeeze on volume</b>"),
        (200, "<b>SC02: squeeze on volume</b>"),
    ]
    assert [b["title"] for b in hooks.bodies("/hook")] == [alert(1).title, alert(2).title]
    assert sent[0].at - limited.at >= 1.0
    assert max(t for _, _, _, t in hooks.received) < sent[0].at


def test_a_long_telegram_message_is_cut_to_the_limit() -> None:
    """A message longer than Telegram's 4,096 characters is sent cut short, ending in an
    ellipsis, never split inside an HTML entity."""
    from monitor.notify.senders import TELEGRAM_MAX_CHARS

    body = "GME & AMC <squeeze> " * 400  # 8,000 characters, entities all along
    sender = TelegramSender("tgram://bot123:abc/-100")
    (post, *_) = sender.posts(Message("Many alerts", body, "markdown"))
    assert post.json is not None
    text = post.json["text"]
    assert len(text) <= TELEGRAM_MAX_CHARS
    assert text.endswith("…")
    tail = text[-10:]
    assert "&" not in tail or ";" in tail[tail.rfind("&") :]
