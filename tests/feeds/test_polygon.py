"""Polygon stocks stream protocol: messages to send, frame decoding, status classification."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.model import MINUTE_SCHEMA, TICK_SCHEMA, Rejection
from monitor.feeds.polygon import (
    PolygonSession,
    auth_message,
    decode_polygon,
    status_action,
    subscribe_message,
)
from monitor.feeds.provider import Control

UTC = dt.UTC

# Frames copied from the feeds README (Polygon.io / Massive).
CONNECTED = '[{"ev":"status","status":"connected","message":"Connected Successfully"}]'
AUTH_OK = '[{"ev":"status","status":"auth_success","message":"authenticated"}]'
SUBSCRIBED = '[{"ev":"status","status":"success","message":"subscribed to: AM.AAPL"}]'
DOC_TRADE = '{"ev":"T","sym":"MSFT","x":4,"i":"12345","z":3,"p":114.125,"s":100,"c":[0,12],"t":1536036818784,"q":3681328}'  # noqa: E501
TRADES = '[{"ev":"T","sym":"AAPL","i":"72815","x":12,"p":161.87,"s":1,"c":[14,37,41],"t":1651684192536,"q":4009408,"z":3},{"ev":"T","sym":"AAPL","i":"799","x":4,"p":161.87,"s":100,"t":1651684192717,"q":4009434,"z":3}]'  # noqa: E501
MINUTE = '{"ev":"AM","sym":"GTE","v":4110,"av":9470157,"op":0.4372,"vw":0.4488,"o":0.4488,"c":0.4486,"h":0.4489,"l":0.4486,"a":0.4352,"z":685,"s":1610144640000,"e":1610144700000}'  # noqa: E501


def ticks(*rows: tuple[str, dt.datetime, float, float, str | None]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=TICK_SCHEMA, orient="row")


def minute(*rows: tuple[str, dt.datetime, float, float, float, float, float]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=MINUTE_SCHEMA, orient="row")


def ms(value: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=value)


GTE = ("GTE", ms(1610144640000), 0.4488, 0.4489, 0.4486, 0.4486, 4110.0)
CASES: list[tuple[str, str, pl.DataFrame, pl.DataFrame, list[Rejection], list[Control]]] = [
    ("connected", CONNECTED, ticks(), minute(), [],
     [Control("connected", "Connected Successfully")]),
    ("auth_success", AUTH_OK, ticks(), minute(), [], [Control("authenticated", "authenticated")]),
    ("subscribed", SUBSCRIBED, ticks(), minute(), [],
     [Control("subscribed", "subscribed to: AM.AAPL")]),
    ("auth_failed", '[{"ev":"status","status":"auth_failed","message":"authentication failed"}]',
     ticks(), minute(), [],
     [Control("error", "authentication failed", action="fatal", detail={"status": "auth_failed"})]),
    ("doc trade", f"[{DOC_TRADE}]", ticks(("MSFT", ms(1536036818784), 114.125, 100.0, "4:12345")),
     minute(), [], []),
    ("mock server trades", TRADES,
     ticks(("AAPL", ms(1651684192536), 161.87, 1.0, "12:72815"),
           ("AAPL", ms(1651684192717), 161.87, 100.0, "4:799")), minute(), [], []),
    ("minute agg: s is the start", f"[{MINUTE}]", ticks(), minute(GTE), [], []),
    ("mixed: status, trade, bad trade, agg",
     f'[{SUBSCRIBED[1:-1]},{DOC_TRADE},{{"ev":"T","sym":"X","p":1,"s":1,"t":"soon"}},{MINUTE}]',
     ticks(("MSFT", ms(1536036818784), 114.125, 100.0, "4:12345")), minute(GTE),
     [Rejection("bad_message", "X", '{"ev":"T","sym":"X","p":1,"s":1,"t":"soon"}')],
     [Control("subscribed", "subscribed to: AM.AAPL")]),
    ("zero price", '[{"ev":"T","sym":"X","p":0,"s":1,"t":1}]', ticks(), minute(),
     [Rejection("bad_price", "X", '{"ev":"T","sym":"X","p":0,"s":1,"t":1}')], []),
    ("missing start", '[{"ev":"AM","sym":"X","o":1,"h":1,"l":1,"c":1}]', ticks(), minute(),
     [Rejection("missing_field", "X", '{"ev":"AM","sym":"X","o":1,"h":1,"l":1,"c":1}')], []),
    ("high below low", '[{"ev":"AM","sym":"X","o":1,"h":1,"l":2,"c":1,"s":0}]', ticks(), minute(),
     [Rejection("bad_bar", "X", '{"ev":"AM","sym":"X","o":1,"h":1,"l":2,"c":1,"s":0}')], []),
    ("not JSON", "nope", ticks(), minute(), [Rejection("malformed_json", raw="nope")], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "want_ticks", "want_minute", "want_rejections", "want_controls"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decode_frames(
    frame: str,
    want_ticks: pl.DataFrame,
    want_minute: pl.DataFrame,
    want_rejections: list[Rejection],
    want_controls: list[Control],
) -> None:
    """Each documented frame decodes into exactly these rows, rejections and control events."""
    decoded = decode_polygon(frame.encode(), feed="polygon")
    assert decoded.batch.ticks.equals(want_ticks)
    assert decoded.batch.minute_bars.equals(want_minute)
    assert decoded.batch.daily_bars.height == 0
    assert decoded.batch.rejections == want_rejections
    assert decoded.controls == want_controls


def test_other_channels_are_ignored() -> None:
    """Quotes and second aggregates are counted as ignored, not rejected."""
    decoded = decode_polygon('[{"ev":"Q","sym":"A"},{"ev":"A","sym":"A"}]', feed="p")
    assert (decoded.ignored, decoded.batch.size(), decoded.batch.rejections) == (2, 0, [])


@pytest.mark.parametrize(
    ("status", "action"),
    [("auth_failed", "fatal"), ("max_connections", "reconnect"), ("error", "reconnect"),
     ("success", "continue"), ("connected", "continue")],
)  # fmt: skip
def test_status_action(status: str, action: str) -> None:
    """A failed auth is fatal; connection-limit and other errors reconnect with backoff."""
    assert status_action(status) == action


def test_messages_and_handshake() -> None:
    """Auth carries the key in params; subscribe lists channel.symbol pairs after auth_success."""
    assert auth_message("K") == '{"action":"auth","params":"K"}'
    assert subscribe_message(["AAPL", "MSFT"], ["AM"]) == (
        '{"action":"subscribe","params":"AM.AAPL,AM.MSFT"}'
    )
    session = PolygonSession("wss://socket.polygon.io/stocks", ["AAPL"], "K")
    assert session.replies(Control("connected")) == [auth_message("K")]
    assert session.replies(Control("authenticated")) == [subscribe_message(["AAPL"])]
    assert "K'" not in repr(session)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELD = st.sampled_from(["ev", "sym", "p", "s", "t", "i", "o", "h", "l", "c", "v", "status"])
VALUE = (
    st.sampled_from(["T", "AM", "Q", "status", "success", "auth_failed", "MSFT", ""])
    | st.integers(-(2**63), 2**63) | st.floats() | JSON
)  # fmt: skip
ELEMENT = st.dictionaries(FIELD, VALUE, max_size=8) | JSON


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    """Any bytes decode without raising."""
    decode_polygon(frame, feed="p")


@settings(max_examples=300, deadline=None)
@given(st.lists(ELEMENT, max_size=6))
def test_every_element_is_decoded_or_rejected(elements: list[Any]) -> None:
    """Each element of an array frame lands in exactly one place: a row, a rejection, a control."""
    try:
        frame = msgspec.json.encode(elements)
    except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
        return
    assert decode_polygon(frame, feed="p").elements() == len(elements)


def test_trades_the_sip_keeps_out_of_the_last_sale_are_rejected() -> None:
    """Polygon's condition numbers: an average-price trade (2), a prior reference price (22),
    a qualified contingent trade (53), an official close (15) and an extended-hours trade sold
    out of sequence (13) are rejected as
    `trade_condition`; a regular trade, an intermarket sweep (14), an odd lot (37) and a Form T
    trade (12) are kept."""
    conditions = {
        1: [],
        2: [14],
        3: [37],
        4: [12, 37],
        5: [2],
        6: [22],
        7: [14, 53],
        8: [15],
        9: [13],
    }
    frame = msgspec.json.encode(
        [
            {
                "ev": "T",
                "sym": "MSFT",
                "i": str(i),
                "p": 114.1,
                "s": 100,
                "t": 1536036818784,
                "c": c,
            }
            for i, c in conditions.items()
        ]
    )
    decoded = decode_polygon(frame, feed="p")
    assert decoded.batch.ticks.get_column("id").to_list() == ["1", "2", "3", "4"]
    rejected = decoded.batch.rejections
    assert {r.reason for r in rejected} == {"trade_condition"}
    assert [msgspec.json.decode(r.raw or "")["i"] for r in rejected] == ["5", "6", "7", "8", "9"]
    odd = '[{"ev":"T","sym":"X","p":1,"s":1,"t":1536036818784,"c":[true]}]'
    assert [r.reason for r in decode_polygon(odd, feed="p").batch.rejections] == ["bad_message"]
