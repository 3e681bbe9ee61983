"""RestBackfill: the minute bars a stream missed, fetched from the provider's REST API.

Alpaca: `GET {url}/v2/stocks/bars?symbols=A,B&timeframe=1Min&start=..&end=..` with the key headers,
following `next_page_token`. Polygon: `GET {url}/v2/aggs/ticker/{sym}/range/1/minute/{from}/{to}`
per symbol with `apiKey`, following `next_url`. Bars come back as one FeedBatch of minute bars
(bad bars as rejections), which the engine upserts by symbol and start.

httpx types stay here: a network failure, a 429 (with how long it asks to wait: its Retry-After,
or Alpaca's X-RateLimit-Reset) or a 5xx is a `TransientError`; a 401 / 403 is a
`ConfigError`. The API key never appears in an error message or a log (`monitor.urls.mask_url`).

Paging is followed with two guards (`Paging`): a page token or next URL given again is a loop,
failed at once; and a request's bars never outnumber its symbols times the window's minutes
(one bar each a minute: a server sending more is failed before it fills the memory).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
import msgspec
import polars as pl

from monitor.core.model import FeedBatch, Rejection
from monitor.errors import ConfigError, MonitorError, TransientError
from monitor.feeds.provider import Columns, datetime_us, ms_us, rejection
from monitor.urls import mask_url
from monitor.waiting import retry_after

__all__ = ["Fetched", "RestBackfill", "mask_url"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


class Fetched(NamedTuple):
    """What `RestBackfill.fetch` got: the bars, the symbols it could not get, with why, the
    longest wait a 429 asked for before asking again (its Retry-After, in seconds), the
    symbols of requests refused as bad (400, 404, 422: a symbol the provider does not take
    fails its whole group; asked one by one, it fails alone), and those of them refused in a
    request naming that symbol alone (Polygon's always; Alpaca's asked `one_by_one`, or a
    group of one)."""

    batch: FeedBatch
    failed: dict[str, str]
    wait_s: float | None = None
    refused: frozenset[str] = frozenset()
    refused_alone: frozenset[str] = frozenset()


class Refused(TransientError):
    """A 400, 404 or 422: the provider refuses the request as it is (a symbol it does not
    take, say); asked again, it refuses again."""


class Paging(TransientError):
    """Pages that would not end: a page token (Alpaca) or next URL (Polygon) given again, or
    more bars than the window has minutes for the symbols asked."""


class RateLimited(TransientError):
    """A 429: asked to wait `retry_after_s` (None: it did not say) before asking again."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RestBackfill:
    """Fetch minute bars for a window from Alpaca or Polygon; an async context manager.

    `fetch` returns the bars whose start lies in [start, end), and the symbols it could not get.
    """

    def __init__(
        self,
        provider: Literal["alpaca", "polygon"],
        url: str,
        *,
        key: str,
        secret: str | None = None,
        alpaca_feed: str | None = None,
        timeout_s: float = 10.0,
        symbols_per_request: int = 100,
        concurrency: int = 4,
        max_pages: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if provider == "alpaca" and not secret:
            raise ConfigError("backfill.secret: alpaca REST needs the API secret")
        headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret or ""}
        self.provider = provider
        self._url = url.rstrip("/")
        self._key = key
        self._secret = secret
        self._alpaca_feed = alpaca_feed
        self._per_request = symbols_per_request
        # (Alpaca's groups one at a time, as its rate limit is per minute for the whole key;
        # Polygon's symbols `concurrency` at a time)
        self._limit = asyncio.Semaphore(1 if provider == "alpaca" else concurrency)
        self._limited = False  # a 429 seen in this fetch: the groups not asked yet are not
        self._max_pages = max_pages
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            transport=transport,
            headers=headers if provider == "alpaca" else None,
        )

    def __repr__(self) -> str:
        return f"RestBackfill({self.provider}, {self._url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def fetch(
        self,
        symbols: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        *,
        feed: str,
        one_by_one: bool = False,
    ) -> Fetched:
        """Minute bars of `symbols` starting in [start, end), as a batch for `feed`, and the
        symbols whose requests failed, with why: one refused or failing symbol (Polygon asks
        symbol by symbol) or group of symbols (Alpaca asks `symbols_per_request` at a time)
        costs only its own bars (`one_by_one`: Alpaca's symbols a request each, to find the one
        a group was refused for). Refused credentials (401, 403) raise ConfigError."""
        window = ((start - _EPOCH) // _ONE_US, (end - _EPOCH) // _ONE_US)
        if self.provider == "alpaca":
            step = 1 if one_by_one else self._per_request
            groups = [list(symbols[i : i + step]) for i in range(0, len(symbols), step)]
        else:
            groups = [[symbol] for symbol in symbols]
        self._limited = False
        results = await asyncio.gather(
            *(self._group(group, start, end, window) for group in groups), return_exceptions=True
        )
        batch, failed = FeedBatch.empty(feed), dict[str, str]()
        refused, alone = set[str](), set[str]()  # (alone: refused in a request of its own)
        frames, waits = [batch.minute_bars], [0.0]
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, ConfigError):
                raise result
            if isinstance(result, MonitorError):
                failed.update(dict.fromkeys(group, str(result)))
                if isinstance(result, RateLimited) and result.retry_after_s is not None:
                    waits.append(result.retry_after_s)
                if isinstance(result, Refused):
                    refused.update(group)
                    if len(group) == 1:
                        alone.update(group)
            elif isinstance(result, Exception):  # (a reply nobody foresaw: that group's)
                failed.update(dict.fromkeys(group, f"{self.provider} REST: {result!r}"))
            elif isinstance(result, BaseException):
                raise result
            else:
                cols, rejections = result
                part = cols.batch(feed, rejections)
                frames.append(part.minute_bars)
                batch.rejections += part.rejections
        batch.minute_bars = pl.concat(frames, how="vertical")
        return Fetched(batch, failed, max(waits) or None, frozenset(refused), frozenset(alone))

    async def _group(
        self, symbols: list[str], start: dt.datetime, end: dt.datetime, window: tuple[int, int]
    ) -> tuple[Columns, list[Rejection]]:
        """The bars of one request's symbols (all its pages), or its error."""
        cols, rejections = Columns(), list[Rejection]()
        async with self._limit:
            if self._limited:  # (asking on would only be refused again, and count against us)
                raise RateLimited(f"{self.provider} REST: not asked after a 429", None)
            if self.provider == "alpaca":
                await self._alpaca(symbols, start, end, window, cols, rejections)
            else:
                await self._polygon(symbols[0], window, cols, rejections)
        return cols, rejections

    async def _alpaca(
        self,
        symbols: list[str],
        start: dt.datetime,
        end: dt.datetime,
        window: tuple[int, int],
        cols: Columns,
        rejections: list[Rejection],
    ) -> None:
        params: dict[str, str | int] = {
            "symbols": ",".join(symbols),
            "timeframe": "1Min",
            "start": _rfc3339(start),
            "end": _rfc3339(end - dt.timedelta(seconds=1)),
            "limit": 10_000,
            "adjustment": "raw",
        }
        if self._alpaca_feed:
            params["feed"] = self._alpaca_feed
        pages = _Pages("alpaca REST", "page token", len(symbols), window)
        for _ in range(self._max_pages):
            doc = await self._get(f"{self._url}/v2/stocks/bars", params)
            token = doc.get("next_page_token") if isinstance(doc, dict) else None
            token = pages.next(str(token)) if token else None
            bars = doc.get("bars") if isinstance(doc, dict) else None
            for symbol, rows in (bars or {}).items() if isinstance(bars, dict) else ():
                for row in rows if isinstance(rows, list) else [rows]:
                    _add(cols, rejections, symbol, row, "t", datetime_us, window)
            pages.check_size(cols, rejections)
            if token is None:
                return
            params["page_token"] = token
        raise TransientError(f"alpaca REST: more than {self._max_pages} pages")

    async def _polygon(
        self, symbol: str, window: tuple[int, int], cols: Columns, rejections: list[Rejection]
    ) -> None:
        from_ms, to_ms = window[0] // 1000, (window[1] - 1) // 1000
        url = (
            f"{self._url}/v2/aggs/ticker/{quote(symbol, safe='')}/range/1/minute/{from_ms}/{to_ms}"
        )
        # (raw prices, as the stream's: bars adjusted for a split since would mix two scales
        # in one session bar; Alpaca's are asked for as `adjustment=raw` alike)
        params: dict[str, str | int] = {"adjusted": "false", "sort": "asc", "limit": 50_000}
        pages = _Pages(f"polygon REST ({symbol})", "next_url", 1, window)
        for _ in range(self._max_pages):
            doc = await self._get(url, {**params, "apiKey": self._key})
            next_url = doc.get("next_url") if isinstance(doc, dict) else None
            next_url = pages.next(next_url) if next_url and isinstance(next_url, str) else None
            results = doc.get("results") if isinstance(doc, dict) else None
            for row in results if isinstance(results, list) else ():
                _add(cols, rejections, symbol, row, "t", ms_us, window)
            pages.check_size(cols, rejections)
            if next_url is None:
                return
            url, params = _split_query(next_url)
        raise TransientError(f"polygon REST: more than {self._max_pages} pages for {symbol}")

    async def _get(self, url: str, params: dict[str, str | int]) -> Any:
        try:
            response = await self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise TransientError(f"{self.provider} REST: {self._mask(str(exc))}") from exc
        status = response.status_code
        if status in (401, 403):
            raise ConfigError(f"{self.provider} REST refused the credentials (HTTP {status})")
        if status == 429:
            self._limited = True
            headers = response.headers
            wait = retry_after(headers.get("retry-after"))
            if wait is None:  # (Alpaca says when its window resets instead)
                wait = _reset_in(headers.get("x-ratelimit-reset"))
            raise RateLimited(f"{self.provider} REST: HTTP 429 for {mask_url(url)}", wait)
        if status in (400, 404, 422):
            said = self._mask(response.text[:200].strip())  # (its reason: "invalid symbol")
            raise Refused(f"{self.provider} REST: HTTP {status} for {mask_url(url)}: {said}")
        if status != 200:
            raise TransientError(f"{self.provider} REST: HTTP {status} for {mask_url(url)}")
        try:
            return msgspec.json.decode(response.content)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise TransientError(f"{self.provider} REST: a response that is not JSON") from exc

    def _mask(self, text: str) -> str:
        for secret in (self._key, self._secret):
            if secret:
                text = text.replace(secret, "***")
        return text


class _Pages:
    """One request's paging, guarded: `next` refuses a token or URL given before (a server
    paging in a loop would be followed to `max_pages`), `check_size` more rows than one a
    minute for each symbol asked (rejected rows count: each is held as a Rejection)."""

    def __init__(self, what: str, cursor: str, symbols: int, window: tuple[int, int]) -> None:
        self._what = what
        self._cursor = cursor
        self._seen: set[str] = set()
        minutes = -(-(window[1] - window[0]) // 60_000_000)
        self._most = symbols * max(minutes, 1)

    def next(self, cursor: str) -> str:
        """`cursor`, the next page's token or URL, unless it came before."""
        if cursor in self._seen:
            shown = mask_url(cursor)[:120]
            raise Paging(f"{self._what}: the {self._cursor} {shown!r} came again (pages in a loop)")
        self._seen.add(cursor)
        return cursor

    def check_size(self, cols: Columns, rejections: list[Rejection]) -> None:
        """Fail when the rows kept outnumber the window's minutes for the symbols asked."""
        rows = len(cols.m_us) + len(rejections)
        if rows > self._most:
            raise Paging(
                f"{self._what}: {rows:,} bars, more than one a minute for each symbol asked"
                f" ({self._most:,}): paging stopped"
            )


def _add(
    cols: Columns,
    rejections: list[Rejection],
    symbol: str,
    row: object,
    ts_key: str,
    to_us: Callable[[object], int | str],
    window: tuple[int, int],
) -> None:
    if not isinstance(row, dict):
        rejections.append(rejection("bad_message", row))
        return
    if any(k not in row for k in (ts_key, "o", "h", "l", "c")):
        rejections.append(rejection("missing_field", row))
        return
    start_us = to_us(row[ts_key])
    if isinstance(start_us, int) and not window[0] <= start_us < window[1]:
        return
    ohlcv = (row["o"], row["h"], row["l"], row["c"], row.get("v", 0.0))
    reason = cols.minute(symbol, start_us, ohlcv)
    if reason is not None:
        rejections.append(rejection(reason, row))


def _reset_in(value: str | None) -> float | None:
    """Seconds until an `X-RateLimit-Reset` (the end of the rate limit's window, in epoch
    seconds: Alpaca's 429s carry it, not Retry-After); None when absent or not a time."""
    try:
        reset = float(value) if value is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(reset):
        return None
    return max(0.0, reset - time.time())


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _split_query(url: str) -> tuple[str, dict[str, str | int]]:
    parts = urlsplit(url)
    params: dict[str, str | int] = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(query="")), params
