"""The daemon's HTTP port as `run` meets it."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from tests.cli_here import cli_here
from tests.test_service import write_config

pytestmark = pytest.mark.integration


def test_a_port_already_in_use_stops_the_daemon_with_one_line_naming_it(tmp_path: Path) -> None:
    """When another process listens on `[http] port`, `run` exits 71 (EX_OSERR; it was 74, which
    Troubleshooting gives to the store) with one line naming the address and why, no traceback
    (systemd restarts it: the port may free up)."""
    conf = write_config(tmp_path, f"mm-port-{uuid.uuid4().hex[:8]}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = cli_here(
            "run", "--config", str(conf),
            env={"MARKET_MONITOR__HTTP__PORT": str(port), "MARKET_MONITOR__LOG__LEVEL": "error"},
        )  # fmt: skip
    assert (res.returncode, res.stderr) == (
        71,
        f"market-monitor: error: [http] cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n",
    )


async def test_a_client_that_never_reads_its_answer_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients that send a request for a large answer and never read it: each is cut off once
    IO_TIMEOUT_S has passed, its handler gone with the answer it held (they used to stay, an
    answer in memory each, for as long as the client kept the socket open)."""
    import asyncio

    from monitor import http

    monkeypatch.setattr(http, "IO_TIMEOUT_S", 0.5)
    big = b"x" * 4_000_000
    routes = {"/big": lambda: (200, "application/octet-stream", big)}

    def handlers() -> int:
        return sum(t.get_coro().__qualname__ == "HttpServer._handle" for t in asyncio.all_tasks())

    async with http.HttpServer("127.0.0.1", 0, routes) as server:
        clients = []
        for _ in range(10):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"GET /big HTTP/1.1\r\n\r\n")  # (and never read)
            clients.append(s)
        await asyncio.sleep(0.3)
        assert handlers() == 10  # (each stuck on its answer)
        await asyncio.sleep(1.0)
        assert handlers() == 0
        for s in clients:
            s.close()


async def test_a_route_that_raises_answers_500_and_the_server_goes_on() -> None:
    """A bug in a route is a 500 for that request, logged, not an empty reply; the next
    request is answered."""
    import asyncio

    from monitor.http import HttpServer

    def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("dictionary changed size during iteration")

    routes = {"/broken": broken, "/ok": lambda: (200, "text/plain", b"ok\n")}
    async with HttpServer("127.0.0.1", 0, routes) as server:
        for path, want in (("/broken", b"HTTP/1.1 500 Internal Server Error"), ("/ok", b"ok\n")):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            assert want in answer


async def test_a_threaded_route_leaves_the_loop_to_answer_others_meanwhile() -> None:
    """While a route in `threaded` takes a second, another request is answered at once (it used
    to wait for it: /api/closes ran on the event loop, /healthz waited 24 s behind one); the slow
    one is answered too, and one that raises in the thread is a 500."""
    import asyncio
    import time

    from monitor.http import HttpServer

    def slow(params: dict[str, str]) -> tuple[int, str, bytes]:
        time.sleep(1.0)
        return 200, "text/plain", f"slow {params['n']}\n".encode()

    def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("a bug")

    routes = {"/fast": lambda: (200, "text/plain", b"fast\n"), "/broken": broken}
    async with HttpServer(
        "127.0.0.1", 0, routes, {"/slow": slow}, threaded={"/slow", "/broken"}
    ) as server:

        async def get(path: str) -> tuple[bytes, float]:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            return answer, time.monotonic() - started

        slow_one = asyncio.create_task(get("/slow?n=1"))
        await asyncio.sleep(0.2)
        fast, fast_s = await get("/fast")
        assert fast.endswith(b"\r\n\r\nfast\n") and fast_s < 0.5
        answer, slow_s = await slow_one
        assert answer.endswith(b"\r\n\r\nslow 1\n") and slow_s >= 1.0
        broken_answer, _ = await get("/broken")
        assert broken_answer.startswith(b"HTTP/1.1 500 Internal Server Error")


async def test_head_gets_the_head_of_get_and_a_huge_head_gets_431() -> None:
    """HEAD answers as GET does, without the body (it was 405); a request head past the
    stream's 64 KB limit gets 431 (the connection was dropped with no answer); POST is 405."""
    import asyncio

    from monitor.http import HttpServer

    routes = {"/healthz": lambda: (200, "application/json", b'{"ok":true}\n')}
    async with HttpServer("127.0.0.1", 0, routes) as server:

        async def ask(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            answer = await reader.read()
            writer.close()
            return answer

        head = await ask(b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 12\r\n" in head
        assert head.endswith(b"\r\n\r\n")
        huge = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n"
        assert (await ask(huge)).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
        assert (await ask(b"POST /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await ask(b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b'{"ok":true}\n')


async def test_idle_clients_at_the_cap_make_room_and_busy_ones_refuse_the_next() -> None:
    """Idle clients holding the cap of connections (a head begun, never ended): a new one is
    served, the oldest idle one closed for it (counted, logged once); connections at the cap
    all being answered: the next one is closed at once, unserved (counted, logged once). A
    thousand idle clients used to take every file descriptor, and the daemon died writing its
    store; 256 of them then kept /healthz from answering."""
    import asyncio
    import threading

    from structlog.testing import capture_logs

    from monitor.http import HttpServer

    release = threading.Event()

    def slow() -> tuple[int, str, bytes]:
        release.wait(5)
        return 200, "text/plain", b"slow\n"

    routes = {"/ok": lambda: (200, "text/plain", b"ok\n"), "/slow": slow}
    with capture_logs() as logs:
        async with HttpServer(
            "127.0.0.1", 0, routes, threaded={"/slow"}, max_connections=3
        ) as server:

            async def get(path: str) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
                try:
                    return await asyncio.wait_for(reader.read(), 3)
                except ConnectionResetError:
                    return b""
                finally:
                    writer.close()

            idle = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /ok HTTP/1.1\r\n")  # (and no blank line)
                idle.append((reader, writer))
                await asyncio.sleep(0.05)
            assert server.open == 3
            assert (await get("/ok")).endswith(b"\r\n\r\nok\n")
            assert await asyncio.wait_for(idle[0][0].read(), 2) == b""  # (the oldest: closed)
            assert server.dropped == 1
            for _, w in idle:
                w.close()
            await asyncio.sleep(0.1)
            busy = [asyncio.create_task(get("/slow")) for _ in range(3)]
            await asyncio.sleep(0.3)
            assert server.open == 3
            assert await get("/ok") == b""  # (closed at once, unserved)
            assert server.refused == 1
            release.set()
            assert [(await b).endswith(b"slow\n") for b in busy] == [True] * 3
            assert (await get("/ok")).endswith(b"ok\n")
    assert [e["dropped"] for e in logs if e["event"] == "http_idle_connections_dropped"] == [1]
    assert [e["refused"] for e in logs if e["event"] == "http_connections_refused"] == [1]


async def test_healthz_answers_while_idle_clients_hold_every_connection() -> None:
    """260 clients that each sent "GET /healthz HTTP/1.1" and no blank line hold more than the
    cap of connections: /healthz still answers, at once (it was reset for 5 s at a time,
    renewably, and `status` said down)."""
    import asyncio
    import time

    from monitor.http import MAX_CONNECTIONS, HttpServer

    routes = {"/healthz": lambda: (200, "application/json", b'{"status":"healthy"}\n')}
    async with HttpServer("127.0.0.1", 0, routes) as server:
        idle = []
        for _ in range(MAX_CONNECTIONS + 4):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            idle.append(writer)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'"healthy"}\n')
        assert time.monotonic() - started < 1.0
        assert server.open <= MAX_CONNECTIONS
        for w in idle:
            w.close()


async def ask(port: int, request: bytes) -> bytes:
    """The answer of the server at `port` to the raw `request`."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET\r\n\r\n", b"400 Bad Request"),
        (b"GET /healthz\r\n\r\n", b"400 Bad Request"),
        (b"GET /healthz HTTP/1.1 more\r\n\r\n", b"400 Bad Request"),
        (b"GET healthz HTTP/1.1\r\n\r\n", b"400 Bad Request"),
        (b"G(T /healthz HTTP/1.1\r\n\r\n", b"400 Bad Request"),
        (b"GET /healthz SPDY/3\r\n\r\n", b"400 Bad Request"),
        (b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n", b"400 Bad Request"),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400 Bad Request"),
        (b"POST /healthz HTTP/1.1\r\n\r\n", b"405 Method Not Allowed"),
        (b"GET /healthz HTTP/1.1\nHost: localhost\n\n", b"200 OK"),  # (bare LF)
        (b"GET http://127.0.0.1:9/healthz HTTP/1.1\r\n\r\n", b"200 OK"),  # (absolute form)
        (b"GET /healthz HTTP/1.0\r\n\r\n", b"200 OK"),
    ],
)
async def test_a_malformed_request_gets_400_saying_why(request_bytes: bytes, status: bytes) -> None:
    """A request line that is not METHOD /path HTTP/1.x, a header line without a colon or two
    Host headers are a 400 whose body says what is wrong (GET alone was a 405); lines ending
    in a bare LF are read (they were waited on for 5 s and dropped) and a proxy's absolute URL
    is the path it names (it was a 404)."""
    from monitor.http import HttpServer

    routes = {"/healthz": lambda: (200, "application/json", b"{}\n")}
    async with HttpServer("127.0.0.1", 0, routes) as server:
        answer = await ask(server.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer
    if status.startswith(b"400"):
        assert answer.split(b"\r\n\r\n")[1] in (
            b"the request line must be METHOD /path HTTP/1.1\n",
            b"a header line must be Name: value\n",
            b"more than one Host header\n",
            b"the target must be a path (/healthz) or an http:// URL\n",
        )


@pytest.mark.parametrize(
    ("bound", "host", "status"),
    [
        ("127.0.0.1", "evil.example", b"421 Misdirected Request"),
        ("127.0.0.1", "evil.example:9108", b"421 Misdirected Request"),
        ("127.0.0.1", "127.0.0.1.evil.example", b"421 Misdirected Request"),
        ("127.0.0.1", "localhost:9108", b"200 OK"),
        ("127.0.0.1", "LOCALHOST", b"200 OK"),
        ("127.0.0.1", "board.localhost:8000", b"200 OK"),
        ("127.0.0.1", "127.0.0.1:9108", b"200 OK"),
        ("127.0.0.1", "127.1.2.3", b"200 OK"),
        ("127.0.0.1", "[::1]:9108", b"200 OK"),
        ("127.0.0.1", None, b"200 OK"),
        ("0.0.0.0", "monitor.example:9108", b"200 OK"),
    ],
)
async def test_a_loopback_server_answers_loopback_names_only(
    bound: str, host: str | None, status: bytes
) -> None:
    """Bound to a loopback address, the server answers 421 to a Host that is not a loopback
    name, with a body that says so (a page whose name was made to resolve to 127.0.0.1, DNS
    rebinding, read /api/state from the browser); localhost, *.localhost, 127.x and [::1] at
    any port, or no Host, are answered; bound to every address, any Host is."""
    from monitor.http import HttpServer

    routes = {"/api/state": lambda: (200, "application/json", b"{}\n")}
    head = b"GET /api/state HTTP/1.1\r\n" + (f"Host: {host}\r\n".encode() if host else b"")
    async with HttpServer(bound, 0, routes) as server:
        answer = await ask(server.port, head + b"\r\n")
        absolute = await ask(server.port, f"GET http://{host}/api/state HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer
    if host is not None:  # (a proxy's absolute URL: its authority is the Host)
        assert absolute.startswith(b"HTTP/1.1 " + status + b"\r\n"), absolute
    if status.startswith(b"421"):
        assert answer.endswith(
            b"\r\n\r\nthis server is bound to a loopback address and answers only requests for"
            b" a loopback name (Host: localhost, 127.0.0.1 or [::1]); set [http] host to serve"
            b" others\n"
        )


ALLOWED = ["monitor.example.com", "*.board.example", "192.0.2.7:9108", "[2001:db8::7]"]


@pytest.mark.parametrize(
    ("bound", "host", "status"),
    [
        ("0.0.0.0", "evil.example", b"421 Misdirected Request"),
        ("0.0.0.0", "monitor.example.com.evil.example", b"421 Misdirected Request"),
        ("0.0.0.0", "evilmonitor.example.com", b"421 Misdirected Request"),
        ("0.0.0.0", "board.example", b"421 Misdirected Request"),
        ("0.0.0.0", "192.0.2.7:80", b"421 Misdirected Request"),
        ("0.0.0.0", "192.0.2.8:9108", b"421 Misdirected Request"),
        ("0.0.0.0", "monitor.example.com", b"200 OK"),
        ("0.0.0.0", "MONITOR.Example.com.:9108", b"200 OK"),
        ("0.0.0.0", "a.board.example", b"200 OK"),
        ("0.0.0.0", "a.b.board.example:8443", b"200 OK"),
        ("0.0.0.0", "192.0.2.7:9108", b"200 OK"),
        ("0.0.0.0", "[2001:db8:0::7]:9108", b"200 OK"),
        ("0.0.0.0", "localhost:9108", b"200 OK"),
        ("0.0.0.0", "127.0.0.1", b"200 OK"),
        ("0.0.0.0", None, b"200 OK"),
        ("127.0.0.1", "monitor.example.com:9108", b"200 OK"),
        ("127.0.0.1", "evil.example", b"421 Misdirected Request"),
        ("127.0.0.1", "[::1]:9108", b"200 OK"),
    ],
)
async def test_allowed_hosts_limit_the_host_whatever_the_address(
    bound: str, host: str | None, status: bytes
) -> None:
    """With `allowed_hosts`, a Host that is neither one of them (a name, a name under a `*.`
    domain, an address; its port when the entry has one) nor a loopback name is a 421 saying
    so, even bound to every address (the container's 0.0.0.0, where a page that had its name
    rebound to the host read /api/state); on a loopback address the names are answered too."""
    from monitor.http import HttpServer

    routes = {"/api/state": lambda: (200, "application/json", b"{}\n")}
    head = b"GET /api/state HTTP/1.1\r\n" + (f"Host: {host}\r\n".encode() if host else b"")
    async with HttpServer(bound, 0, routes, allowed_hosts=ALLOWED) as server:
        answer = await ask(server.port, head + b"\r\n")
        absolute = await ask(server.port, f"GET http://{host}/api/state HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer
    if host is not None:  # (a proxy's absolute URL: its authority is the Host)
        assert absolute.startswith(b"HTTP/1.1 " + status + b"\r\n"), absolute
    if status.startswith(b"421"):
        assert answer.endswith(
            b"\r\n\r\nthis server answers only requests for a name in [http] allowed_hosts or a"
            b" loopback name (Host: localhost, 127.0.0.1 or [::1])\n"
        )


async def test_the_daemon_answers_the_names_of_its_allowed_hosts_only(tmp_path: Path) -> None:
    """`[http] allowed_hosts` reaches the daemon's server: /api/state is answered for a
    listed name and a loopback one, 421 for another name."""
    from tests.security.daemon import write_config as daemon_config
    from tests.test_health import daemon_of

    prefix = f"mm-allowed-{uuid.uuid4().hex[:8]}"
    conf = daemon_config(tmp_path, feeds=[], redis={"stream": prefix, "channel": prefix})
    conf.write_text(
        conf.read_text().replace("[http]\n", '[http]\nallowed_hosts = ["board.example"]\n')
    )
    async with daemon_of(conf) as daemon:
        port = int(daemon.counters.get("http_port"))
        answers = {}
        for host in ("board.example", "localhost", "evil.example"):
            answer = await ask(port, f"GET /api/state HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            answers[host] = answer.split(b"\r\n")[0]
    assert answers == {
        "board.example": b"HTTP/1.1 200 OK",
        "localhost": b"HTTP/1.1 200 OK",
        "evil.example": b"HTTP/1.1 421 Misdirected Request",
    }


async def test_every_answer_says_no_sniffing_no_caching_no_framing() -> None:
    """The board and the JSON and text answers carry nosniff, no-store and DENY; a 405 says
    which methods are allowed."""
    import asyncio

    from monitor.http import HttpServer

    routes = {"/": lambda: (200, "text/html; charset=utf-8", b"<p>board</p>")}
    async with HttpServer("127.0.0.1", 0, routes) as server:
        heads = []
        for method in ("GET", "POST"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"{method} / HTTP/1.1\r\n\r\n".encode())
            heads.append((await reader.read()).split(b"\r\n\r\n")[0].decode())
            writer.close()
    for head in heads:
        for line in ("X-Content-Type-Options: nosniff", "Cache-Control: no-store"):
            assert line in head.splitlines(), head
        assert "X-Frame-Options: DENY" in head.splitlines()
    assert "Allow: GET, HEAD" in heads[1].splitlines() and "Allow" not in heads[0]
