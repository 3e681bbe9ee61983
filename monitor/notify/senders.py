"""Native httpx senders for Telegram, Slack and Discord: Apprise's URL forms, the providers'
rate-limit signals seen and honoured (Apprise hides status codes).

- `TelegramSender`, `tgram://[bot]{id}:{secret}/{chat}[:{topic}][/{chat}...][?to=...]`:
  `sendMessage` (parse mode HTML: Markdown bodies are converted, everything escaped) then
  `sendPhoto` (multipart) per attachment, for each chat. 429's `parameters.retry_after` is waited.
- `SlackSender`, incoming webhooks `slack://[botname@]{A}/{B}/{C}[/#channel...]`: POST
  `/services/A/B/C` with `text` in Slack mrkdwn (no attachments), 40,000 characters at most.
  429's `Retry-After` is waited. Bot tokens (`xoxb-...`) are left to Apprise.
- `DiscordSender`, `discord://[botname@]{id}/{token}[?thread=N]`: POST `/api/webhooks/{id}/{token}`
  with `content`, or multipart with `payload_json` and the PNG as `files[0]`. 429's JSON
  `retry_after` (else `Retry-After`) is waited; `X-RateLimit-Remaining: 0` with
  `X-RateLimit-Reset-After` delays the next request.

Status codes: 429 raises `RateLimited` (the courier waits at least `retry_after_s`); 408, 425, 5xx
and network errors `ChannelUnavailable`; other 4xx `DeliveryError` (dead-lettered at once).
A message sent in several requests (chats, photos) remembers which were accepted, so a retry of
the same message sends only the rest; when it fails for good, the targets (chats, channels) all
of whose requests were accepted are named in the error (`accepted`), and so in the dead letter,
and a message's `skip_targets` (`notify dead resend` of such a letter) are not sent to.
`?api_base=http://127.0.0.1:8081` (the receiver option `api_base`) replaces the provider's API
address. Tokens never appear in errors or logs.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import httpx

from monitor import logs
from monitor.errors import DeliveryError
from monitor.notify.delivery import (
    ChannelUnavailable,
    RateLimited,
    address_problem,
    network_error,
    redact,
)
from monitor.notify.render import Message, escape, fitted, title_in_body
from monitor.waiting import retry_after

DEFAULT_API = {
    "tgram": "https://api.telegram.org",
    "slack": "https://hooks.slack.com",
    "discord": "https://discord.com",
}
DISCORD_MAX_CHARS = 2000
TELEGRAM_MAX_CHARS = 4096  # sendMessage's limit, counted after entity parsing (we stay under)
# Slack truncates a message's `text` past 40,000 characters (chat.postMessage, webhooks alike);
# counted here as sent, entities and zero-width spaces included, so we stay under. (Apprise's
# own Slack plugin cuts at 35,000, for the receivers it sends.)
SLACK_MAX_CHARS = 40_000
_CHAT = re.compile(r"^(?P<chat>-?[0-9]{1,32}|@?[a-z_-][a-z0-9_-]+)(?::(?P<topic>[0-9]+))?$", re.I)
_MD = re.compile(r"\\(.)|(\*\*|`|_)", re.S)


class UnsupportedUrl(DeliveryError):
    """A URL form the native senders do not take (Apprise may: bot tokens, chat detection)."""


@dataclass(frozen=True)
class UrlParts:
    """An Apprise URL split by hand (`#channel` is a path segment here, not a fragment)."""

    scheme: str
    user: str
    segments: list[str]
    query: dict[str, str]

    @property
    def api_base(self) -> str:
        """The API address: `?api_base=` or the provider's."""
        base = self.query.get("api_base") or DEFAULT_API[self.scheme]
        if not base.startswith(("http://", "https://")):
            raise DeliveryError(f"{self.scheme}://…: api_base must be an http(s) URL")
        problem = address_problem(base)
        if problem is not None:
            raise DeliveryError(f"{self.scheme}://…: api_base: {problem}")
        return base.rstrip("/")


def split_url(url: str) -> UrlParts:
    """`scheme://[user@]a/b/c?k=v` as parts, each segment unquoted."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    first, _, tail = rest.partition("/")
    user, _, first = first.rpartition("@")
    segments = [unquote(s) for s in [first, *tail.split("/")] if s]
    pairs = parse_qsl(query, keep_blank_values=True)
    return UrlParts(scheme.lower(), unquote(user), segments, {k.lower(): v for k, v in pairs})


@dataclass(frozen=True)
class Post:
    """One request of a delivery: JSON, or multipart form fields and files."""

    url: str
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    target: str = ""  # (the chat or channel, of a URL naming several: "" for the only one)


class ProviderSender:
    """What the three share: the client, the pacing gate, status mapping, partial progress."""

    takes_attachments = False

    def __init__(self, url: str, secrets: Sequence[str], timeout_s: float) -> None:
        self.where = redact(url)
        self._secrets = tuple(s for s in secrets if s)
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._not_before = 0.0  # monotonic: the provider asked for no request before this
        self._progress: tuple[Message, set[int]] | None = None
        self._log = logs.get("notify_sender").bind(where=self.where)

    def posts(self, message: Message) -> list[Post]:
        """The requests that deliver `message`, in order."""
        raise NotImplementedError

    def limit_of(self, response: httpx.Response) -> float | None:
        """Seconds a 429 asks us to wait (default: its Retry-After header)."""
        return retry_after(response.headers.get("retry-after"))

    def detail_of(self, response: httpx.Response) -> str:
        """A short error text from a failed response (default: the body's first line)."""
        return response.text.strip().split("\n")[0]

    async def send(self, message: Message) -> None:
        """Send every request not yet accepted for this message, but those to its
        `skip_targets`; raise on the first failure, naming the targets that took all their
        requests (`accepted`)."""
        if self._progress is None or self._progress[0] is not message:
            self._progress = (message, set())
        done = self._progress[1]
        posts = self.posts(message)
        try:
            for i, post in enumerate(posts):
                if i not in done and not (post.target and post.target in message.skip_targets):
                    await self._post(post)
                    done.add(i)
        except (DeliveryError, ChannelUnavailable) as exc:
            left = {p.target for i, p in enumerate(posts) if i not in done}
            exc.accepted = tuple(
                sorted({p.target for p in posts if p.target} - left | message.skip_targets)
            )
            raise
        self._progress = None

    async def _post(self, post: Post) -> None:
        wait = self._not_before - time.monotonic()
        if wait > 0:
            self._log.info("delivery_paced", delay_s=round(wait, 3))
            await asyncio.sleep(wait)
        try:
            r = await self._client.post(post.url, json=post.json, data=post.data, files=post.files)
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"{self.where}: {network_error(exc)}") from exc
        now = time.monotonic()
        if r.headers.get("x-ratelimit-remaining") == "0":
            reset = retry_after(r.headers.get("x-ratelimit-reset-after"))
            if reset is not None:
                self._not_before = max(self._not_before, now + reset)
        if 200 <= r.status_code < 300:
            return
        what = f"{self.where}: HTTP {r.status_code}"
        detail = self._scrub(self.detail_of(r))
        if detail:
            what += f" {detail}"
        if r.status_code == 429:
            wait_s = self.limit_of(r)
            if wait_s is None:
                raise ChannelUnavailable(what)
            self._not_before = max(self._not_before, now + wait_s)
            raise RateLimited(what, wait_s)
        if r.status_code in (408, 425) or r.status_code >= 500:
            raise ChannelUnavailable(what, retry_after(r.headers.get("retry-after")))
        raise DeliveryError(what)

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text[:200]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class TelegramSender(ProviderSender):
    """Telegram Bot API: `sendMessage` (HTML) and `sendPhoto` per chat."""

    takes_attachments = True

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = split_url(url)
        if not parts.segments:
            raise UnsupportedUrl(f"{redact(url)}: no bot token")
        token = re.sub(r"^bot(?=[0-9])", "", parts.segments[0])
        if not re.fullmatch(r"[0-9]+:[A-Za-z0-9_-]+", token):
            raise UnsupportedUrl(f"{redact(url)}: not a bot token")
        targets = [*parts.segments[1:], *re.split(r"[\s,]+", parts.query.get("to", ""))]
        self.chats: list[tuple[str, int | None]] = []
        for t in filter(None, targets):
            m = _CHAT.match(t)
            if m is None:
                raise DeliveryError(f"{redact(url)}: not a Telegram chat id: {t!r}")
            chat = m["chat"]
            if not re.fullmatch(r"-?[0-9]+", chat) and not chat.startswith("@"):
                chat = "@" + chat
            self.chats.append((chat, int(m["topic"]) if m["topic"] else None))
        if not self.chats:
            raise UnsupportedUrl(f"{redact(url)}: no chat id (Apprise can detect one)")
        super().__init__(url, [token, token.partition(":")[2]], timeout_s)
        self._api = f"{parts.api_base}/bot{token}"

    def posts(self, message: Message) -> list[Post]:
        """Per chat: the text, then each attachment as a photo. A group too long for a message
        (4,096 characters as shown) lists fewer of its alerts; anything else too long goes as
        plain text, cut short."""
        message = fitted(message, lambda m: _shown_length(_telegram_text(m)) <= TELEGRAM_MAX_CHARS)
        text = _telegram_text(message)
        if _shown_length(text) > TELEGRAM_MAX_CHARS:
            plain = html.escape(_plain(message), quote=False)
            cut = _cut(plain, TELEGRAM_MAX_CHARS)
            amp = cut.rfind("&", len(cut) - 8)  # (never inside an entity)
            text = (cut[:amp] if amp >= 0 and ";" not in cut[amp:] else cut) + "…"
        out = []
        for chat, topic in self.chats:
            where: dict[str, Any] = {"chat_id": chat}
            target = chat
            if topic is not None:
                where["message_thread_id"] = topic
                target += f":{topic}"
            body = {**where, "text": text, "parse_mode": "HTML"}
            out.append(Post(f"{self._api}/sendMessage", json=body, target=target))
            for name, data in message.attachments:
                out.append(
                    Post(
                        f"{self._api}/sendPhoto",
                        data={k: str(v) for k, v in where.items()},
                        files={"photo": (name, data, "image/png")},
                        target=target,
                    )
                )
        return out

    def limit_of(self, response: httpx.Response) -> float | None:
        """`parameters.retry_after` in the JSON body, else the Retry-After header."""
        params = _json_body(response).get("parameters")
        found = _seconds(params.get("retry_after")) if isinstance(params, dict) else None
        return found if found is not None else super().limit_of(response)

    def detail_of(self, response: httpx.Response) -> str:
        """The body's `description` ("Bad Request: chat not found")."""
        return str(_json_body(response).get("description", ""))


class SlackSender(ProviderSender):
    """Slack incoming webhook: one POST of mrkdwn `text` per channel (or one without)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = split_url(url)
        tokens = parts.segments[:3]
        if len(tokens) < 3 or tokens[0].startswith("xo") or "mode" in parts.query:
            raise UnsupportedUrl(f"{redact(url)}: not an incoming-webhook URL")
        self.channels = [_slack_channel(c) for c in parts.segments[3:]] or [""]
        self.username = parts.user.partition(":")[0]
        super().__init__(url, tokens[1:], timeout_s)
        self._hook = f"{parts.api_base}/services/{'/'.join(quote(t, safe='') for t in tokens)}"

    def posts(self, message: Message) -> list[Post]:
        """One JSON post per channel. A group too long for a message (40,000 characters as
        sent) lists fewer of its alerts; anything else too long is cut short, never inside an
        `&amp;`."""
        message = fitted(message, lambda m: len(_slack_message(m)) <= SLACK_MAX_CHARS)
        text = _slack_message(message)
        if len(text) > SLACK_MAX_CHARS:
            cut = _cut(text, SLACK_MAX_CHARS)
            amp = cut.rfind("&", len(cut) - 5)  # (never inside an entity)
            text = (cut[:amp] if amp >= 0 and ";" not in cut[amp:] else cut) + "…"
        body: dict[str, Any] = {"text": text}
        if self.username:
            body["username"] = self.username
        return [
            Post(self._hook, json={**body, "channel": c} if c else body, target=c)
            for c in self.channels
        ]


def _slack_message(message: Message) -> str:
    title = f"*{_slack_text(message.title)}*\n" if not title_in_body(message) else ""
    return title + slack_mrkdwn(message.body, message.body_format)


def _slack_channel(name: str) -> str:
    if name.startswith("+"):
        return name[1:]
    return name if name.startswith(("#", "@")) else f"#{name}"


class DiscordSender(ProviderSender):
    """Discord webhook: `content` (Markdown), the chart as `files[0]`."""

    takes_attachments = True

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = split_url(url)
        if len(parts.segments) != 2:
            raise UnsupportedUrl(f"{redact(url)}: not discord://webhook_id/webhook_token")
        hook_id, token = parts.segments
        super().__init__(url, [token], timeout_s)
        self.username = parts.user.partition(":")[0]
        query = "?wait=true"
        if parts.query.get("thread"):
            query += f"&thread_id={quote(parts.query['thread'], safe='')}"
        self._hook = (
            f"{parts.api_base}/api/webhooks/{quote(hook_id, safe='')}/{quote(token, safe='')}"
            + query
        )

    def posts(self, message: Message) -> list[Post]:
        """One post: JSON, or multipart with `payload_json` and `files[n]`. A group too long
        for a message (2,000 characters) lists fewer of its alerts; anything else too long is
        cut short. Names in it mention no one (`allowed_mentions`)."""
        message = fitted(message, lambda m: len(_discord_content(m)) <= DISCORD_MAX_CHARS)
        content = _discord_content(message)
        if len(content) > DISCORD_MAX_CHARS:
            content = _cut(content, DISCORD_MAX_CHARS) + "…"
        payload: dict[str, Any] = {"content": content, "allowed_mentions": {"parse": []}}
        if self.username:
            payload["username"] = self.username
        if not message.attachments:
            return [Post(self._hook, json=payload)]
        payload["attachments"] = [
            {"id": i, "filename": name} for i, (name, _) in enumerate(message.attachments)
        ]
        files = {
            f"files[{i}]": (name, data, "image/png")
            for i, (name, data) in enumerate(message.attachments)
        }
        return [Post(self._hook, data={"payload_json": json.dumps(payload)}, files=files)]

    def limit_of(self, response: httpx.Response) -> float | None:
        """The JSON `retry_after` (seconds, to the millisecond), else the Retry-After header
        (whole seconds; all a 429 from Discord's proxy carries)."""
        found = _seconds(_json_body(response).get("retry_after"))
        return found if found is not None else super().limit_of(response)

    def detail_of(self, response: httpx.Response) -> str:
        """The body's `message` ("Unknown Webhook")."""
        return str(_json_body(response).get("message", ""))


NATIVE = {"tgram": TelegramSender, "slack": SlackSender, "discord": DiscordSender}


# -- body conversion: pure ------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    """`text` cut to leave room for an ellipsis within `limit`: at the end of its last line
    that fits, when that keeps most of it (a digest loses its last items, not half a line),
    else at the limit."""
    cut = text[: limit - 1]
    line = cut.rfind("\n")
    return cut[:line] if line > len(cut) // 2 else cut


def _telegram_text(message: Message) -> str:
    title = "" if title_in_body(message) else f"<b>{html.escape(message.title, quote=False)}</b>\n"
    return title + telegram_html(message.body, message.body_format)


def _shown_length(text: str) -> int:
    """The length Telegram counts: the text as shown, its tags parsed and entities read."""
    return len(html.unescape(re.sub(r"<[^>]*>", "", text)))


def _plain(message: Message) -> str:
    """The message as plain text: its body (as fitted, from its template) without markup."""
    if message.body_format == "markdown":
        body = _markdown(message.body, {m: ("", "") for m in ("**", "_", "`")}, lambda s: s)
    else:
        body = _strip_html(message.body) if message.body_format == "html" else message.body
    return body if title_in_body(message) else f"{message.title}\n{body}"


def _discord_content(message: Message) -> str:
    title = "" if title_in_body(message) else f"**{escape(message.title, 'markdown')}**\n"
    return title + discord_markdown(message.body, message.body_format)


def _markdown(body: str, tags: dict[str, tuple[str, str]], text: Callable[[str], str]) -> str:
    """Our Markdown (`**b**`, `_i_`, `` `c` ``, backslash escapes) rewritten: `tags` maps a
    marker to its (open, close), `text` makes plain text safe. Unbalanced markers stay text."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []  # (marker, index of its opening in out)
    plain: list[str] = []  # text since the last marker, made safe in one piece (`flush`)

    def flush() -> None:
        if plain:
            out.append(text("".join(plain)))
            plain.clear()

    pos = 0
    for m in _MD.finditer(body):
        plain.append(body[pos : m.start()])
        pos = m.end()
        if m.group(1) is not None:
            plain.append(m.group(1))
        elif stack and stack[-1][0] == m.group(2):
            flush()
            marker, _ = stack.pop()
            out.append(tags[marker][1])
        elif stack and stack[-1][0] == "`":
            plain.append(m.group(2))
        else:
            flush()
            stack.append((m.group(2), len(out)))
            out.append(tags[m.group(2)][0])
    plain.append(body[pos:])
    flush()
    for marker, at in stack:  # never closed: the marker was text after all
        out[at] = text(marker)
    return "".join(out)


def telegram_html(body: str, fmt: str) -> str:
    """A body in Telegram's HTML subset (b, i, code; &, < and > escaped)."""

    def text(s: str) -> str:
        return html.escape(s, quote=False)

    if fmt == "markdown":
        tags = {"**": ("<b>", "</b>"), "_": ("<i>", "</i>"), "`": ("<code>", "</code>")}
        return _markdown(body, tags, text)
    if fmt == "html":
        body = re.sub(r"<h[1-6]\b[^>]*>", "<b>", body, flags=re.I)
        body = re.sub(r"</h[1-6]>", "</b>\n", body, flags=re.I)
        body = re.sub(r"<br\s*/?>|</p>|</tr>|</div>|</li>", "\n", body, flags=re.I)
        body = re.sub(r"</td>", " ", body, flags=re.I)
        kept = r"b|strong|i|em|u|s|code|pre"
        body = re.sub(rf"<(/?)({kept})\b[^>]*>", r"<\1\2>", body, flags=re.I)
        body = re.sub(rf"<(?!/?(?:{kept})>)[^>]*>", "", body, flags=re.I)
        return re.sub(r"[ \t]*\n\s*", "\n", body).strip()
    return text(body)


def _slack_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A marker Slack may take for formatting: one at the edge of a word (inside one, as in
# `iwm_qqq`, it formats nothing), and any backtick.
_SLACK_MARKS = re.compile(r"((?<![A-Za-z0-9])[*_~]|[*_~](?![A-Za-z0-9])|`)")


def _slack_text(s: str) -> str:
    """Text for Slack mrkdwn, which has no escapes: &, < and > as entities, and a `*`, `_` or
    `~` at the edge of a word, or a backtick, between zero-width spaces, so that a name
    holding one (`~Tilde~`) opens no bold, italics, strike-through or code. Markers inside a
    word are left as they are: a rule id or symbol copied from Slack stays what it is."""
    return _SLACK_MARKS.sub("\u200b\\1\u200b", _slack_escape(s))


def _strip_html(body: str) -> str:
    body = re.sub(r"<br\s*/?>|</p>|</tr>|</div>|</li>|</h[1-6]>", "\n", body, flags=re.I)
    body = re.sub(r"</td>", " ", body, flags=re.I)
    body = re.sub(r"[ \t]*\n\s*", "\n", re.sub(r"<[^>]*>", "", body))
    return html.unescape(body).strip()


def slack_mrkdwn(body: str, fmt: str) -> str:
    """A body in Slack mrkdwn (`*b*`, `_i_`, `` `c` ``; &, < and > escaped)."""
    if fmt == "markdown":
        tags = {"**": ("*", "*"), "_": ("_", "_"), "`": ("`", "`")}
        return _markdown(body, tags, _slack_text)
    return _slack_text(_strip_html(body) if fmt == "html" else body)


def discord_markdown(body: str, fmt: str) -> str:
    """A body as Discord Markdown (ours is already; text and HTML are escaped for it)."""
    if fmt == "markdown":
        return body
    return escape(_strip_html(body) if fmt == "html" else body, "markdown")
