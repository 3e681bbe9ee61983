"""Fake Alpaca, Polygon and Finnhub streams, and a fake bars REST API, all on 127.0.0.1 port 0.

`FakeStream` speaks one provider's handshake (Alpaca and Polygon: connected -> auth -> subscribe
acks; Finnhub: token in the query string, unacknowledged subscribes), records what clients send,
and lets a test push frames, drop every connection, hold new connections at a gate, or answer the
first connections with an Alpaca error (406 connection limit, 402 auth failed) or leave their
auth unanswered.
`FakeRest` is a tiny HTTP/1.1 server (asyncio.start_server) for Alpaca `/v2/stocks/bars` (one
symbol per page, to exercise `next_page_token`) and Polygon `/v2/aggs/ticker/...`: it returns a
bar for every minute of the requested window, made by `rest_bar`; or, for a symbol given a
`tape` of trades, the true bar of each minute it traded in (`tape_bar`), none for the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

UTC = dt.UTC
ProviderName = Literal["alpaca", "polygon", "finnhub"]


class FakeStream:
    """One provider's stream; `url` is valid after `async with`."""

    def __init__(
        self,
        provider: ProviderName,
        *,
        key: str = "KEY",
        secret: str = "SECRET",
        refuse: int = 0,
        refuse_code: int = 406,
        unanswered: int = 0,
    ) -> None:
        self.provider = provider
        self.key = key
        self.secret = secret
        self.refuse = refuse  # how many connections get `refuse_code` and are closed
        self.refuse_code = refuse_code
        self.unanswered = unanswered  # how many connections get "connected" and no reply after
        self.received: list[Any] = []
        self.connect_times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.subscribed = asyncio.Event()
        self.subscribes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self._clients: set[ServerConnection] = set()
        self._msgpack: dict[ServerConnection, bool] = {}
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/stream"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def push(self, frame: Any) -> None:
        """Send `frame` (a JSON-able value, msgpack on msgpack connections) to every client."""
        for ws in list(self._clients):
            await self._send(ws, frame)

    async def push_raw(self, frame: bytes | str) -> None:
        """Send these exact bytes or text to every client."""
        for ws in list(self._clients):
            await ws.send(frame)

    async def drop(self) -> None:
        """Cut every connection without a closing handshake."""
        self.subscribed.clear()
        for ws in list(self._clients):
            assert ws.transport is not None
            ws.transport.abort()

    async def wait_connections(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until `count` connections were attempted."""
        async with asyncio.timeout(timeout_s):
            while len(self.connect_times) < count:  # noqa: ASYNC110 - polling a list
                await asyncio.sleep(0.01)

    async def _send(self, ws: ServerConnection, frame: Any) -> None:
        if self._msgpack.get(ws):
            await ws.send(msgspec.msgpack.encode(frame))
        else:
            await ws.send(msgspec.json.encode(frame).decode())

    async def _handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        self.connect_times.append(loop.time())
        request = ws.request
        assert request is not None
        self.headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        self.paths.append(request.path)
        self._msgpack[ws] = request.headers.get("Content-Type") == "application/msgpack"
        await self.gate.wait()
        try:
            if self.provider == "alpaca":
                await self._alpaca(ws)
            elif self.provider == "polygon":
                await self._polygon(ws)
            else:
                await self._finnhub(ws)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(ws)

    async def _alpaca(self, ws: ServerConnection) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            error = {"T": "error", "code": self.refuse_code, "msg": "connection limit exceeded"}
            await self._send(ws, [error])
            await ws.close()
            return
        await self._send(ws, [{"T": "success", "msg": "connected"}])
        unanswered = self.unanswered > 0
        self.unanswered -= unanswered
        async for raw in ws:
            message = self._decode(ws, raw)
            self.received.append(message)
            if unanswered:
                continue
            if message.get("action") == "auth":
                if (message.get("key"), message.get("secret")) != (self.key, self.secret):
                    await self._send(ws, [{"T": "error", "code": 402, "msg": "auth failed"}])
                    await ws.close()
                    return
                await self._send(ws, [{"T": "success", "msg": "authenticated"}])
            elif message.get("action") == "subscribe":
                ack = {k: v for k, v in message.items() if k != "action"}
                await self._send(ws, [{"T": "subscription", **ack}])
                self._on_subscribed(ws)

    async def _polygon(self, ws: ServerConnection) -> None:
        await self._send(
            ws, [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
        )
        async for raw in ws:
            message = self._decode(ws, raw)
            self.received.append(message)
            if message.get("action") == "auth":
                if message.get("params") != self.key:
                    failed = {"ev": "status", "status": "auth_failed", "message": "bad key"}
                    await self._send(ws, [failed])
                    await ws.close()
                    return
                ok = {"ev": "status", "status": "auth_success", "message": "authenticated"}
                await self._send(ws, [ok])
            elif message.get("action") == "subscribe":
                acks = [
                    {"ev": "status", "status": "success", "message": f"subscribed to: {p}"}
                    for p in message["params"].split(",")
                ]
                await self._send(ws, acks)
                self._on_subscribed(ws)

    async def _finnhub(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = dict(parse_qsl(urlsplit(ws.request.path).query))
        if query.get("token") != self.key:
            await ws.close(1008, "invalid token")
            return
        self._on_subscribed(ws)
        async for raw in ws:
            self.received.append(self._decode(ws, raw))

    def _on_subscribed(self, ws: ServerConnection) -> None:
        self._clients.add(ws)
        self.subscribes += 1
        self.subscribed.set()

    def _decode(self, ws: ServerConnection, raw: bytes | str) -> Any:
        if isinstance(raw, bytes) and self._msgpack.get(ws):
            return msgspec.msgpack.decode(raw)
        return msgspec.json.decode(raw)


def rest_bar(symbol: str, start: dt.datetime) -> dict[str, float]:
    """The OHLCV the fake REST API serves for one symbol and minute."""
    base = 10.0 + len(symbol) + start.minute / 100
    return {
        "o": base,
        "h": base + 0.5,
        "l": base - 0.5,
        "c": base + 0.25,
        "v": 1000.0 + start.minute,
    }


Trade = tuple[dt.datetime, float, float]  # (time, price, size)


def tape_bar(trades: list[Trade]) -> dict[str, float]:
    """The OHLCV of `trades` (one minute's, in time order), as a REST API builds it."""
    prices = [price for _, price, _ in trades]
    return {
        "o": prices[0],
        "h": max(prices),
        "l": min(prices),
        "c": prices[-1],
        "v": sum(size for _, _, size in trades),
    }


class FakeRest:
    """Alpaca and Polygon minute-bar endpoints; `requests` records (path, query, headers)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        # symbol -> its trades: its bars are the true ones of those (`tape_bar`), none for
        # the minutes it did not trade in
        self.tape: dict[str, list[Trade]] = {}
        self.fail_next = 0  # how many requests get a 503
        # symbol -> how many more of its requests get a 500 (-1: every one)
        self.fail_symbols: dict[str, int] = {}
        # symbol -> the Retry-After its next request's 429 says (one 429 each)
        self.rate_limited: dict[str, str] = {}
        # symbol -> the X-RateLimit-Reset (epoch seconds) its next request's 429 says, as
        # Alpaca's do (no Retry-After; one 429 each)
        self.window_reset: dict[str, str] = {}
        self.broken_next_url: set[str] = set()  # Polygon symbols whose next_url is malformed
        # symbols whose pages loop: Alpaca's next_page_token always "1", Polygon's next_url
        # always the second page's
        self.looping: set[str] = set()
        # Polygon symbols whose pages never end: a new next_url each time, the same 3 bars
        self.endless: set[str] = set()
        self.invalid_symbols: set[str] = set()  # a request naming one is refused: 400
        # symbol -> the status (404, 422) a request naming it is refused with, saying why as
        # Polygon does ("ticker not found")
        self.unknown_symbols: dict[str, int] = {}
        self.answering = asyncio.Event()  # cleared: requests wait (a slow REST API)
        self.answering.set()
        # windows, by their start ("2024-07-12T14:09:00Z"), whose requests (every page of
        # them) wait until `released` is set
        self.held_starts: set[str] = set()
        self.released = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                parts = urlsplit(target)
                query = dict(parse_qsl(parts.query))
                self.requests.append((parts.path, query, headers))
                await self.answering.wait()
                if _start_asked(parts.path, query) in self.held_starts:
                    await self.released.wait()
                status, body = self._route(parts.path, query)
                extra = ""
                if status == 429:
                    asked = query["symbols"].split(",") if "symbols" in query else []
                    asked += parts.path.split("/")[4:5]
                    waits = [self.rate_limited.pop(a) for a in asked if a in self.rate_limited]
                    resets = [self.window_reset.pop(a) for a in asked if a in self.window_reset]
                    extra = f"retry-after: {waits[0]}\r\n" if waits else ""
                    extra += f"x-ratelimit-reset: {resets[0]}\r\n" if resets else ""
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _route(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        if self.fail_next > 0:
            self.fail_next -= 1
            return 503, b"{}"
        asked = query["symbols"].split(",") if "symbols" in query else path.split("/")[4:5]
        failing = [s for s in asked if self.fail_symbols.get(s, 0)]
        for symbol in failing:
            self.fail_symbols[symbol] -= self.fail_symbols[symbol] > 0
        if failing:
            return 500, b"{}"
        invalid = [s for s in asked if s in self.invalid_symbols]
        if invalid:
            return 400, msgspec.json.encode(
                {"code": 42210000, "message": f"invalid symbol: {invalid[0]}"}
            )
        unknown = [s for s in asked if s in self.unknown_symbols]
        if unknown:
            return self.unknown_symbols[unknown[0]], msgspec.json.encode(
                {"status": "NOT_FOUND", "message": f"ticker not found: {unknown[0]}"}
            )
        if any(a in self.rate_limited or a in self.window_reset for a in asked):
            return 429, b"{}"
        if path == "/v2/stocks/bars":
            symbols = query["symbols"].split(",")
            page = int(query.get("page_token", "0"))
            start = dt.datetime.fromisoformat(query["start"])
            end = dt.datetime.fromisoformat(query["end"])
            symbol = symbols[page % len(symbols)]  # (a looping token past the last)
            bars = [
                {"t": m.isoformat().replace("+00:00", "Z"), **bar, "n": 3, "vw": 1}
                for m in _minutes(start, end)
                if (bar := self._bar(symbol, m)) is not None
            ]
            token = str(page + 1) if page + 1 < len(symbols) else None
            if self.looping.intersection(symbols):
                token = "1"
            return 200, msgspec.json.encode({"bars": {symbol: bars}, "next_page_token": token})
        if path.startswith("/v2/aggs/ticker/"):
            pieces = path.split("/")
            symbol, from_ms, to_ms = pieces[4], int(pieces[8]), int(pieces[9])
            start = dt.datetime.fromtimestamp(from_ms / 1000, UTC)
            end = dt.datetime.fromtimestamp(to_ms / 1000, UTC)
            minutes = [m for m in _minutes(start, end) if self._bar(symbol, m) is not None]
            cursor = int(query.get("cursor", "0"))
            served = minutes[:3] if symbol in self.endless else minutes[cursor : cursor + 3]
            results = [{"t": int(m.timestamp() * 1000), **self._bar(symbol, m)} for m in served]
            doc: dict[str, Any] = {"results": results, "status": "OK"}
            if cursor + 3 < len(minutes) or symbol in self.looping | self.endless:
                doc["next_url"] = f"{self.url}{path}?cursor={cursor + 3}"
                if symbol in self.broken_next_url:
                    doc["next_url"] = "http://[::1"
                if symbol in self.looping:
                    doc["next_url"] = f"{self.url}{path}?cursor=3"
            return 200, msgspec.json.encode(doc)
        return 404, b"{}"

    def _bar(self, symbol: str, minute: dt.datetime) -> Any:
        """The bar served for `symbol`'s `minute` (None: none, it did not trade then)."""
        if symbol not in self.tape:
            return rest_bar(symbol, minute)
        end = minute + dt.timedelta(minutes=1)
        trades = sorted(t for t in self.tape[symbol] if minute <= t[0] < end)
        return tape_bar(trades) if trades else None


def _start_asked(path: str, query: dict[str, str]) -> str | None:
    """The start of the window a request asks for, as Alpaca's `start` ("...T14:09:00Z")."""
    if path.startswith("/v2/aggs/ticker/"):
        start = dt.datetime.fromtimestamp(int(path.split("/")[8]) / 1000, UTC)
        return start.isoformat().replace("+00:00", "Z")
    return query.get("start")


def _minutes(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Minute starts m with start <= m <= end."""
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += dt.timedelta(minutes=1)
    out = []
    while first <= end:
        out.append(first)
        first += dt.timedelta(minutes=1)
    return out
