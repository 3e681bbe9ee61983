"""Finnhub trades stream protocol: the token URL, subscribes, frame decoding, errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.model import TICK_SCHEMA, Rejection
from monitor.feeds.finnhub import (
    FinnhubSession,
    decode_finnhub,
    error_action,
    stream_url,
    subscribe_messages,
)
from monitor.feeds.provider import Control

UTC = dt.UTC

# Frames copied from the feeds README (Finnhub).
TRADE = '{"data":[{"c":null,"p":7296.89,"s":"BINANCE:BTCUSDT","t":1575526691134,"v":0.011467}],"type":"trade"}'  # noqa: E501
PING = '{"type":"ping"}'
ERROR = '{"msg":"Subscribing to too many symbols","type":"error"}'
BTC_TS = dt.datetime(2019, 12, 5, 6, 18, 11, 134000, tzinfo=UTC)


def ticks(*rows: tuple[str, dt.datetime, float, float, str | None]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=TICK_SCHEMA, orient="row")


CASES: list[tuple[str, str, pl.DataFrame, list[Rejection], list[Control]]] = [
    ("trade", TRADE, ticks(("BINANCE:BTCUSDT", BTC_TS, 7296.89, 0.011467, None)), [], []),
    ("price-only update keeps size 0",
     '{"data":[{"c":["1"],"p":191.5,"s":"AAPL","t":1575526691134,"v":0}],"type":"trade"}',
     ticks(("AAPL", BTC_TS, 191.5, 0.0, None)), [], []),
    ("ping", PING, ticks(), [], [Control("ping")]),
    ("error: symbol cap", ERROR, ticks(), [],
     [Control("error", "Subscribing to too many symbols", action="continue")]),
    ("one bad trade among good ones",
     '{"data":[{"p":-1,"s":"X","t":1,"v":1},{"p":7296.89,"s":"BINANCE:BTCUSDT","t":1575526691134,"v":0.011467}],"type":"trade"}',
     ticks(("BINANCE:BTCUSDT", BTC_TS, 7296.89, 0.011467, None)),
     [Rejection("bad_price", "X", '{"p":-1,"s":"X","t":1,"v":1}')], []),
    ("missing time", '{"data":[{"p":1,"s":"X"}],"type":"trade"}', ticks(),
     [Rejection("missing_field", "X", '{"p":1,"s":"X"}')], []),
    ("data not a list", '{"data":3,"type":"trade"}', ticks(),
     [Rejection("bad_message", raw='{"data":3,"type":"trade"}')], []),
    ("unknown type", '{"type":"news"}', ticks(), [Rejection("bad_message", raw='{"type":"news"}')],
     []),
    ("not JSON", "{", ticks(), [Rejection("malformed_json", raw="{")], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "want_ticks", "want_rejections", "want_controls"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decode_frames(
    frame: str,
    want_ticks: pl.DataFrame,
    want_rejections: list[Rejection],
    want_controls: list[Control],
) -> None:
    """Each documented frame decodes into exactly these ticks, rejections and control events."""
    decoded = decode_finnhub(frame, feed="finnhub")
    assert decoded.batch.ticks.equals(want_ticks)
    assert decoded.batch.minute_bars.height == decoded.batch.daily_bars.height == 0
    assert decoded.batch.rejections == want_rejections
    assert decoded.controls == want_controls


def test_url_subscribes_and_session() -> None:
    """The token rides in the query string; one unacknowledged subscribe per symbol."""
    assert stream_url("wss://ws.finnhub.io", "T") == "wss://ws.finnhub.io?token=T"
    assert stream_url("wss://ws.finnhub.io?token=old&x=1", "T") == "wss://ws.finnhub.io?x=1&token=T"
    assert subscribe_messages(["AAPL", "BINANCE:BTCUSDT"]) == [
        '{"type":"subscribe","symbol":"AAPL"}',
        '{"type":"subscribe","symbol":"BINANCE:BTCUSDT"}',
    ]
    session = FinnhubSession("wss://ws.finnhub.io", ["AAPL"], "T")
    assert (session.url(), session.opening(), session.acknowledges_subscribe) == (
        "wss://ws.finnhub.io?token=T",
        subscribe_messages(["AAPL"]),
        False,
    )
    assert "T" not in repr(session).replace("FinnhubSession", "")


def test_error_action() -> None:
    """Key errors are fatal; a symbol cap is logged and the stream goes on."""
    assert [error_action(m) for m in ("Invalid API key", "Subscribing to too many symbols")] == [
        "fatal",
        "continue",
    ]


TRADE_EL = st.dictionaries(
    st.sampled_from(["p", "s", "t", "v", "c"]),
    st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=3) | st.none(),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    """Any bytes decode without raising."""
    decode_finnhub(frame, feed="f")


@settings(max_examples=300, deadline=None)
@given(st.lists(TRADE_EL | st.integers() | st.text(max_size=3), max_size=6))
def test_every_trade_is_decoded_or_rejected(data: list[Any]) -> None:
    """Each element of `data` becomes a tick or a rejection."""
    try:
        frame = msgspec.json.encode({"type": "trade", "data": data})
    except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
        return
    assert decode_finnhub(frame, feed="f").elements() == len(data)
