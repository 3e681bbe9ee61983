"""Apprise's own reason for a failed send, for the log line and the dead letter.

Apprise answers a send with success or failure only; why it failed it logs, the cause itself
(`SMTP AUTH extension not supported by server.`, `[Errno 111] Connection refused`) at DEBUG
(`Socket Exception: ...`) after a WARNING that says little (`Connection error while submitting
email to "host"`). `AppriseSender.send` has Apprise capture the log of its own call
(`notify(log_callback=..., log_level=DEBUG)`: per call and per thread, so receivers sending at
once do not mix), and `Reasons.of` keeps the WARNING and ERROR lines and, of the DEBUG ones,
only the exception lines (others quote whole requests, tokens and all), every part of the
receiver's URL that may be a secret masked, at most `MAX_CHARS`.

For the DEBUG records to exist at all the `apprise` logger's level is DEBUG while a send runs
(`debugging`, counted across threads); they go no further than the capture: the handler of
monitor/logs.py lets only its own level (WARNING or higher) out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_CHARS = 300
# DEBUG lines that say why (an exception's text); the others are left out.
_CAUSES = ("Socket Exception: ", "Notification Exception: ", "Exception: ")
_SHOWN = ("WARNING", "ERROR", "CRITICAL")


class Reasons:
    """Collects what Apprise logged during one send; `text()` is the reason, masked."""

    def __init__(self, url: str, host_shown: bool) -> None:
        self.lines: list[str] = []
        self._secrets = secrets_of(url, host_shown)

    def collect(self, entry: object, service: object = None) -> None:
        """Apprise's `log_callback(entry, service)`: keep a line worth telling."""
        level = str(getattr(entry, "level", ""))
        message = str(getattr(entry, "message", "")).strip()
        if not message:
            return
        if level in _SHOWN or message.startswith(_CAUSES):
            cause = message.partition("Exception: ")[2] if level not in _SHOWN else message
            if cause and cause not in self.lines:
                self.lines.append(cause)

    def text(self) -> str:
        """The lines kept, `; `-joined, secrets masked, at most MAX_CHARS."""
        said = "; ".join(line.rstrip(".") for line in self.lines)
        for secret in self._secrets:
            said = said.replace(secret, "***")
        return said if len(said) <= MAX_CHARS else said[: MAX_CHARS - 1] + "…"


def secrets_of(url: str, host_shown: bool) -> list[str]:
    """The parts of `url` that may be secrets, longest first (each as written and unquoted):
    user, password, path segments, query values, and the host where it is not shown (a
    Pushbullet token is the host)."""
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or ""]
        if not host_shown:  # (as written: `hostname` is lowercased)
            host = parts.netloc.rpartition("@")[2]
            found += [host, host.rpartition(":")[0]]
    except ValueError:
        return []
    found += parts.path.split("/")
    found += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    found += [unquote(s) for s in found]
    # (short parts, a "to" or a port, would mask words of the reason, and are no tokens; a
    # password is masked however short: it is a secret by its place)
    password = [parts.password, unquote(parts.password)] if parts.password else []
    return sorted({s for s in found if len(s) >= 4} | set(password), key=len, reverse=True)


class _Debugging:
    """The `apprise` logger at DEBUG while any send runs, restored after the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._before = logging.NOTSET

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        log = logging.getLogger("apprise")
        with self._lock:
            if self._running == 0:
                self._before = log.level
                log.setLevel(logging.DEBUG)
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    log.setLevel(self._before)


debugging = _Debugging()
