"""The daemon's HTTP port: /metrics (Prometheus text), /healthz (JSON), and any JSON routes the
service adds (e.g. /api/state). A deliberately small HTTP/1.1 server on asyncio streams: GET and
HEAD, one request per connection, no dependency; a head past 64 KB is answered 431, a malformed
one 400, and on a loopback address one whose Host is not a loopback name 421; with
`allowed_hosts` (`[http] allowed_hosts`), on any address, one whose Host is neither a loopback
name nor one of those 421 too (see `monitor.request_head`). A route in `query_routes` gets the
query string's parameters (the last value of each); the others ignore it. The routes of the
paths in `threaded` (the expensive ones) run in a worker thread of the server's own, one request
at a time, so the event loop (/healthz, the feeds) goes on meanwhile and they never take the
engine's threads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from urllib.parse import parse_qs

import msgspec

from monitor import logs
from monitor.errors import MonitorError
from monitor.request_head import Refusal, RequestHead, host_allowed, is_loopback, parse_head

Route = Callable[[], tuple[int, str, bytes]]  # -> (status, content type, body)
QueryRoute = Callable[[Mapping[str, str]], tuple[int, str, bytes]]
IO_TIMEOUT_S = 5.0  # to hand an answer over
HEAD_TIMEOUT_S = 2.0  # to read a request's head (a few hundred bytes, sent at once)
MAX_HEAD = 65_536  # bytes of a request's head, past which it is answered 431
# Connections served at once. Each holds a file descriptor: a thousand idle clients used to
# exhaust the process's (a soft limit of 1024), and the daemon died failing to write its store.
# Past it a new connection takes the place of the oldest still sending its head (closed: an
# idle client), so idle ones cannot keep /healthz from answering; with none such (every one
# being answered), it is closed at once (counted).
MAX_CONNECTIONS = 256
# Every answer's: no sniffing a JSON or text body as HTML, no caching, no framing the board.
SAFE_HEADERS = (
    "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nX-Frame-Options: DENY\r\n"
)
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HttpServer:
    """`async with HttpServer(host, port, routes) as server:` serves until the block ends.
    `server.port` is the bound port (useful with port 0). `allowed_hosts` (checked entries of
    `[http] allowed_hosts`): the names, beside the loopback ones, a request's Host may be,
    whatever the address; empty, any on an address not loopback."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: dict[str, Route],
        query_routes: dict[str, QueryRoute] | None = None,
        threaded: Collection[str] = (),
        max_connections: int = MAX_CONNECTIONS,
        allowed_hosts: Collection[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self.query_routes = query_routes or {}
        self.threaded = frozenset(threaded)
        self._server: asyncio.Server | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._log = logs.get("http")
        self.max_connections = max_connections
        self.open = 0  # connections being served
        self.refused = 0  # connections closed at once, past max_connections
        self.dropped = 0  # connections still sending their head, closed for a new one
        self._reading: dict[asyncio.StreamWriter, None] = {}  # (those, oldest first)
        self.loopback_only = is_loopback(host)  # (then Host must name a loopback address)
        self.allowed_hosts = tuple(allowed_hosts)  # (then Host must be a loopback name or one)

    async def __aenter__(self) -> HttpServer:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:  # in use (another daemon?), not a local address, privileged
            # (asyncio's strerror repeats the address: errno's own text is the reason)
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or exc
            raise MonitorError(
                f"[http] cannot listen on {self.host}:{self.port}: {reason}"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        if self.threaded:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-route")
        self._log.info("http_listening", host=self.host, port=self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer, then the connection closes. The request's head gets
        HEAD_TIMEOUT_S, writing the answer IO_TIMEOUT_S: a client that does not read its
        answer (a large one stays in the buffer meanwhile) is cut off, not waited for. Past
        `max_connections` served at once, a new connection takes the place of the oldest still
        sending its head, or is closed at once when there is none."""
        if self.open >= self.max_connections and not self._make_room():
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                self._log.warning("http_connections_refused", refused=self.refused, open=self.open)
            writer.transport.abort()
            return
        self.open += 1
        self._reading[writer] = None
        method = ""
        try:
            try:
                head = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT_S)
            finally:
                self._reading.pop(writer, None)
            if isinstance(head, Refusal):
                status, ctype, body = head.status, "text/plain", head.reason.encode() + b"\n"
            elif head.host is not None and not self._is_served(head.host):
                status, ctype = 421, "text/plain"
                body = _NOT_ALLOWED if self.allowed_hosts else _NOT_LOOPBACK
            else:
                method = head.method
                status, ctype, body = await self._answer(head.method, head.path, head.query)
            allow = "Allow: GET, HEAD\r\n" if status == 405 else ""
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{SAFE_HEADERS}"
                f"{allow}Connection: close\r\n\r\n".encode("latin-1")
                + (b"" if method == "HEAD" else body)  # (HEAD: the head GET would have)
            )
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S)
            if status == 431:  # (the head's rest unread: a close now would reset the answer away)
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_discard(reader), 1.0)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            writer.transport.abort()  # (what is left unsent goes, with the connection)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT_S)
            self.open -= 1

    def _is_served(self, host: str) -> bool:
        """Whether a request whose Host header is `host` is answered: a loopback name always;
        with `allowed_hosts`, one of those; else any when bound to an address not loopback."""
        if self.allowed_hosts:
            return host_allowed(host, self.allowed_hosts)
        return not self.loopback_only or is_loopback(host)

    def _make_room(self) -> bool:
        """Close the oldest connection still sending its head (an idle client, most likely),
        for a new one; False when every connection is being answered."""
        if not self._reading:
            return False
        oldest = next(iter(self._reading))
        del self._reading[oldest]
        oldest.transport.abort()  # (its handler ends, without an answer)
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            self._log.warning("http_idle_connections_dropped", dropped=self.dropped)
        return True

    async def _answer(self, method: str, path: str, query: str) -> tuple[int, str, bytes]:
        """The status, content type and body for a request (from the worker thread for a
        path in `threaded`). A route that raises (a bug) is a 500, logged, not an empty reply."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET or HEAD only\n"
        route: Route
        if path in self.query_routes:
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            route = functools.partial(self.query_routes[path], params)
        elif path in self.routes:
            route = self.routes[path]
        else:
            return 404, "text/plain", b"not found\n"
        try:
            if path in self.threaded and self._worker is not None:
                return await asyncio.get_running_loop().run_in_executor(self._worker, route)
            return route()
        except Exception as exc:  # (one request's failure: the server goes on)
            self._log.error("http_route_failed", path=path, error=repr(exc)[:200])
            return 500, "text/plain", b"internal error\n"


_NOT_LOOPBACK = (
    b"this server is bound to a loopback address and answers only requests for a loopback"
    b" name (Host: localhost, 127.0.0.1 or [::1]); set [http] host to serve others\n"
)

_NOT_ALLOWED = (
    b"this server answers only requests for a name in [http] allowed_hosts or a loopback name"
    b" (Host: localhost, 127.0.0.1 or [::1])\n"
)


async def _read_head(reader: asyncio.StreamReader) -> RequestHead | Refusal:
    """The head of a request, up to its blank line (lines end in CRLF or a bare LF), parsed;
    431 past MAX_HEAD bytes. IncompleteReadError when the client stops sending before its end."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # (a line past the stream's limit, 64 KB)
            return Refusal(431, "request header fields too large")
        size += len(line)
        if size > MAX_HEAD:
            return Refusal(431, "request header fields too large")
        if not line.endswith(b"\n"):  # (the client closed, or was closed, before the end)
            raise asyncio.IncompleteReadError(line, None)
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return parse_head(lines) if lines else Refusal(400, "no request line")
        lines.append(text)


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read what the client still sends, until it closes."""
    while await reader.read(65_536):
        pass


def json_route(
    produce: Callable[[], object], status_of: Callable[[object], int] | None = None
) -> Route:
    """A route answering `produce()` as JSON (status from `status_of`, default 200)."""

    def route() -> tuple[int, str, bytes]:
        value = produce()
        status = status_of(value) if status_of else 200
        return status, "application/json", msgspec.json.encode(value)

    return route


class PortUnavailable(MonitorError):
    """`[http]` cannot listen on its address: most often its port is taken by the daemon's
    previous process, still stopping. Exit 71 (EX_OSERR), not a store's 74: systemd restarts
    it, the fix once the old process is gone (and StartLimitBurst= stops the restarts when the
    cause stays: another program on the port, an address not this machine's)."""


def check_listen(host: str, port: int, *, any_port: bool = False) -> None:
    """Bind `host:port` as the HTTP server will (each address the host resolves to, with
    SO_REUSEADDR as asyncio sets it) and let it go: called before the history is loaded, so a
    port in use fails the start at once, PortUnavailable naming the address and why. With
    `any_port`, a free port of the host's instead (`config check`: whether the host is an
    address of this machine, not whether a running daemon holds the port)."""
    where = f"[http] cannot listen on {host}:{port}"
    try:
        found = socket.getaddrinfo(
            host or None, 0 if any_port else port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:  # (an unknown name; at boot, maybe a DNS not up yet)
        raise PortUnavailable(f"{where}: {exc.strerror}") from None
    for family, kind, proto, _, address in dict.fromkeys(found):
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # (IPv6 off in this kernel or unit: asyncio's server skips it too)
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:  # in use, not a local address (yet), a privileged port
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise PortUnavailable(f"{where}: {reason}") from None
