"""Finnhub trades stream, sans I/O: token URL, subscribe messages, frames to read, errors to judge.

A frame is one JSON object: `{"type": "trade", "data": [...]}` with trades `{p, s, t (epoch ms),
v, c}`, `{"type": "ping"}` when idle, or `{"type": "error", "msg": ...}`. Trades with `v = 0` are
price-only updates from venues that do not stream trades: they stay ticks with size 0, so volume
rules see nothing and price rules still see the print. Finnhub streams no bars and no trade ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from monitor.core.model import Rejection
from monitor.feeds.provider import (
    Action,
    Columns,
    Control,
    Decoded,
    Outgoing,
    frame_rejection,
    ms_us,
    rejection,
)

__all__ = [
    "FinnhubSession",
    "decode_finnhub",
    "error_action",
    "stream_url",
    "subscribe_messages",
]

# Words in an error message that point at the API key: reconnecting cannot fix those.
_AUTH_WORDS = ("api key", "token", "unauthori", "auth")


def error_action(msg: str) -> Action:
    """Fatal when the message is about the key; otherwise go on (e.g. symbols over the cap)."""
    lowered = msg.lower()
    return "fatal" if any(word in lowered for word in _AUTH_WORDS) else "continue"


def stream_url(url: str, token: str) -> str:
    """The stream URL with `token` in the query string (replacing any token already there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def subscribe_messages(symbols: Sequence[str]) -> list[Outgoing]:
    """One subscribe message per symbol."""
    return [
        msgspec.json.encode({"type": "subscribe", "symbol": symbol}).decode() for symbol in symbols
    ]


# --- decoding ------------------------------------------------------------------------------------


class _Trade(msgspec.Struct):
    s: str
    p: float
    t: int
    v: float


class _TradeMessage(msgspec.Struct, tag="trade", tag_field="type"):
    data: list[_Trade]


_json_trades = msgspec.json.Decoder(_TradeMessage)


def decode_finnhub(frame: bytes | str, *, feed: str) -> Decoded:
    """Decode one JSON frame; never raises on bad input.

    A well-typed trade message takes a typed decode; anything else is read element by element.
    """
    try:
        message = _json_trades.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    else:
        cols = Columns()
        if all(cols.tick(t.s, ms_us(t.t), t.p, t.v, None) is None for t in message.data):
            return Decoded(cols.batch(feed, []), [])
    return _decode_lenient(frame, feed)


def _decode_lenient(frame: bytes | str, feed: str) -> Decoded:
    try:
        doc = msgspec.json.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return Decoded(Columns().batch(feed, [frame_rejection("malformed_json", frame)]), [])
    cols = Columns()
    controls: list[Control] = []
    rejections: list[Rejection] = []
    if not isinstance(doc, dict):
        return Decoded(cols.batch(feed, [rejection("bad_message", doc)]), [])
    kind = doc.get("type")
    if kind == "trade":
        data = doc.get("data")
        if data is None:
            rejections.append(rejection("missing_field", doc))
        elif not isinstance(data, list):
            rejections.append(rejection("bad_message", doc))
        else:
            for element in data:
                reason = _trade(element, cols)
                if reason is not None:
                    rejections.append(rejection(reason, element, "s"))
    elif kind == "ping":
        controls.append(Control("ping"))
    elif kind == "error":
        msg = str(doc.get("msg", ""))
        controls.append(Control("error", msg, action=error_action(msg)))
    elif kind is None:
        rejections.append(rejection("missing_field", doc))
    else:
        rejections.append(rejection("bad_message", doc))
    return Decoded(cols.batch(feed, rejections), controls)


def _trade(el: object, cols: Columns) -> str | None:
    if not isinstance(el, dict):
        return "bad_message"
    if any(k not in el for k in ("s", "p", "t")):
        return "missing_field"
    return cols.tick(el["s"], ms_us(el["t"]), el["p"], el.get("v", 0.0), None)


class FinnhubSession:
    """No handshake: the token is in the URL; subscribes go out on open and are never acked."""

    provider = "finnhub"
    acknowledges_subscribe = False

    def __init__(self, url: str, symbols: Sequence[str], token: str) -> None:
        self._url = stream_url(url, token)
        self._symbols = list(symbols)

    def __repr__(self) -> str:
        return f"FinnhubSession({len(self._symbols)} symbols)"

    def url(self) -> str:
        """The stream URL, token included: mask it before logging."""
        return self._url

    def headers(self) -> dict[str, str]:
        """No extra headers."""
        return {}

    def opening(self) -> list[Outgoing]:
        """A subscribe per symbol."""
        return subscribe_messages(self._symbols)

    def replies(self, control: Control) -> list[Outgoing]:
        """Nothing: pings need no answer."""
        return []

    def decode(self, frame: bytes | str, feed: str) -> Decoded:
        """`decode_finnhub`."""
        return decode_finnhub(frame, feed=feed)
