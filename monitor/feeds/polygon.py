"""Polygon.io (Massive) stocks stream, sans I/O: messages to send, frames to read, errors to judge.

Frames are JSON arrays of objects tagged by `ev`. Trades "T" become ticks (`t` epoch ms; their
`id` is `x:trfi:i`, the trade id with where it was reported: `trade_key`); minute aggregates
"AM" become minute bars (`s` the window start, epoch ms).
"status" events carry the handshake (connected, auth_success, success = subscribed) and errors.
Other channels (quotes, second aggregates, LULD, imbalances, ...) are counted as ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from monitor.core.model import Rejection
from monitor.feeds.conditions import REASON as TRADE_CONDITION
from monitor.feeds.conditions import polygon_excluded
from monitor.feeds.provider import (
    Action,
    Columns,
    Control,
    Decoded,
    Outgoing,
    decode_elements,
    frame_rejection,
    ms_us,
    rejection,
    trade_key,
)

__all__ = [
    "PolygonSession",
    "auth_message",
    "decode_polygon",
    "status_action",
    "subscribe_message",
]

_IGNORED = frozenset({"Q", "A", "LULD", "NOI", "FMV"})


def status_action(status: str) -> Action:
    """What a status event asks of the connection: an auth failure is fatal, errors reconnect."""
    if status == "auth_failed":
        return "fatal"
    if status in ("error", "max_connections", "auth_timeout"):
        return "reconnect"
    return "continue"


def auth_message(key: str) -> Outgoing:
    """The auth action (the key as plain text: the config's `Secret` is a str subclass the
    encoder refuses)."""
    return msgspec.json.encode({"action": "auth", "params": str(key)}).decode()


def subscribe_message(symbols: Sequence[str], channels: Sequence[str] = ("T", "AM")) -> Outgoing:
    """The subscribe action: `T.AAPL,AM.AAPL,...` (`*` subscribes to all tickers)."""
    params = ",".join(f"{channel}.{symbol}" for channel in channels for symbol in symbols)
    return msgspec.json.encode({"action": "subscribe", "params": params}).decode()


# --- decoding ------------------------------------------------------------------------------------


class _Trade(msgspec.Struct, tag="T", tag_field="ev"):
    sym: str
    p: float
    s: float
    t: int
    i: str | int | None = None
    x: int | None = None  # the exchange (4: a TRF, `trfi` says which)
    trfi: int | None = None
    c: list[int] | None = None  # condition numbers (see monitor.feeds.conditions)


class _Minute(msgspec.Struct, tag="AM", tag_field="ev"):
    sym: str
    o: float
    h: float
    l: float  # noqa: E741 - the wire name
    c: float
    s: int
    v: float = 0.0


_json_frame = msgspec.json.Decoder(list[_Trade | _Minute])


def decode_polygon(frame: bytes | str, *, feed: str) -> Decoded:
    """Decode one JSON frame; never raises on bad input.

    A frame of well-typed trades and minute aggregates takes a typed decode; anything else
    (status events, other channels, bad elements) is decoded element by element.
    """
    try:
        items = _json_frame.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    else:
        cols = Columns()
        rejected: list[Rejection] = []
        for item in items:
            if isinstance(item, _Trade):
                if item.c and polygon_excluded(item.c):
                    # (its fields as text: no second decode of a busy frame)
                    rejected.append(rejection(TRADE_CONDITION, msgspec.to_builtins(item), "sym"))
                    continue
                trade = trade_key(item.i, item.x, item.trfi)
                reason = cols.tick(item.sym, ms_us(item.t), item.p, item.s, trade)
            else:
                ohlcv = (item.o, item.h, item.l, item.c, item.v)
                reason = cols.minute(item.sym, ms_us(item.s), ohlcv)
            if reason is not None:
                break
        else:
            return Decoded(cols.batch(feed, rejected), [])
    return _decode_lenient(frame, feed)


def _decode_lenient(frame: bytes | str, feed: str) -> Decoded:
    try:
        doc = msgspec.json.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return Decoded(Columns().batch(feed, [frame_rejection("malformed_json", frame)]), [])
    return decode_elements(feed, doc, _element, "sym")


def _element(el: object, cols: Columns, controls: list[Control]) -> str | None:
    """Route one element; returns None when used, "ignored", or the rejection reason."""
    if not isinstance(el, dict):
        return "bad_message"
    ev = el.get("ev")
    if ev is None:
        return "missing_field"
    if ev == "T":
        if any(k not in el for k in ("sym", "p", "s", "t")):
            return "missing_field"
        conditions = el.get("c")
        if conditions is not None:
            if not isinstance(conditions, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in conditions
            ):
                return "bad_message"
            if polygon_excluded(conditions):
                return TRADE_CONDITION
        trade = trade_key(el.get("i"), el.get("x"), el.get("trfi"))
        return cols.tick(el["sym"], ms_us(el["t"]), el["p"], el["s"], trade)
    if ev == "AM":
        if any(k not in el for k in ("sym", "o", "h", "l", "c", "s")):
            return "missing_field"
        ohlcv = (el["o"], el["h"], el["l"], el["c"], el.get("v", 0.0))
        return cols.minute(el["sym"], ms_us(el["s"]), ohlcv)
    if ev == "status":
        status, message = el.get("status"), el.get("message", "")
        if status is None:
            return "missing_field"
        if not isinstance(status, str):
            return "bad_message"
        controls.append(_status(status, str(message)))
        return None
    if isinstance(ev, str) and ev in _IGNORED:
        return "ignored"
    return "bad_message"


def _status(status: str, message: str) -> Control:
    if status == "connected":
        return Control("connected", message)
    if status == "auth_success":
        return Control("authenticated", message)
    if status == "success" and message.startswith("subscribed to"):
        return Control("subscribed", message)
    action = status_action(status)
    kind: Any = "notice" if action == "continue" else "error"
    return Control(kind, message, action=action, detail={"status": status})


class PolygonSession:
    """The Polygon handshake: auth after "connected", subscribe after "auth_success"."""

    provider = "polygon"
    acknowledges_subscribe = True

    def __init__(
        self, url: str, symbols: Sequence[str], key: str, channels: Sequence[str] = ("T", "AM")
    ) -> None:
        self._url = url
        self._symbols = list(symbols)
        self._key = key
        self._channels = tuple(channels)

    def __repr__(self) -> str:
        return f"PolygonSession({self._url!r}, {len(self._symbols)} symbols)"

    def url(self) -> str:
        """The stream URL (the key travels in the auth message)."""
        return self._url

    def headers(self) -> dict[str, str]:
        """No extra headers."""
        return {}

    def opening(self) -> list[Outgoing]:
        """Nothing: Polygon speaks first."""
        return []

    def replies(self, control: Control) -> list[Outgoing]:
        """Auth after "connected", subscribe after "auth_success"."""
        if control.kind == "connected":
            return [auth_message(self._key)]
        if control.kind == "authenticated":
            return [subscribe_message(self._symbols, self._channels)]
        return []

    def decode(self, frame: bytes | str, feed: str) -> Decoded:
        """`decode_polygon`."""
        return decode_polygon(frame, feed=feed)
