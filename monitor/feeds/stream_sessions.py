"""The sans-I/O session a WebSocket feed's provider speaks, chosen and checked from its settings.

A session says what to send on a connection (its handshake: auth, subscribe, replies to control
messages) and decodes each frame, with no I/O of its own: `AlpacaSession`, `PolygonSession` and
`FinnhubSession` in their providers' modules, and `GenericSession` here, the generic JSON
tick/bar shape (`monitor.feeds.generic`), which has no handshake and nothing to subscribe.
`session_for` builds the one a feed's `provider` names, and refuses the settings it cannot work
with (`ConfigError`, naming the field): no symbols, no key, Alpaca's without its secret, a
provider it does not know.

Why apart from `monitor.feeds.websocket`: that module does the I/O around a session, whichever
it is; which one, and whether its settings will do, is decided once, from config, before any
connection.
"""

from __future__ import annotations

from typing import Literal

from monitor.errors import ConfigError
from monitor.feeds.alpaca import AlpacaSession
from monitor.feeds.finnhub import FinnhubSession
from monitor.feeds.generic import decode_generic
from monitor.feeds.polygon import PolygonSession
from monitor.feeds.provider import Control, Decoded, Outgoing, Session

__all__ = ["GenericSession", "Provider", "session_for"]

Provider = Literal["alpaca", "polygon", "finnhub", "generic"]


class GenericSession:
    """The generic JSON tick/bar shape: no handshake, nothing to subscribe."""

    provider = "generic"
    acknowledges_subscribe = False

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url

    def headers(self) -> dict[str, str]:
        return {}

    def opening(self) -> list[Outgoing]:
        return []

    def replies(self, control: Control) -> list[Outgoing]:
        return []

    def decode(self, frame: bytes | str, feed: str) -> Decoded:
        payload = frame.encode() if isinstance(frame, str) else frame
        return Decoded(decode_generic(payload, feed=feed), [])


def session_for(
    name: str,
    url: str,
    provider: str,
    symbols: list[str],
    key: str | None,
    secret: str | None,
    msgpack: bool,
) -> Session:
    """The session of the feed `name`'s `provider`; ConfigError if its settings will not do."""
    if provider == "generic":
        return GenericSession(url)
    if not symbols:
        raise ConfigError(f"feeds.{name}.symbols: is empty")
    if not key:
        raise ConfigError(f"feeds.{name}.key: {provider} needs an API key")
    if provider == "alpaca":
        if not secret:
            raise ConfigError(f"feeds.{name}.secret: alpaca needs the API secret")
        return AlpacaSession(url, symbols, key, secret, msgpack=msgpack)
    if provider == "polygon":
        return PolygonSession(url, symbols, key)
    if provider == "finnhub":
        return FinnhubSession(url, symbols, key)
    raise ConfigError(f"feeds.{name}.provider: unknown provider {provider!r}")
