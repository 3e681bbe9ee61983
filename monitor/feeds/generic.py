"""The generic JSON wire format: ticks and bars, one object or an array of them, to a FeedBatch.

A tick is `{"symbol", "ts", "price", "size"?, "id"?}` (`id` a string or an integer, kept as a
string); a bar is `{"symbol", "timeframe": "1m" | "1d", "start" | "session", "open", "high", "low",
"close", "volume"?}`. `ts` / `start` are epoch numbers in `FieldMap.ts_unit` (milliseconds by
default) or ISO 8601 strings (naive means UTC); `session` is `YYYY-MM-DD`. A daily bar without
`session` may name its day by `start`: a date, a naive time's date, or an instant's New York
date (the day bars of Alpaca and Polygon start at New York's midnight).
A `FieldMap` reads other key names. Bad input never raises: every array element is either in a
frame or in `rejections`, with one of the reasons below.

Two paths: a typed msgspec decode for the common case (well-formed numeric-timestamp ticks) builds
the frame from column lists in a few polars calls; anything else falls back to a lenient per-element
decode that keeps the good elements and rejects the rest.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from monitor.core.model import (
    DAILY_SCHEMA,
    MAX_PRICE,
    MAX_SIZE,
    MINUTE_SCHEMA,
    TICK_SCHEMA,
    TS,
    FeedBatch,
    Rejection,
)
from monitor.feeds.provider import (
    MAX_US,
    SYMBOL_MAX,
    in_range,
    is_number,
    is_symbol,
    rejection,
)

__all__ = ["REASONS", "FieldMap", "decode_generic"]

TsUnit = Literal["ms", "s", "ns", "iso"]

REASONS = (
    "malformed_json",  # the payload is not JSON at all
    "bad_message",  # not an object, a field of the wrong type, or a symbol that is not 1-32
    # printable ASCII characters without spaces
    "missing_field",  # a required field is absent (or the object is neither tick nor bar)
    "bad_timestamp",  # a timestamp or session string that does not parse, or not in 1900-2200
    "bad_price",  # a price that is not positive and below MAX_PRICE (1e9)
    "bad_size",  # a size or volume that is not non-negative and below MAX_SIZE (1e15)
    "bad_timeframe",  # a bar timeframe other than 1m / 1d
    "bad_bar",  # low > high, or open / close outside [low, high]
)

RAW_LIMIT = 200
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# An epoch number before 1973-03-03 (1e11 ms) is a unit mistaken, not a trade of then: seconds
# read as milliseconds (1.7e9: January 1970), which would be rejected as `outside_session` and
# point the operator the wrong way. It is `bad_timestamp` (set `field_map` `ts_unit`).
EPOCH_FLOOR_US = 100_000_000_000_000
_NEW_YORK = ZoneInfo("America/New_York")
_ONE_US = dt.timedelta(microseconds=1)
_US_PER: dict[str, float] = {"ms": 1_000, "s": 1_000_000, "ns": 0.001}


class FieldMap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where each field lives in a provider's JSON objects, and the unit of numeric timestamps.

    `ts_unit` applies to numeric `ts` / `start`; strings are always read as ISO 8601, and with
    `ts_unit="iso"` numbers are rejected.
    """

    symbol: str = "symbol"
    ts: str = "ts"
    price: str = "price"
    size: str = "size"
    id: str = "id"
    timeframe: str = "timeframe"
    start: str = "start"
    session: str = "session"
    open: str = "open"
    high: str = "high"
    low: str = "low"
    close: str = "close"
    volume: str = "volume"
    ts_unit: TsUnit = "ms"


DEFAULT_FIELDS = FieldMap()

# Empty frames are cloned (about 1 µs) rather than built (about 100 µs) for every message.
_EMPTY_TICKS = pl.DataFrame(schema=TICK_SCHEMA)
_EMPTY_MINUTE = pl.DataFrame(schema=MINUTE_SCHEMA)
_EMPTY_DAILY = pl.DataFrame(schema=DAILY_SCHEMA)


def decode_generic(payload: bytes, *, feed: str, mapping: FieldMap | None = None) -> FeedBatch:
    """Decode one wire message into a batch; never raises on bad input."""
    fields = mapping or DEFAULT_FIELDS
    fast = _fast_decoder(fields)
    if fast is not None:
        try:
            decoded = fast.decode(payload)
        except (msgspec.DecodeError, RecursionError):  # (a message nested too deep)
            pass
        else:
            batch = _fast_batch(decoded, feed, _US_PER[fields.ts_unit])
            if batch is not None:
                return batch
    return _slow_batch(payload, feed, fields)


# --- the fast path: every element a well-typed tick with a numeric timestamp ---------------------


@functools.cache
def _fast_decoder(fields: FieldMap) -> msgspec.json.Decoder[Any] | None:
    if fields.ts_unit == "iso":
        return None
    names = ("symbol", "ts", "price", "size", "id")
    # The bounds the lenient path rejects outside of, checked by msgspec as it decodes (a value
    # outside fails the typed decode, and the message goes the lenient way, element by element).
    first, end = (
        (EPOCH_FLOOR_US * 1000, MAX_US * 1000)
        if fields.ts_unit == "ns"
        else (
            -(-EPOCH_FLOOR_US // int(_US_PER[fields.ts_unit])),
            MAX_US // int(_US_PER[fields.ts_unit]),
        )
    )
    wire = msgspec.defstruct(
        "_WireTick",
        [
            ("symbol", Annotated[str, msgspec.Meta(min_length=1, max_length=SYMBOL_MAX)]),
            ("ts", Annotated[int, msgspec.Meta(ge=first, lt=end)]),
            ("price", Annotated[float, msgspec.Meta(gt=0.0, lt=MAX_PRICE)]),
            ("size", Annotated[float, msgspec.Meta(ge=0.0, lt=MAX_SIZE)], 0.0),
            ("id", str | int | None, None),
        ],
        rename={name: getattr(fields, name) for name in names},
        frozen=True,
    )
    return msgspec.json.Decoder(list[wire] | wire)  # type: ignore[valid-type]


def _fast_batch(decoded: Any, feed: str, us_per: float) -> FeedBatch | None:
    """The batch for a typed decode, or None when a value needs the per-element checks."""
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items:
        return _batch(feed, _EMPTY_TICKS.clone(), [])
    symbols = [t.symbol for t in items]
    # (Lengths, times, prices and sizes were checked by the decoder; the symbols' characters
    # here, at C speed: printable ASCII, and no space in one, joined by one space each.)
    joined = " ".join(symbols)
    if not (joined.isascii() and joined.isprintable() and joined.count(" ") == len(items) - 1):
        return None
    stamps = [t.ts for t in items]
    prices = [t.price for t in items]
    sizes = [t.size for t in items]
    ids = [t.id if t.id.__class__ is not int else str(t.id) for t in items]
    return _batch(feed, _ticks_frame(symbols, stamps, us_per, prices, sizes, ids), [])


# --- the lenient path: element by element ---------------------------------------------------------


class _Columns:
    """Column lists for the three frames, appended to only by fully validated elements."""

    def __init__(self) -> None:
        self.tick: tuple[list[str], list[int], list[float], list[float], list[str | None]] = (
            [],
            [],
            [],
            [],
            [],
        )
        self.minute: tuple[list[str], list[int], list[list[float]]] = ([], [], [])
        self.daily: tuple[list[str], list[dt.date], list[list[float]]] = ([], [], [])


def _slow_batch(payload: bytes, feed: str, fields: FieldMap) -> FeedBatch:
    try:
        doc = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        # Python's json module writes NaN / Infinity literals: read them, so that one bad price
        # rejects one element (bad_price) rather than the whole message.
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            raw = bytes(payload[:RAW_LIMIT]).decode("utf-8", "replace")
            return _batch(feed, _EMPTY_TICKS.clone(), [Rejection("malformed_json", raw=raw)])
    elements = doc if isinstance(doc, list) else [doc]
    cols = _Columns()
    rejections: list[Rejection] = []
    for element in elements:
        if not isinstance(element, dict):
            reason: str | None = "bad_message"
        elif fields.price in element:
            reason = _tick(element, fields, cols)
        elif fields.close in element:
            reason = _bar(element, fields, cols)
        else:
            reason = "missing_field"
        if reason is not None:
            rejections.append(_rejection(reason, element, fields))
    return _columns_batch(feed, cols, rejections)


def _tick(el: dict[str, Any], f: FieldMap, cols: _Columns) -> str | None:
    """Append one tick to `cols`, or return why it is rejected."""
    if f.symbol not in el or f.ts not in el:
        return "missing_field"
    symbol, stamp, price = el[f.symbol], el[f.ts], el[f.price]
    size = el.get(f.size, 0.0)
    trade_id = el.get(f.id)
    if (
        not is_symbol(symbol)
        or not is_number(price)
        or not is_number(size)
        or not (trade_id is None or trade_id.__class__ is str or trade_id.__class__ is int)
    ):
        return "bad_message"
    ts_us = _timestamp_us(stamp, f.ts_unit)
    if isinstance(ts_us, str):
        return ts_us
    if not 0.0 < price < MAX_PRICE:
        return "bad_price"
    if not 0.0 <= size < MAX_SIZE:
        return "bad_size"
    sym_col, ts_col, price_col, size_col, id_col = cols.tick
    sym_col.append(symbol)
    ts_col.append(ts_us)
    price_col.append(float(price))
    size_col.append(float(size))
    id_col.append(None if trade_id is None else str(trade_id))
    return None


def _bar(el: dict[str, Any], f: FieldMap, cols: _Columns) -> str | None:
    """Append one minute or daily bar to `cols`, or return why it is rejected."""
    ohlc_keys = (f.open, f.high, f.low, f.close)
    if f.symbol not in el or f.timeframe not in el or any(k not in el for k in ohlc_keys):
        return "missing_field"
    symbol, timeframe = el[f.symbol], el[f.timeframe]
    ohlc = [el[k] for k in ohlc_keys]
    volume = el.get(f.volume)
    if volume is None:  # (a bar without volume: an index's, a file of closes)
        volume = 0.0
    if not is_symbol(symbol) or not all(is_number(v) for v in ohlc) or not is_number(volume):
        return "bad_message"
    if timeframe not in ("1m", "1d"):
        return "bad_timeframe"
    when: int | dt.date | str
    if timeframe == "1m":
        when = _timestamp_us(el[f.start], f.ts_unit) if f.start in el else "missing_field"
    elif f.session in el:
        when = _session(el[f.session])
    else:  # (a daily bar named by its start, as some providers send them)
        when = _day_of_start(el[f.start], f.ts_unit) if f.start in el else "missing_field"
    if isinstance(when, str):
        return when
    if not all(0.0 < v < MAX_PRICE for v in ohlc):
        return "bad_price"
    if not 0.0 <= volume < MAX_SIZE:
        return "bad_size"
    open_, high, low, close = ohlc
    if not (low <= open_ <= high and low <= close <= high):
        return "bad_bar"
    values = [float(v) for v in ohlc] + [float(volume)]
    if isinstance(when, int):
        cols.minute[0].append(symbol)
        cols.minute[1].append(when)
        cols.minute[2].append(values)
    else:
        cols.daily[0].append(symbol)
        cols.daily[1].append(when)
        cols.daily[2].append(values)
    return None


def _timestamp_us(value: object, unit: TsUnit) -> int | str:
    """Epoch microseconds, or the rejection reason."""
    if value.__class__ is str:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return "bad_timestamp"
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return in_range((parsed - _EPOCH) // _ONE_US)
    if not is_number(value):
        return "bad_message"
    if unit == "iso":
        return "bad_timestamp"
    if value.__class__ is int:  # exact integer arithmetic
        scaled: float = value // 1000 if unit == "ns" else value * int(_US_PER[unit])
    else:
        scaled = value * _US_PER[unit]  # type: ignore[operator]
    if not EPOCH_FLOOR_US <= scaled < MAX_US:  # also false for NaN
        return "bad_timestamp"
    return round(scaled)


def _day_of_start(value: object, unit: TsUnit) -> dt.date | str:
    """The session of a daily bar given by its `start`: a `YYYY-MM-DD` string is the date; a
    naive ISO time is its own date (`2024-07-16T00:00:00`); an instant (an epoch number, an ISO
    time with an offset) at midnight UTC is its UTC date (a provider dating bars in UTC), any
    other its New York date (Alpaca's and Polygon's day bars start at New York's midnight, a
    bar stamped at the close is of that day). Else the rejection reason."""
    if isinstance(value, str) and "T" not in value and " " not in value:
        return _session(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return "bad_timestamp"
        if parsed.tzinfo is None:
            return parsed.date()
    us = _timestamp_us(value, unit)
    if isinstance(us, str):
        return us
    instant = _EPOCH + dt.timedelta(microseconds=us)
    if instant.time() == dt.time(0):  # (midnight UTC: a provider dating its bars in UTC)
        return instant.date()
    return instant.astimezone(_NEW_YORK).date()


def _session(value: object) -> dt.date | str:
    if value.__class__ is not str:
        return "bad_message"
    try:
        return dt.date.fromisoformat(value) if len(value) == 10 else "bad_timestamp"
    except ValueError:
        return "bad_timestamp"


def _rejection(reason: str, element: object, fields: FieldMap) -> Rejection:
    return rejection(reason, element, fields.symbol)


# --- frames ---------------------------------------------------------------------------------------


def _ticks_frame(
    symbols: list[str],
    stamps: list[int],
    us_per: float,
    prices: list[float],
    sizes: list[float],
    ids: list[str | None],
) -> pl.DataFrame:
    ts = pl.Series("ts", stamps, pl.Int64)
    if us_per > 1:
        ts = ts * int(us_per)
    elif us_per < 1:
        ts = ts // round(1 / us_per)
    return pl.DataFrame(
        [
            pl.Series("symbol", symbols, pl.String),
            ts.cast(TS),
            pl.Series("price", prices, pl.Float64),
            pl.Series("size", sizes, pl.Float64),
            pl.Series("id", ids, pl.String),
        ]
    )


def _bars_frame(key: pl.Series, symbols: list[str], values: list[list[float]]) -> pl.DataFrame:
    by_column = list(zip(*values, strict=True)) if values else [(), (), (), (), ()]
    names = ("open", "high", "low", "close", "volume")
    return pl.DataFrame(
        [
            pl.Series("symbol", symbols, pl.String),
            key,
            *(pl.Series(n, list(c), pl.Float64) for n, c in zip(names, by_column, strict=True)),
        ]
    )


def _columns_batch(feed: str, cols: _Columns, rejections: list[Rejection]) -> FeedBatch:
    symbols, stamps, prices, sizes, ids = cols.tick
    ticks = _ticks_frame(symbols, stamps, 1, prices, sizes, ids) if symbols else None
    minute = daily = None
    if cols.minute[0]:
        start = pl.Series("start", cols.minute[1], pl.Int64).cast(TS)
        minute = _bars_frame(start, cols.minute[0], cols.minute[2])
    if cols.daily[0]:
        session = pl.Series("session", cols.daily[1], pl.Date)
        daily = _bars_frame(session, cols.daily[0], cols.daily[2])
    return _batch(feed, ticks, rejections, minute, daily)


def _batch(
    feed: str,
    ticks: pl.DataFrame | None,
    rejections: list[Rejection],
    minute: pl.DataFrame | None = None,
    daily: pl.DataFrame | None = None,
) -> FeedBatch:
    return FeedBatch(
        feed,
        _EMPTY_TICKS.clone() if ticks is None else ticks,
        _EMPTY_MINUTE.clone() if minute is None else minute,
        _EMPTY_DAILY.clone() if daily is None else daily,
        rejections,
    )


def decode_generic_many(
    payloads: list[bytes], *, feed: str, mapping: FieldMap | None = None
) -> FeedBatch:
    """Decode many wire messages at once (a micro-batch): their elements are joined into one
    JSON array and decoded in one pass, so the per-frame cost of building polars frames is paid
    once per batch instead of once per message. A malformed message does not spoil the others:
    then each message is decoded on its own and the batches are merged."""
    if len(payloads) == 1:
        return decode_generic(payloads[0], feed=feed, mapping=mapping)
    parts: list[bytes] = []
    objects = arrays = False
    for raw in payloads:
        body = raw.strip()
        if body[:1] == b"[" and body[-1:] == b"]":
            arrays = True
            body = body[1:-1].strip()
            if not body:
                continue
        elif body[:1] == b"{":
            objects = True
        else:
            return _one_by_one(payloads, feed, mapping)
        parts.append(body)
    if objects and arrays:  # (a mix: a message's elements could not be counted; and rare)
        return _one_by_one(payloads, feed, mapping)
    joined = b"[" + b",".join(parts) + b"]"
    batch = decode_generic(joined, feed=feed, mapping=mapping)
    elements = batch.size() + len(batch.rejections)
    # A message that is no JSON alone can be when joined (`{...},{...}`, or two halves of
    # one): it must be rejected as it would be alone, so the join of objects must give one
    # element per message, or each is decoded on its own. An array message gives one element
    # or more: fewer elements than arrays is one cut in two (its halves `[{"x":[1]` and
    # `[2]}]` join into one element); one cut between two arrays (`[...],[...]`) breaks the
    # join. (A cut that keeps the count, a half holding another element, is not caught.)
    if any(r.reason == "malformed_json" for r in batch.rejections) or (
        elements != len(parts) if objects else elements < len(parts)
    ):
        return _one_by_one(payloads, feed, mapping)
    return batch


def _one_by_one(payloads: list[bytes], feed: str, mapping: FieldMap | None) -> FeedBatch:
    """The messages decoded each on its own, in one batch."""
    return merge([decode_generic(p, feed=feed, mapping=mapping) for p in payloads], feed)


def merge(batches: list[FeedBatch], feed: str) -> FeedBatch:
    """One batch holding the rows and rejections of several."""
    if not batches:
        return FeedBatch.empty(feed)
    if len(batches) == 1:
        return batches[0]

    def cat(frames: list[pl.DataFrame]) -> pl.DataFrame:
        nonempty = [f for f in frames if f.height]
        if not nonempty:
            return frames[0]
        return nonempty[0] if len(nonempty) == 1 else pl.concat(nonempty, how="vertical")

    return FeedBatch(
        feed,
        cat([b.ticks for b in batches]),
        cat([b.minute_bars for b in batches]),
        cat([b.daily_bars for b in batches]),
        [r for b in batches for r in b.rejections],
        cancels=cat([b.cancels for b in batches]),
        excluded=cat([b.excluded for b in batches]),
    )
