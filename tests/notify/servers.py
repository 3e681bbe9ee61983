"""Real loopback servers for notifier tests: an HTTP webhook receiver and an SMTP sink.

async with WebhookServer() as hooks:          # http://127.0.0.1:{hooks.port}/{path}
    hooks.fail("/down", status=503, times=3)  # the next 3 posts to /down get 503
    hooks.slow("/slow", 0.5)                  # posts to /slow are answered 0.5 s late
    ...
    hooks.bodies("/chat")                     # JSON bodies answered with 2xx, in order
    hooks.headers                             # (path, lower-cased headers) of every request
with SmtpSink() as smtp:                      # aiosmtpd on 127.0.0.1:{smtp.port}
    smtp.messages                             # email.message.EmailMessage, in order
with SmtpSink(logins=True) as smtp:           # offers AUTH without TLS
    smtp.logins                               # (user, password) of each AUTH, in order
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.alerts.redis_server import free_port


class WebhookServer:
    """A tiny HTTP/1.1 server recording JSON POST bodies per path."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[tuple[str, dict[str, Any], int, float]] = []
        self.headers: list[tuple[str, dict[str, str]]] = []
        self._rules: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._always: dict[str, int] = {}
        self._delay_s: dict[str, float] = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
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

    def url(self, path: str) -> str:
        """The json:// URL of `path`."""
        return f"json://127.0.0.1:{self.port}{path}"

    def fail(
        self, path: str, status: int, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `times` posts to `path` with `status`."""
        self._rules.setdefault(path, []).extend([(status, headers or {})] * times)

    def reset(self, path: str) -> None:
        """Forget the pending `fail` answers and `always` status of `path`."""
        self._rules.pop(path, None)
        self._always.pop(path, None)

    def always(self, path: str, status: int | None) -> None:
        """Answer every post to `path` with `status` (None: back to 200)."""
        if status is None:
            self._always.pop(path, None)
        else:
            self._always[path] = status

    def slow(self, path: str, delay_s: float) -> None:
        """Answer every post to `path` `delay_s` late (recorded when it comes)."""
        self._delay_s[path] = delay_s

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """Bodies posted to `path` that were answered 2xx."""
        return [b for p, b, s, _ in self.received if p == path and 200 <= s < 300]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.headers.append((path, headers))
                extra: dict[str, str] = {}
                if path in self._always:
                    status = self._always[path]
                elif self._rules.get(path):
                    status, extra = self._rules[path].pop(0)
                else:
                    status = 200
                loop = asyncio.get_running_loop()
                self.received.append((path, json.loads(body or b"{}"), status, loop.time()))
                await asyncio.sleep(self._delay_s.get(path, 0.0))
                more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n{more}\r\n{{}}".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class SmtpSink:
    """aiosmtpd on a free loopback port, keeping every message it receives; with `logins`, it
    offers AUTH (without TLS) and keeps each login, accepting any."""

    def __init__(self, *, logins: bool = False) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.logins: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        auth: dict[str, Any] = (
            {"authenticator": self._login, "auth_require_tls": False} if logins else {}
        )
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **auth)

    def _login(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        """aiosmtpd authenticator: keep the credentials, accept them."""
        if isinstance(data, LoginPassword):
            with self._lock:
                self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd hook: keep the message."""
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self._lock:
            self.messages.append(msg)
        return "250 OK"

    def url(self, to: str = "ops@example.com") -> str:
        """A mailto:// URL delivering to this sink without TLS or login."""
        return f"mailto://127.0.0.1:{self.port}?from=monitor@example.com&to={to}&mode=insecure"

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()
