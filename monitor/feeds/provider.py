"""What the provider protocols (Alpaca, Polygon, Finnhub) share: control events and column builders.

Each provider module is sans-I/O: it builds the messages to send and turns one received frame into a
`Decoded` value (a `FeedBatch` of market data plus the `Control` events of the frame). Every element
of a frame ends up in exactly one place: a frame row, a rejection, a control event or the `ignored`
count (messages of channels the feed does not use, such as quotes).

Timestamps become UTC microseconds. RFC 3339 strings with nanoseconds and msgpack timestamps are
read by msgspec, which rounds to the nearest microsecond.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Literal, Protocol

import msgspec
import polars as pl

from monitor.core.model import (
    CANCEL_SCHEMA,
    DAILY_SCHEMA,
    EXCLUDED_SCHEMA,
    MAX_PRICE,
    MAX_SIZE,
    MINUTE_SCHEMA,
    TICK_SCHEMA,
    TS,
    FeedBatch,
    Rejection,
)

__all__ = [
    "REASONS",
    "Action",
    "Columns",
    "Control",
    "ControlKind",
    "Decoded",
    "Outgoing",
    "Session",
    "UtcDatetime",
]

REASONS = (
    "malformed_json",  # the frame is not JSON at all
    "malformed_msgpack",  # a binary frame that is not msgpack
    "bad_message",  # not an object, an unknown message type, a field of the wrong type, or a
    # symbol that is not 1-32 printable ASCII characters without spaces
    "missing_field",  # a required field is absent
    "bad_timestamp",  # a timestamp that does not parse or lacks a timezone, or not in 1900-2200
    "bad_price",  # a price that is not positive and below MAX_PRICE (1e9)
    "bad_size",  # a size or volume that is not non-negative and below MAX_SIZE (1e15)
    "bad_bar",  # low > high, or open / close outside [low, high]
    "trade_condition",  # a trade whose sale conditions keep it out of bars (feeds/conditions.py)
)

ControlKind = Literal[
    "connected", "authenticated", "subscribed", "error", "ping", "status", "notice"
]
# What the connection should do about a control event: go on, reconnect with backoff, or give up.
Action = Literal["continue", "reconnect", "fatal"]
# A message to send: text (JSON) or binary (msgpack).
Outgoing = str | bytes

UtcDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]

RAW_LIMIT = 200
EXCHANGE_TZ = "America/New_York"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
# The instants a feed's timestamp may name: a number or string outside is "bad_timestamp", not
# a datetime Python (and the bar builder) cannot hold, nor a unit mistaken by a thousand.
MIN_US = -2_208_988_800_000_000  # 1900-01-01
MAX_US = 7_258_118_400_000_000  # 2200-01-01
# Prices and sizes at or above MAX_PRICE / MAX_SIZE (monitor.core.model) are "bad_price" /
# "bad_size".
_NUMBER = (int, float)
SYMBOL_MAX = 32  # characters of a symbol, at most


class Control(msgspec.Struct, frozen=True):
    """A non-data message: handshake steps, errors, heartbeats and trading status changes.

    `action` says what the connection should do (errors only; everything else is "continue").
    Status events carry `symbol`, the provider's `ts`, `halted` (True for a halt or pause, False
    for a resumption, None when the status says neither) and the provider's codes in `detail`.
    """

    kind: ControlKind
    msg: str = ""
    code: int | None = None
    action: Action = "continue"
    symbol: str | None = None
    ts: dt.datetime | None = None
    halted: bool | None = None
    detail: dict[str, str | list[str]] = {}


class Decoded(msgspec.Struct):
    """One decoded frame: market data and rejections, control events, and ignored messages."""

    batch: FeedBatch
    controls: list[Control]
    ignored: int = 0

    def elements(self) -> int:
        """How many elements of the frame this accounts for."""
        return self.batch.size() + len(self.batch.rejections) + len(self.controls) + self.ignored


class Session(Protocol):
    """One provider's side of a connection, sans I/O: what to send, and how to read a frame."""

    provider: str
    acknowledges_subscribe: bool  # False: subscribed as soon as the opening messages are sent

    def url(self) -> str:
        """The URL to connect to (may carry a token: mask it before logging)."""
        ...

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers for the upgrade request."""
        ...

    def opening(self) -> list[Outgoing]:
        """Messages to send as soon as the connection is open."""
        ...

    def replies(self, control: Control) -> list[Outgoing]:
        """Messages to send in answer to a control event (auth, then subscribe)."""
        ...

    def decode(self, frame: bytes | str, feed: str) -> Decoded:
        """Decode one received frame; never raises on bad input."""
        ...


# --- timestamps ----------------------------------------------------------------------------------


def datetime_us(value: object) -> int | str:
    """Epoch microseconds of an aware datetime or RFC 3339 string, or the rejection reason."""
    if isinstance(value, str):
        try:
            value = msgspec.convert(value, UtcDatetime)
        except msgspec.ValidationError:
            return "bad_timestamp"
    if not isinstance(value, dt.datetime):
        return "bad_message"
    if value.tzinfo is None:
        return "bad_timestamp"
    return in_range((value - _EPOCH) // _ONE_US)


def ms_us(value: object) -> int | str:
    """Epoch microseconds of an integer epoch-milliseconds value, or the rejection reason."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "bad_message"
    return in_range(value * 1000)


def in_range(us: int) -> int | str:
    """`us` (epoch microseconds) when between MIN_US and MAX_US, else "bad_timestamp"."""
    return us if MIN_US <= us < MAX_US else "bad_timestamp"


def is_number(value: object) -> bool:
    """An int or float, but not a bool (`true` is not a price)."""
    return value.__class__ in _NUMBER


def is_symbol(value: object) -> bool:
    """A ticker: 1 to 32 printable ASCII characters without spaces (`^RUT`, `BRK.B`,
    `BTC/USD`); not a name, a blank or text that cannot be written out (a lone surrogate)."""
    return (
        value.__class__ is str
        and 0 < len(value) <= SYMBOL_MAX
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


# --- rejections ----------------------------------------------------------------------------------


ElementRouter = Callable[[object, "Columns", list[Control]], str | None]


def trade_key(trade_id: object, *venue: object) -> object:
    """A trade's id as the bar builder's duplicate key: the provider's id prefixed with where
    it was reported (`x`, and Polygon's TRF id), "D:1001". The SIP's trade ids are unique per
    symbol and reporting venue only: two exchanges' trades of one symbol may share an id, and
    would otherwise be taken for copies of one trade (and the second dropped). A copy of the
    same trade, redelivered, has the same venue and id. An id of the wrong type is returned as
    it is (the tick is then rejected as `bad_message`); a venue of the wrong type is left out."""
    if trade_id is None or not isinstance(trade_id, str | int) or isinstance(trade_id, bool):
        return trade_id
    parts = [str(v) for v in venue if isinstance(v, str | int) and not isinstance(v, bool)]
    return ":".join([*parts, str(trade_id)]) if parts else trade_id


def decode_elements(feed: str, doc: object, route: ElementRouter, symbol_key: str) -> Decoded:
    """Route every element of a decoded frame (a list, or one object): `route` adds data to the
    columns or a control to the list and returns None, "ignored", or a rejection reason."""
    elements = doc if isinstance(doc, list) else [doc]
    cols = Columns()
    controls: list[Control] = []
    rejections: list[Rejection] = []
    ignored = 0
    for element in elements:
        reason = route(element, cols, controls)
        if reason == "ignored":
            ignored += 1
        elif reason is not None:
            rejections.append(rejection(reason, element, symbol_key))
    return Decoded(cols.batch(feed, rejections), controls, ignored)


def rejection(reason: str, element: object, symbol_key: str | None = None) -> Rejection:
    """A rejection for one element, its raw text cut to RAW_LIMIT characters."""
    symbol = element.get(symbol_key) if symbol_key and isinstance(element, dict) else None
    try:
        raw = msgspec.json.encode(element)[:RAW_LIMIT].decode("utf-8", "replace")
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError, RecursionError):
        try:  # (text that is no UTF-8, a lone surrogate say: written escaped, as it came)
            raw = json.dumps(element, separators=(",", ":"))[:RAW_LIMIT]
        except (TypeError, ValueError, OverflowError, RecursionError):
            raw = repr(element)[:RAW_LIMIT]
    return Rejection(reason, symbol=symbol if is_symbol(symbol) else None, raw=raw)


def frame_rejection(reason: str, frame: bytes | str) -> Rejection:
    """A rejection for a whole frame that could not be parsed."""
    raw = (
        frame[:RAW_LIMIT]
        if isinstance(frame, str)
        else bytes(frame[:RAW_LIMIT]).decode("utf-8", "replace")
    )
    return Rejection(reason, raw=raw)


# --- columns -------------------------------------------------------------------------------------

_EMPTY_TICKS = pl.DataFrame(schema=TICK_SCHEMA)
_EMPTY_MINUTE = pl.DataFrame(schema=MINUTE_SCHEMA)
_EMPTY_DAILY = pl.DataFrame(schema=DAILY_SCHEMA)
_BAR_NAMES = ("open", "high", "low", "close", "volume")


class Columns:
    """Column lists for ticks, minute bars and daily bars; only validated values are appended.

    `tick`, `minute` and `daily` return None when the element was appended, else the reason.
    """

    def __init__(self) -> None:
        self.t_symbol: list[str] = []
        self.t_us: list[int] = []
        self.t_price: list[float] = []
        self.t_size: list[float] = []
        self.t_id: list[str | None] = []
        self.m_symbol: list[str] = []
        self.m_us: list[int] = []
        self.m_values: list[tuple[float, float, float, float, float]] = []
        self.d_symbol: list[str] = []
        self.d_us: list[int] = []
        self.d_values: list[tuple[float, float, float, float, float]] = []
        self.cancels: list[tuple[str, int | None, str, str | None, float | None, float | None]] = []
        self.x_symbol: list[str] = []  # (trades kept out by their conditions: `exclude`)
        self.x_us: list[int] = []
        self.x_id: list[str] = []

    def tick(
        self, symbol: object, ts_us: int | str, price: object, size: object, trade_id: object
    ) -> str | None:
        """Append one trade; `ts_us` is epoch microseconds or a rejection reason already found."""
        if not (
            is_symbol(symbol)
            and isinstance(price, _NUMBER)
            and isinstance(size, _NUMBER)
            and price.__class__ is not bool
            and size.__class__ is not bool
            and (trade_id is None or _is_id(trade_id))
        ):
            return "bad_message"
        if isinstance(ts_us, str):
            return ts_us
        if (problem := _trade_problem(price, size)) is not None:
            return problem
        assert isinstance(symbol, str)
        self.t_symbol.append(symbol)
        self.t_us.append(ts_us)
        self.t_price.append(float(price))
        self.t_size.append(float(size))
        self.t_id.append(None if trade_id is None else str(trade_id))
        return None

    def cancel(
        self,
        symbol: object,
        ts_us: int | str | None,
        trade_id: object,
        new: tuple[object, object, object] | None = None,
    ) -> str | None:
        """Append a trade taken back (`trade_id`: as its tick's, `trade_key`), or with `new`
        (its correction's id, price and size) corrected; `ts_us`: when (None: not said)."""
        if not (is_symbol(symbol) and _is_id(trade_id)):
            return "bad_message"
        if isinstance(ts_us, str):
            return ts_us
        fixed: tuple[str | None, float | None, float | None] = (None, None, None)
        if new is not None:
            new_id, price, size = new
            if not (_is_id(new_id) and is_number(price) and is_number(size)):
                return "bad_message"
            if (problem := _trade_problem(price, size)) is not None:  # type: ignore[arg-type]
                return problem
            fixed = (str(new_id), float(price), float(size))  # type: ignore[arg-type]
        assert isinstance(symbol, str)
        self.cancels.append((symbol, ts_us, str(trade_id), *fixed))
        return None

    def exclude(self, symbol: object, ts_us: int | str, trade_id: object) -> None:
        """Note a trade kept out of bars by its sale conditions (rejected as such by the
        caller): its symbol, time and id, for a correction that makes it a trade bars take
        (`FeedBatch.excluded`); one without a sound symbol, time or id is left out (no
        correction could name it)."""
        sound = isinstance(ts_us, int) and _is_id(trade_id)  # (datetime_us checked its range)
        if sound and isinstance(symbol, str) and is_symbol(symbol):
            self.x_symbol.append(symbol)
            self.x_us.append(ts_us)  # type: ignore[arg-type]
            self.x_id.append(str(trade_id))

    def minute(self, symbol: object, start_us: int | str, ohlcv: tuple[object, ...]) -> str | None:
        """Append one minute bar starting at `start_us`."""
        checked = _bar_values(symbol, start_us, ohlcv)
        if isinstance(checked, str):
            return checked
        self.m_symbol.append(checked[0])
        self.m_us.append(checked[1])
        self.m_values.append(checked[2])
        return None

    def daily(self, symbol: object, at_us: int | str, ohlcv: tuple[object, ...]) -> str | None:
        """Append one daily bar; its session is the New York date of `at_us`."""
        checked = _bar_values(symbol, at_us, ohlcv)
        if isinstance(checked, str):
            return checked
        self.d_symbol.append(checked[0])
        self.d_us.append(checked[1])
        self.d_values.append(checked[2])
        return None

    def batch(self, feed: str, rejections: list[Rejection]) -> FeedBatch:
        """The FeedBatch of everything appended, built from column lists."""
        ticks = _EMPTY_TICKS.clone()
        if self.t_symbol:
            ticks = pl.DataFrame(
                [
                    pl.Series("symbol", self.t_symbol, pl.String),
                    pl.Series("ts", self.t_us, pl.Int64).cast(TS),
                    pl.Series("price", self.t_price, pl.Float64),
                    pl.Series("size", self.t_size, pl.Float64),
                    pl.Series("id", self.t_id, pl.String),
                ]
            )
        minute = _EMPTY_MINUTE.clone()
        if self.m_symbol:
            start = pl.Series("start", self.m_us, pl.Int64).cast(TS)
            minute = _bars(self.m_symbol, start, self.m_values)
        daily = _EMPTY_DAILY.clone()
        if self.d_symbol:
            at = pl.Series("session", self.d_us, pl.Int64).cast(TS)
            session = at.dt.convert_time_zone(EXCHANGE_TZ).dt.date()
            daily = _bars(self.d_symbol, session, self.d_values)
        batch = FeedBatch(feed, ticks, minute, daily, rejections)
        if self.cancels:
            columns = list(zip(*self.cancels, strict=True))
            batch.cancels = pl.DataFrame(
                [
                    pl.Series(n, c, CANCEL_SCHEMA[n] if n != "ts" else pl.Int64)
                    for n, c in zip(CANCEL_SCHEMA, columns, strict=True)
                ]
            ).with_columns(pl.col("ts").cast(TS))
        if self.x_symbol:
            batch.excluded = pl.DataFrame(
                [
                    pl.Series("symbol", self.x_symbol, pl.String),
                    pl.Series("ts", self.x_us, pl.Int64).cast(TS),
                    pl.Series("id", self.x_id, pl.String),
                ],
                schema=EXCLUDED_SCHEMA,
            )
        return batch


def _trade_problem(price: float, size: float) -> str | None:
    """Why a trade's price or size is refused (a price not positive and below MAX_PRICE, a
    size not non-negative and below MAX_SIZE), or None."""
    if not 0.0 < price < MAX_PRICE:
        return "bad_price"
    if not 0.0 <= size < MAX_SIZE:
        return "bad_size"
    return None


def _is_id(value: object) -> bool:
    """A trade id: a str or an int (not a bool)."""
    return value.__class__ is str or value.__class__ is int


def _bar_values(
    symbol: object, at_us: int | str, ohlcv: tuple[object, ...]
) -> tuple[str, int, tuple[float, float, float, float, float]] | str:
    """The validated (symbol, time, values) of a bar, or the rejection reason."""
    if not is_symbol(symbol):
        return "bad_message"
    assert isinstance(symbol, str)
    for v in ohlcv:
        if not isinstance(v, _NUMBER) or v.__class__ is bool:
            return "bad_message"
    if isinstance(at_us, str):
        return at_us
    # (compared before float(): an integer of 400 digits does not convert)
    if not all(0.0 < v < MAX_PRICE for v in ohlcv[:4]):  # type: ignore[operator]
        return "bad_price"
    if not 0.0 <= ohlcv[4] < MAX_SIZE:  # type: ignore[operator]
        return "bad_size"
    open_, high, low, close, volume = (float(v) for v in ohlcv)  # type: ignore[arg-type]
    if not (low <= open_ <= high and low <= close <= high):
        return "bad_bar"
    return symbol, at_us, (open_, high, low, close, volume)


def _bars(
    symbols: list[str], key: pl.Series, values: list[tuple[float, float, float, float, float]]
) -> pl.DataFrame:
    by_column = list(zip(*values, strict=True))
    return pl.DataFrame(
        [
            pl.Series("symbol", symbols, pl.String),
            key,
            *(pl.Series(n, c, pl.Float64) for n, c in zip(_BAR_NAMES, by_column, strict=True)),
        ]
    )


def first_byte_is_json(frame: bytes) -> bool:
    """Whether a binary frame looks like JSON text rather than msgpack."""
    stripped = frame.lstrip(b" \t\r\n")
    return stripped[:1] in (b"[", b"{") or not stripped
