"""Senders and the per-receiver courier: retries with backoff and jitter, provider rate limits.

Senders implement `Sender`:
- `AppriseSender` for every Apprise URL without a native sender (Teams, ntfy, mailto://, ...).
  Apprise reports only success or failure, so every failure is treated as transient and retried;
  the receiver's `min_interval_s` keeps us under the provider's published limit. The receiver's
  `timeout_s` becomes Apprise's socket timeouts (`cto`, `rto`: each connect and read, as for our
  httpx senders), so a server that never answers is a retryable failure after `timeout_s`.
  Why a send failed Apprise only logs: that log is captured per send and put in the error
  (`apprise could not notify mailto://host/…: ...; SMTP AUTH extension not supported by
  server`), secrets masked (monitor/notify/apprise_reasons.py).
- `HttpJsonSender` for `json://` / `jsons://`: the same JSON body as Apprise's json:// plugin
  (`version`, `title`, `message`, `attachments` [filename, base64, mimetype], `type`), posted with
  httpx so status codes are seen: 429 and 503 honour `Retry-After`, other 5xx and network errors
  are retried, other 4xx fail for good (dead-lettered without retrying).
- `tgram://`, `slack://` (incoming webhooks) and `discord://` go to the httpx senders in
  `monitor.notify.senders`, which read each provider's own rate-limit signal (`RateLimited`).

The courier raises nothing for a failed delivery: it returns an `Outcome` the dispatch
dead-letters. Library exceptions are translated here (`ChannelUnavailable`, `DeliveryError`),
a network error told in words with its port (`network_error`: "connection refused (port 9)"),
never in the library's message, which may quote the URL and its token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import apprise
import httpx
import msgspec
from apprise.attachment.memory import AttachMemory

from monitor import logs
from monitor.core.backoff import Backoff
from monitor.errors import DeliveryError, TransientError
from monitor.notify.apprise_reasons import Reasons, debugging
from monitor.notify.render import Message, fitted, title_in_body
from monitor.waiting import retry_after


class ChannelUnavailable(TransientError):
    """A channel failed in a way worth retrying; `retry_after_s` when the provider said so."""

    accepted: tuple[str, ...] = ()  # (as DeliveryError's: the targets that took the message)

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(ChannelUnavailable):
    """The provider answered 429 and said how long to wait: the next attempt waits at least
    `retry_after_s` (an attempt like any other towards `max_attempts`)."""

    retry_after_s: float

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s)


class Sender(Protocol):
    """Sends one message to one channel; raises ChannelUnavailable or DeliveryError."""

    @property
    def takes_attachments(self) -> bool: ...

    async def send(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...


# Schemes whose host is a real web or mail server name: the only ones whose host may be shown.
# Everywhere else (pbul://, ntfy://, tgram://, slack://, discord://, ...) the "host" part may be
# an access token, a topic or a bot id, so it is masked.
HOST_SCHEMES = frozenset(
    {"http", "https", "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos"}
)

# Apprise's plain web hooks: their host and port are checked as ours are (`address_problem`).
WEB_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})


def redact(url: str) -> str:
    """What may appear in a log line or dead-letter reason about a receiver URL: the scheme, and
    the host for web and mail schemes (`HOST_SCHEMES`); never user info, path or query."""
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not (separator and scheme.isascii() and scheme.isalnum()):
        return "***"  # not even a scheme we can show safely
    if scheme not in HOST_SCHEMES:
        return f"{scheme}://***"
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return f"{scheme}://{host}/…" if host else f"{scheme}://…"


def address_problem(url: str) -> str | None:
    """Why the host and port of an http(s)-like `url` cannot be sent to, or None: no host
    (`json://`, `json:///path`), a port that is no port (`:99999`, `:http`), a bracket not
    closed (`[::1`). Each would fail every send (httpx's UnsupportedProtocol, retried as if
    the network were down) or stop the notifier (a port past 65535 raises OverflowError from
    the socket, a bracket ValueError), so it is refused with the config instead."""
    try:
        parts = urlsplit(url)
    except ValueError:  # (its words are not quoted: they may hold the URL's secrets)
        return "an IPv6 host's bracket is not closed"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "the port is no number from 1 to 65535"
    return None


def url_options(url: str) -> set[str]:
    """The names of the options a URL's query sets (lower case)."""
    return {k.lower() for k, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)}


def with_socket_timeouts(url: str, timeout_s: float) -> str:
    """`url` with Apprise's connect and read timeouts (`cto`, `rto`) set to `timeout_s`, unless
    the URL sets them itself. Apprise's defaults (4 s for HTTP, 15 s for SMTP) would otherwise
    hold a worker thread, and a SIGTERM, that long whatever the receiver's `timeout_s` says."""
    base, sep, query = url.partition("?")
    given = url_options(url)
    extra = [f"{k}={timeout_s:g}" for k in ("cto", "rto") if k not in given]
    if not extra:
        return url
    return base + "?" + "&".join(([query] if sep and query else []) + extra)


@contextlib.contextmanager
def apprise_quiet() -> Iterator[None]:
    """Apprise logs a URL it cannot parse in full (tokens and all): quiet while it parses one
    (the caller says what went wrong, redacted)."""
    apprise_log = logging.getLogger("apprise")
    was_disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        yield
    finally:
        apprise_log.disabled = was_disabled


def formats_of(server: Any) -> set[str]:
    """The body formats an Apprise plugin takes (`notify_format`: one, or several)."""
    value = getattr(server, "notify_format", None)
    found = value if isinstance(value, tuple | list | set) else (value,)
    return {str(getattr(f, "value", f)) for f in found if f is not None}


# Apprise's mail services (modules of apprise.plugins): the title is the subject.
_MAIL = {
    "email", "sendgrid", "mailgun", "ses", "sparkpost", "postmark", "resend", "brevo",
    "smtp2go", "mailersend", "sendpulse", "office365", "groundmail",
}  # fmt: skip


def is_mail(server: Any) -> bool:
    """Whether an Apprise plugin sends mail: one of _MAIL, or one that takes HTML and no
    Markdown (as mail services do; chat services take Markdown or plain text)."""
    parts = type(server).__module__.split(".")
    if _MAIL.intersection(parts[2:]):
        return True
    formats = formats_of(server)
    return "html" in formats and "markdown" not in formats


class AppriseSender:
    """Any Apprise URL."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        if url.partition("://")[0].lower() in WEB_SCHEMES:
            problem = address_problem(url)
            if problem is not None:
                raise DeliveryError(f"{redact(url)}: {problem}")
        self._apprise = apprise.Apprise()
        with apprise_quiet():
            added = self._apprise.add(with_socket_timeouts(url, timeout_s))
        if not added:
            raise DeliveryError(f"not an Apprise URL Apprise can use: {redact(url)}")
        self.where = redact(url)
        self._url = url  # (its secrets are masked in the reasons Apprise gives: `Reasons`)
        servers = list(self._apprise)
        self.takes_attachments = bool(servers) and all(
            bool(getattr(s, "attachment_support", False)) for s in servers
        )
        # A body past a service's limit is cut (Apprise's default sends it whole, and a service
        # like Pushover refuses it: retried, then dead-lettered), unless the URL says otherwise;
        # a group is first made to fit (see `send`).
        if "overflow" not in url_options(url):
            for server in servers:
                server.overflow_mode = apprise.OverflowMode.TRUNCATE
        limits = [int(getattr(s, "body_maxlen", 0) or 0) for s in servers]
        self.max_chars = min((n for n in limits if n > 0), default=0)
        self.is_email = any(is_mail(s) for s in servers)

    async def send(self, message: Message) -> None:
        """Send through Apprise; a failure, a timed-out socket among them, becomes
        ChannelUnavailable (retried). The call is not abandoned at a deadline of our own: its
        worker thread would go on and might deliver after we had counted a failure and sent
        again, and Apprise paces each URL (5.5 s between sends) in that same thread."""
        attach = None
        if message.attachments and self.takes_attachments:
            attach = apprise.AppriseAttachment()
            for name, data in message.attachments:
                attach.add(AttachMemory(content=data, name=name, mimetype="image/png"))  # type: ignore[no-untyped-call]
        if self.max_chars:  # (a margin: Apprise converts the format first, which adds to it)
            budget = int(self.max_chars * 0.8)
            message = fitted(message, lambda m: len(m.title) + len(m.body) <= budget)
        # The one-alert templates start with the title: given as the title too, most services
        # would show it twice (email keeps it, as the subject).
        title = "" if title_in_body(message) and not self.is_email else message.title
        fmt = {
            "markdown": apprise.NotifyFormat.MARKDOWN,
            "html": apprise.NotifyFormat.HTML,
            "text": apprise.NotifyFormat.TEXT,
        }[message.body_format]
        kind = {
            "info": apprise.NotifyType.INFO,
            "warning": apprise.NotifyType.WARNING,
            "failure": apprise.NotifyType.FAILURE,
        }[message.kind]
        reasons = Reasons(self._url, self._url.partition("://")[0].lower() in HOST_SCHEMES)

        def notify() -> bool:
            with debugging():
                return bool(
                    self._apprise.notify(
                        body=message.body,
                        title=title,
                        body_format=fmt,
                        attach=attach,
                        notify_type=kind,
                        log_callback=reasons.collect,
                        log_level=logging.DEBUG,
                    )
                )

        ok = await in_daemon_thread(notify)
        if not ok:
            why = reasons.text()
            raise ChannelUnavailable(
                f"apprise could not notify {self.where}" + (f": {why}" if why else "")
            )

    async def aclose(self) -> None:
        """Nothing to close (Apprise opens a connection per notification)."""


T = TypeVar("T")
SEND_THREAD = "notify-apprise-send"  # the name of `in_daemon_thread`'s threads


async def in_daemon_thread(call: Callable[[], T]) -> T:
    """`call()` in a thread of its own that the process does not wait for at its exit: a send
    that hangs (its socket timeouts aside, Apprise's pacing) cannot hold a stopping notifier
    past the unit's TimeoutStopSec after it has said `delivery_abandoned`, as a thread of the
    event loop's executor would (asyncio.run waits for those)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def work() -> None:
        try:
            result = call()
        except BaseException as exc:  # (handed to the awaiting task, as to_thread does)
            report = functools.partial(settle, functools.partial(done.set_exception, exc))
        else:
            report = functools.partial(settle, functools.partial(done.set_result, result))
        with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile: nobody waits)
            loop.call_soon_threadsafe(report)

    threading.Thread(target=work, name=SEND_THREAD, daemon=True).start()
    return await done


def leave_hung_sends(code: int) -> int:
    """`code`, after the service stopped: but with a send still hung in a thread (cut off and
    logged as `delivery_abandoned`), the process exits now, its output flushed, instead of
    waiting for it at the interpreter's exit (Apprise's worker pool is joined then): a hung
    SMTP server would hold a stopping notifier past the unit's TimeoutStopSec."""
    if any(t.name == SEND_THREAD and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code


class HttpJsonSender:
    """`json://host[:port]/path` (http) and `jsons://` (https), Apprise's JSON body, via httpx."""

    takes_attachments = True

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        if url.partition("://")[0].lower() not in ("json", "jsons"):
            raise DeliveryError(f"HttpJsonSender needs json:// or jsons://, not {redact(url)}")
        problem = address_problem(url)
        if problem is not None:
            raise DeliveryError(f"{redact(url)}: {problem}")
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        self._headers = {k[1:]: v for k, v in query if k.startswith("+")}
        self._method = next((v.upper() for k, v in query if k == "method"), "POST")
        auth = None
        if parts.username:
            auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        netloc = parts.netloc.rpartition("@")[2]
        scheme = "https" if parts.scheme == "jsons" else "http"
        self._target = urlunsplit((scheme, netloc, parts.path or "/", "", ""))
        self.where = redact(url)
        self._client = httpx.AsyncClient(auth=auth, timeout=timeout_s)

    async def send(self, message: Message) -> None:
        """POST the JSON body; map status codes to retry / give up."""
        body = {
            "version": "1.0",
            "title": message.title,
            "message": message.body,
            "attachments": [
                {"filename": n, "base64": base64.b64encode(d).decode(), "mimetype": "image/png"}
                for n, d in message.attachments
            ],
            "type": message.kind,
        }
        if message.alerts:  # (ours, beside Apprise's fields: the alerts as the stream has them)
            body["alerts"] = [msgspec.to_builtins(a) for a in message.alerts]
        try:
            r = await self._client.request(
                self._method, self._target, json=body, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"{self.where}: {network_error(exc)}") from exc
        if 200 <= r.status_code < 300:
            return
        wait_s = retry_after(r.headers.get("retry-after"))
        if r.status_code == 429 and wait_s is not None:
            raise RateLimited(f"{self.where}: HTTP 429", wait_s)
        if r.status_code in (408, 425, 429) or r.status_code >= 500:
            raise ChannelUnavailable(f"{self.where}: HTTP {r.status_code}", wait_s)
        raise DeliveryError(f"{self.where}: HTTP {r.status_code}")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


_TIMEOUTS: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "timed out connecting",
    httpx.ReadTimeout: "timed out waiting for the answer",
    httpx.WriteTimeout: "timed out sending",
    httpx.PoolTimeout: "timed out waiting for a free connection",
}


def network_error(exc: httpx.HTTPError) -> str:
    """What went wrong with a request, for a log line or a dead-letter reason: `connection
    refused (port 9)`, `timed out connecting (port 443)`. Made of the exception's type, the
    operating system's own words for the error and the port, never of the exception's message,
    which may quote the address and with it a token."""
    try:
        url = exc.request.url
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    except RuntimeError:  # (an error raised before the request was made)
        port = None
    at = f" (port {port})" if port else ""
    for kind, text in _TIMEOUTS.items():
        if isinstance(exc, kind):
            return text + at
    cause = _os_error(exc)
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host: {cause.strerror or 'unknown name'}{at}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {cause.verify_message}{at}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or 'handshake failed'}{at}"
    if cause is not None and cause.errno is not None and cause.errno > 0:
        return os.strerror(cause.errno).lower() + at
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection without an answer" + at
    return f"{type(exc).__name__}{at}"


def _os_error(exc: BaseException) -> OSError | None:
    """The first OSError among the causes of `exc` that has an error number (the refused
    connection under httpx's and httpcore's wrappers)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


# The longest a provider's Retry-After is waited before the next attempt: Telegram's flood
# waits run to minutes, and a header of a day (a bug, a proxy's) would stop the receiver for it.
RETRY_AFTER_CAP_S = 3600.0


def make_sender(url: str, kind: str = "auto", timeout_s: float = 10.0) -> Sender:
    """The sender for a receiver URL. `auto`: ours for json(s)://, tgram://, slack:// (webhooks)
    and discord:// (Apprise for the forms ours do not take), else Apprise. `http`: ours or a
    DeliveryError. `apprise`: Apprise."""
    from monitor.notify.senders import NATIVE, UnsupportedUrl  # senders imports this module

    scheme = url.partition("://")[0].lower()
    if kind != "apprise" and scheme in NATIVE:
        try:
            return NATIVE[scheme](url, timeout_s)
        except UnsupportedUrl:
            if kind == "http":
                raise
    elif kind == "http" or (kind == "auto" and scheme in ("json", "jsons")):
        return HttpJsonSender(url, timeout_s)
    if "api_base" in dict(parse_qsl(url.partition("?")[2])):
        raise DeliveryError(
            f"{redact(url)}: api_base needs a native sender (tgram, slack, discord)"
        )
    return AppriseSender(url, timeout_s)


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended: sent, or failed for good with a reason, after `attempts`."""

    ok: bool
    attempts: int
    reason: str = ""
    # Failed: the targets of a receiver of several (chats, channels) that took the message
    # all the same, written in its dead letter so that `dead resend` sends to the others only.
    accepted: tuple[str, ...] = ()


class Courier:
    """Sends messages to one receiver, one at a time, with retries and a minimum interval."""

    def __init__(
        self,
        receiver: str,
        sender: Sender,
        *,
        backoff: Backoff,
        max_attempts: int,
        min_interval_s: float = 0.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.receiver = receiver
        self.sender = sender
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._last_send = -1e18
        self._log = logs.get("notify_courier").bind(receiver=receiver)
        # Why the last attempt failed, until one succeeds (/healthz: the receiver is failing).
        self.failing: str | None = None
        # Between attempts (or before the first, for `min_interval_s`): nothing is being sent,
        # so a stopping notifier may cut the delivery off here (Dispatcher.finish).
        self.waiting = False

    @property
    def longest_s(self) -> float:
        """How long `deliver` takes at most when the provider answers within the receiver's
        `timeout_s` (connect, write, read) and asks for no wait beyond the backoff cap: per
        attempt those three timeouts, the wait after it and the minimum interval. A provider's
        Retry-After past the cap, or a message of several requests, can take longer."""
        per_attempt = 3 * self._timeout_s + self._backoff.cap_s + self._min_interval_s
        return self._max_attempts * per_attempt

    async def deliver(self, message: Message) -> Outcome:
        """Try until sent, a permanent failure, or `max_attempts` transient failures."""
        attempt = 0
        while True:
            wait = self._last_send + self._min_interval_s - time.monotonic()
            if wait > 0:
                await self._wait(wait)
            attempt += 1
            self._last_send = time.monotonic()
            try:
                await self.sender.send(message)
            except DeliveryError as exc:
                self.failing = str(exc)
                return Outcome(False, attempt, str(exc), exc.accepted)
            except ChannelUnavailable as exc:
                self.failing = str(exc)
                if attempt >= self._max_attempts:
                    return Outcome(
                        False, attempt, f"gave up after {attempt} attempts: {exc}", exc.accepted
                    )
                delay = self._backoff.delay(attempt - 1)
                asked = exc.retry_after_s
                if asked is not None:
                    delay = max(delay, min(asked, RETRY_AFTER_CAP_S))
                self._log.warning(
                    "delivery_retry",
                    attempt=attempt,
                    error=str(exc),
                    delay_s=round(delay, 3),
                    **({"retry_after_s": asked} if asked is not None and asked > delay else {}),
                )
                await self._wait(delay)
                continue
            self.failing = None
            return Outcome(True, attempt)

    async def _wait(self, delay_s: float) -> None:
        self.waiting = True
        try:
            await self._sleep(delay_s)
        finally:
            self.waiting = False
