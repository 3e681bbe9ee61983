"""Alpaca Market Data v2 stock stream, sans I/O: messages to send, frames to read, errors to judge.

Every frame is an array of objects tagged by `T`. Data: trades "t" become ticks (`id` = "x:i",
the trade id with the exchange that reported it: `trade_key`), minute bars "b" and updated bars
"u" become minute bars (the engine upserts by symbol + start), running daily bars "d" become
daily bars of the New York date of `t`. Control: "success"
(connected / authenticated), "subscription", "error" (with `code`) and trading status "s" (halts).
Trade cancels and errors "x" (`{"S","i","x","p","s","a":"C"|"E","t","z"}`) and corrections "c"
(`{"S","x","oi","op","os","oc","ci","cp","cs","cc","t","z"}`), which Alpaca sends to whoever
takes trades, become the batch's `cancels`: the trade "x:i" (or "x:oi") taken back, or replaced
by the corrected one ("x:ci" at `cp` for `cs`; a correction whose conditions `cc` keep the
trade out of bars is a cancel). The engine takes them out of the minute bars and builds those
again (`monitor.core.trade_ledger`, `[engine] cancel_window_s`). Quotes, LULD bands and
imbalances are counted as ignored.

Frames are JSON text, or msgpack when the connection sent `Content-Type: application/msgpack` on
the upgrade; `decode_alpaca` tells them apart by their first byte.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from monitor.core.model import MAX_PRICE, MAX_SIZE, Rejection
from monitor.feeds.conditions import REASON as TRADE_CONDITION
from monitor.feeds.conditions import sip_excluded
from monitor.feeds.provider import (
    MAX_US,
    MIN_US,
    Action,
    Columns,
    Control,
    Decoded,
    Outgoing,
    UtcDatetime,
    datetime_us,
    decode_elements,
    first_byte_is_json,
    frame_rejection,
    is_symbol,
    rejection,
    trade_key,
)

__all__ = [
    "AlpacaSession",
    "auth_message",
    "decode_alpaca",
    "error_action",
    "subscribe_message",
]

# Error codes from the stream documentation, and what the connection does about each.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)

_FATAL = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    405: "symbol limit exceeded",
    408: "v2 not enabled",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",  # (a channel the stream has not: its URL)
    411: "insufficient scope",  # (a token without the market data scope)
}
_CONTINUE = {403: "already authenticated"}
# 404 auth timeout, 406 connection limit exceeded, 407 slow client, 500 internal error, and any
# code not listed: reconnect with backoff.

# Trading status codes (CTS numeric, UTP letters): a halt or pause, or a resumption.
_HALTED = frozenset({"2", "H", "P"})
_RESUMED = frozenset({"3", "T"})
_IGNORED = frozenset({"q", "l", "i"})


def error_action(code: int | None) -> Action:
    """Fatal for auth, syntax and plan errors; go on after 403; otherwise reconnect with backoff."""
    if code in _FATAL:
        return "fatal"
    if code in _CONTINUE:
        return "continue"
    return "reconnect"


def auth_message(key: str, secret: str, *, msgpack: bool = False) -> Outgoing:
    """The auth action, as JSON text or msgpack bytes. (The key and secret come as the
    config's `Secret`s, a str subclass the encoders refuse: they go in as plain text.)"""
    return _encode({"action": "auth", "key": str(key), "secret": str(secret)}, msgpack)


def subscribe_message(
    symbols: Sequence[str],
    *,
    trades: bool = True,
    bars: bool = True,
    updated_bars: bool = True,
    daily_bars: bool = True,
    statuses: bool = True,
    msgpack: bool = False,
) -> Outgoing:
    """The subscribe action for these symbols on the chosen channels (`["*"]` means all)."""
    wanted = list(symbols)
    message: dict[str, Any] = {"action": "subscribe"}
    for channel, on in (
        ("trades", trades),
        ("bars", bars),
        ("updatedBars", updated_bars),
        ("dailyBars", daily_bars),
        ("statuses", statuses),
    ):
        if on:
            message[channel] = wanted
    return _encode(message, msgpack)


def _encode(message: dict[str, Any], msgpack: bool) -> Outgoing:
    if msgpack:
        return msgspec.msgpack.encode(message)
    return msgspec.json.encode(message).decode()


# --- decoding ------------------------------------------------------------------------------------


class _Trade(msgspec.Struct, tag="t", tag_field="T"):
    S: str
    p: float
    s: float
    t: UtcDatetime
    i: int | str | None = None
    x: str | None = None  # the exchange that reported it
    c: list[str] | None = None  # SIP sale conditions (see monitor.feeds.conditions)
    z: str | None = None  # tape: A, B (CTA) or C (UTP)


class _Bar(msgspec.Struct, tag_field="T"):
    S: str
    o: float
    h: float
    l: float  # noqa: E741 - the wire name
    c: float
    t: UtcDatetime
    v: float = 0.0


class _MinuteBar(_Bar, tag="b"):
    pass


class _UpdatedBar(_Bar, tag="u"):
    pass


class _DailyBar(_Bar, tag="d"):
    pass


class _Success(msgspec.Struct, tag="success", tag_field="T"):
    msg: str = ""


class _Error(msgspec.Struct, tag="error", tag_field="T"):
    code: int | None = None
    msg: str = ""


class _Subscription(msgspec.Struct, tag="subscription", tag_field="T"):
    pass


class _Status(msgspec.Struct, tag="s", tag_field="T"):
    S: str


class _Cancel(msgspec.Struct, tag="x", tag_field="T"):
    """A trade cancel ("a": "C") or error ("E"): the trade `i` reported by `x` taken back."""

    S: str
    i: int | str
    x: str | None = None
    t: UtcDatetime | None = None


class _Correction(msgspec.Struct, tag="c", tag_field="T"):
    """A trade correction: trade `oi` reported by `x` is trade `ci` at `cp` for `cs`."""

    S: str
    oi: int | str
    ci: int | str
    cp: float
    cs: float
    x: str | None = None
    cc: list[str] | None = None  # the corrected trade's sale conditions
    z: str | None = None
    t: UtcDatetime | None = None


class _Ignored(msgspec.Struct, tag_field="T"):
    """Channels the feed does not use: quotes, LULD bands, imbalances."""


class _Quote(_Ignored, tag="q"):
    pass


class _Luld(_Ignored, tag="l"):
    pass


class _Imbalance(_Ignored, tag="i"):
    pass


_Message = (
    _Trade
    | _MinuteBar
    | _UpdatedBar
    | _DailyBar
    | _Success
    | _Error
    | _Subscription
    | _Status
    | _Quote
    | _Correction
    | _Cancel
    | _Luld
    | _Imbalance
)
_json_frame = msgspec.json.Decoder(list[_Message])
_msgpack_frame = msgspec.msgpack.Decoder(list[_Message])
_msgpack_any: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def decode_alpaca(frame: bytes | str, *, feed: str) -> Decoded:
    """Decode one frame (JSON text or bytes, or msgpack bytes); never raises on bad input.

    A well-typed frame of trades and bars takes a typed msgspec decode; anything else is decoded
    element by element, so one bad element is rejected and the rest of the frame still counts.
    """
    packed = frame if isinstance(frame, bytes) and not first_byte_is_json(frame[:16]) else None
    try:
        items = _msgpack_frame.decode(packed) if packed is not None else _json_frame.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):  # (bad UTF-8 in a msgpack str)
        pass
    else:
        if all(
            item.__class__ is not _Status and item.__class__ is not _Subscription for item in items
        ):
            fast = _decode_typed(items, feed)
            if fast is not None:
                return fast
    return _decode_lenient(frame, packed, feed)


def _decode_typed(items: list[Any], feed: str) -> Decoded | None:
    """Data and simple controls from typed items, or None when any element needs a rejection."""
    if items and all(item.__class__ is _Trade for item in items):
        return _trades_only(items, feed)
    cols = Columns()
    controls: list[Control] = []
    ignored = 0
    rejected: list[Rejection] = []
    for item in items:
        cls = item.__class__
        if cls is _Trade:
            if item.c and sip_excluded(item.c, item.z):
                rejected.append(_condition_rejection(item))
                cols.exclude(item.S, datetime_us(item.t), trade_key(item.i, item.x))
                continue
            trade = trade_key(item.i, item.x)
            reason = cols.tick(item.S, datetime_us(item.t), item.p, item.s, trade)
        elif cls is _MinuteBar or cls is _UpdatedBar:
            reason = cols.minute(
                item.S, datetime_us(item.t), (item.o, item.h, item.l, item.c, item.v)
            )
        elif cls is _DailyBar:
            reason = cols.daily(
                item.S, datetime_us(item.t), (item.o, item.h, item.l, item.c, item.v)
            )
        elif cls is _Cancel:
            at = None if item.t is None else datetime_us(item.t)
            reason = cols.cancel(item.S, at, trade_key(item.i, item.x))
        elif cls is _Correction:
            reason = _correction(
                cols, item.S, item.t, item.x, item.oi, item.ci, item.cp, item.cs, item.cc, item.z
            )
        elif cls is _Success:
            controls.append(_success(item.msg))
            continue
        elif cls is _Error:
            controls.append(_error(item.code, item.msg))
            continue
        else:
            ignored += 1
            continue
        if reason is not None:
            return None
    return Decoded(cols.batch(feed, rejected), controls, ignored)


def _condition_rejection(trade: _Trade) -> Rejection:
    """A trade its sale conditions keep out of bars, rejected with its fields as text (no
    second decode of the frame: such trades come in busy frames)."""
    return rejection(TRADE_CONDITION, msgspec.to_builtins(trade), "S")


def _trades_only(items: list[_Trade], feed: str) -> Decoded | None:
    """The common frame, column by column: every element a trade; None if any needs a look."""
    rejected: list[Rejection] = []
    excluded = [bool(t.c) and sip_excluded(t.c or (), t.z) for t in items]
    out_of_bars: list[_Trade] = []  # (kept out by their conditions: `Columns.exclude`)
    if any(excluded):
        out_of_bars = [t for t, out in zip(items, excluded, strict=True) if out]
        rejected = [_condition_rejection(t) for t in out_of_bars]
        items = [t for t, out in zip(items, excluded, strict=True) if not out]
    prices = [t.p for t in items]
    sizes = [t.s for t in items]
    stamps = [(t.t - _EPOCH) // _ONE_US for t in items]
    if not (
        all(0.0 < p < MAX_PRICE for p in prices)
        and all(0.0 <= s < MAX_SIZE for s in sizes)
        and all(MIN_US <= us < MAX_US for us in stamps)
        and all(is_symbol(t.S) for t in items)
    ):
        return None
    cols = Columns()
    cols.t_symbol = [t.S for t in items]
    cols.t_us = stamps
    cols.t_price = prices
    cols.t_size = sizes
    cols.t_id = [None if t.i is None else str(trade_key(t.i, t.x)) for t in items]
    for t in out_of_bars:
        cols.exclude(t.S, datetime_us(t.t), trade_key(t.i, t.x))
    return Decoded(cols.batch(feed, rejected), [])


def _decode_lenient(frame: bytes | str, packed: bytes | None, feed: str) -> Decoded:
    try:
        doc = _msgpack_any.decode(packed) if packed is not None else msgspec.json.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):  # (bad UTF-8 in a msgpack str)
        why = "malformed_msgpack" if packed is not None else "malformed_json"
        return Decoded(Columns().batch(feed, [frame_rejection(why, frame)]), [])
    return decode_elements(feed, doc, _element, "S")


_TRADE_KEYS = ("S", "p", "s", "t")
_BAR_KEYS = ("S", "o", "h", "l", "c", "t")


def _element(el: object, cols: Columns, controls: list[Control]) -> str | None:
    """Route one element; returns None when used, "ignored", or the rejection reason."""
    if not isinstance(el, dict):
        return "bad_message"
    kind = el.get("T")
    if kind is None:
        return "missing_field"
    if kind == "t":
        if any(k not in el for k in _TRADE_KEYS):
            return "missing_field"
        conditions, tape = el.get("c"), el.get("z")
        if conditions is not None:
            if not isinstance(conditions, list) or not all(isinstance(c, str) for c in conditions):
                return "bad_message"
            if sip_excluded(conditions, tape if isinstance(tape, str) else None):
                cols.exclude(el["S"], datetime_us(el["t"]), trade_key(el.get("i"), el.get("x")))
                return TRADE_CONDITION
        trade = trade_key(el.get("i"), el.get("x"))
        return cols.tick(el["S"], datetime_us(el["t"]), el["p"], el["s"], trade)
    if kind in ("b", "u", "d"):
        if any(k not in el for k in _BAR_KEYS):
            return "missing_field"
        at = datetime_us(el["t"])
        ohlcv = (el["o"], el["h"], el["l"], el["c"], el.get("v", 0.0))
        return cols.daily(el["S"], at, ohlcv) if kind == "d" else cols.minute(el["S"], at, ohlcv)
    if kind in ("x", "c"):
        return _taken_back(el, cols)
    if kind == "success":
        msg = el.get("msg", "")
        if not isinstance(msg, str):
            return "bad_message"
        controls.append(_success(msg))
        return None
    if kind == "error":
        code, msg = el.get("code"), el.get("msg", "")
        if not (code is None or (isinstance(code, int) and not isinstance(code, bool))):
            return "bad_message"
        controls.append(_error(code, str(msg)))
        return None
    if kind == "subscription":
        controls.append(_subscription(el))
        return None
    if kind == "s":
        return _status(el, controls)
    if isinstance(kind, str) and kind in _IGNORED:
        return "ignored"
    return "bad_message"


def _taken_back(el: dict[Any, Any], cols: Columns) -> str | None:
    """A cancel or error "x", or a correction "c", element by element (see the module)."""
    wanted = ("S", "i") if el["T"] == "x" else ("S", "oi", "ci", "cp", "cs")
    if any(k not in el for k in wanted):
        return "missing_field"
    if el["T"] == "x":
        at = datetime_us(el["t"]) if el.get("t") is not None else None
        return cols.cancel(el["S"], at, trade_key(el["i"], el.get("x")))
    conditions = el.get("cc")
    if conditions is not None and not (
        isinstance(conditions, list) and all(isinstance(c, str) for c in conditions)
    ):
        return "bad_message"
    tape = el.get("z")
    return _correction(
        cols,
        el["S"],
        el.get("t"),
        el.get("x"),
        el["oi"],
        el["ci"],
        el["cp"],
        el["cs"],
        conditions,
        tape if isinstance(tape, str) else None,
    )


def _correction(
    cols: Columns,
    symbol: object,
    at: object,
    venue: object,
    old: object,
    new: object,
    price: object,
    size: object,
    conditions: list[str] | None,
    tape: str | None,
) -> str | None:
    """Append a correction: trade `old` reported by `venue` becomes `new` at `price` for
    `size`; or is taken back when its new conditions keep it out of bars."""
    ts = datetime_us(at) if at is not None else None
    trade = trade_key(old, venue)
    if conditions and sip_excluded(conditions, tape):
        return cols.cancel(symbol, ts, trade)
    return cols.cancel(symbol, ts, trade, (trade_key(new, venue), price, size))


def _success(msg: str) -> Control:
    if msg == "connected":
        return Control("connected", msg)
    if msg == "authenticated":
        return Control("authenticated", msg)
    return Control("notice", msg)


def _error(code: int | None, msg: str) -> Control:
    return Control("error", msg, code=code, action=error_action(code))


def _subscription(el: dict[Any, Any]) -> Control:
    channels: dict[str, str | list[str]] = {}
    for name, value in el.items():
        if isinstance(name, str) and name != "T" and isinstance(value, list):
            channels[name] = [str(v) for v in value]
    return Control("subscribed", "subscribed", detail=channels)


def _status(el: dict[Any, Any], controls: list[Control]) -> str | None:
    symbol, code = el.get("S"), el.get("sc")
    if symbol is None or code is None:
        return "missing_field"
    if not (isinstance(symbol, str) and symbol and isinstance(code, str)):
        return "bad_message"
    at = datetime_us(el["t"]) if "t" in el else None
    if isinstance(at, str):
        return at
    ts = msgspec.convert(el["t"], UtcDatetime) if at is not None else None
    detail: dict[str, str | list[str]] = {
        key: str(el[key]) for key in ("sc", "sm", "rc", "rm", "z") if el.get(key) is not None
    }
    halted = True if code in _HALTED else False if code in _RESUMED else None
    message = str(el.get("sm", ""))
    controls.append(Control("status", message, symbol=symbol, ts=ts, halted=halted, detail=detail))
    return None


class AlpacaSession:
    """The Alpaca handshake: auth after "connected", subscribe after "authenticated"."""

    provider = "alpaca"
    acknowledges_subscribe = True

    def __init__(
        self, url: str, symbols: Sequence[str], key: str, secret: str, *, msgpack: bool = False
    ) -> None:
        self._url = url
        self._symbols = list(symbols)
        self._key = key
        self._secret = secret
        self.msgpack = msgpack

    def __repr__(self) -> str:
        return f"AlpacaSession({self._url!r}, {len(self._symbols)} symbols, msgpack={self.msgpack})"

    def url(self) -> str:
        """The stream URL (credentials travel in the auth message, not the URL)."""
        return self._url

    def headers(self) -> dict[str, str]:
        """`Content-Type: application/msgpack` asks Alpaca for msgpack frames."""
        return {"Content-Type": "application/msgpack"} if self.msgpack else {}

    def opening(self) -> list[Outgoing]:
        """Nothing: Alpaca speaks first."""
        return []

    def replies(self, control: Control) -> list[Outgoing]:
        """Auth after "connected", subscribe after "authenticated"."""
        if control.kind == "connected":
            return [auth_message(self._key, self._secret, msgpack=self.msgpack)]
        if control.kind == "authenticated":
            return [subscribe_message(self._symbols, msgpack=self.msgpack)]
        return []

    def decode(self, frame: bytes | str, feed: str) -> Decoded:
        """`decode_alpaca`."""
        return decode_alpaca(frame, feed=feed)
