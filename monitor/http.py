"""The daemon's HTTP port: /metrics (Prometheus text), /healthz (JSON), and any JSON routes the
service adds (e.g. /api/state). A deliberately small HTTP/1.1 server on asyncio streams: GET and
HEAD, one request per connection, no dependency; a head past 64 KB is answered 431. A route in
`query_routes` gets the query string's parameters (the last value of each); the others ignore
it. The routes of the paths in `threaded` (the expensive ones) run in a worker thread of the
server's own, one request at a time, so the event loop (/healthz, the feeds) goes on meanwhile
and they never take the engine's threads."""

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

Route = Callable[[], tuple[int, str, bytes]]  # -> (status, content type, body)
QueryRoute = Callable[[Mapping[str, str]], tuple[int, str, bytes]]
IO_TIMEOUT_S = 5.0  # to read a request, and to hand its answer over
# Connections served at once; past it a new one is closed at once (counted). Each holds a file
# descriptor for up to IO_TIMEOUT_S: a thousand idle clients used to exhaust the process's
# (a soft limit of 1024), and the daemon died failing to write its store.
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
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HttpServer:
    """`async with HttpServer(host, port, routes) as server:` serves until the block ends.
    `server.port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: dict[str, Route],
        query_routes: dict[str, QueryRoute] | None = None,
        threaded: Collection[str] = (),
        max_connections: int = MAX_CONNECTIONS,
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
        """One request, one answer, then the connection closes. Reading the request and
        writing the answer each get IO_TIMEOUT_S: a client that does not read its answer (a
        large one stays in the buffer meanwhile) is cut off, not waited for. Past
        `max_connections` served at once, a new connection is closed at once."""
        if self.open >= self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                self._log.warning("http_connections_refused", refused=self.refused, open=self.open)
            writer.transport.abort()
            return
        self.open += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
            except asyncio.LimitOverrunError:  # (a head past the stream's limit, 64 KB)
                method, path, query = "", "", ""
                status, ctype, body = 431, "text/plain", b"request header fields too large\n"
            else:
                method, _, rest = head.decode("latin-1").partition(" ")
                path, _, query = rest.partition(" ")[0].partition("?")
                status, ctype, body = await self._answer(method, path, query)
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
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.transport.abort()  # (what is left unsent goes, with the connection)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT_S)
            self.open -= 1

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


def check_listen(host: str, port: int) -> None:
    """Bind `host:port` as the HTTP server will (each address the host resolves to, with
    SO_REUSEADDR as asyncio sets it) and let it go: called before the history is loaded, so a
    port in use fails the start at once, PortUnavailable naming the address and why."""
    where = f"[http] cannot listen on {host}:{port}"
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
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
