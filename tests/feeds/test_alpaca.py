"""Alpaca v2 stream protocol: messages to send, frame decoding, error classification."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, TICK_SCHEMA, Rejection
from monitor.feeds.alpaca import (
    AlpacaSession,
    auth_message,
    decode_alpaca,
    error_action,
    subscribe_message,
)
from monitor.feeds.provider import Control

UTC = dt.UTC

# Frames copied from the feeds README (Alpaca Market Data v2).
CONNECTED = '[{"T":"success","msg":"connected"}]'
AUTHENTICATED = '[{"T":"success","msg":"authenticated"}]'
LIMIT = '[{"T":"error","code":406,"msg":"connection limit exceeded"}]'
SUBSCRIPTION = (
    '[{"T":"subscription","trades":["AAPL"],"quotes":["AMD","CLDR"],"bars":["*"],"updatedBars":[],'
    '"dailyBars":["VOO"],"statuses":["*"],"lulds":[],"corrections":["AAPL"],"cancelErrors":["AAPL"]}]'
)
TRADE = '{"T":"t","i":96921,"S":"AAPL","x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"}'  # noqa: E501
TRADES = (
    '[{"T":"t","S":"AAPL","i":628,"x":"K","p":162.92,"s":3,"c":["@","F","T","I"],"z":"C",'
    '"t":"2023-04-06T11:54:26.838232225Z"},{"T":"t","S":"AAPL","i":75,"x":"Z","p":162.92,"s":3,'
    '"c":["@","F","T","I"],"z":"C","t":"2023-04-06T11:54:26.838562809Z"}]'
)
BAR = '{"T":"b","S":"SPY","o":388.985,"h":389.13,"l":388.975,"c":389.12,"v":49378,"n":461,"vw":389.062639,"t":"2021-02-22T19:15:00Z"}'  # noqa: E501


def ticks(*rows: tuple[str, dt.datetime, float, float, str | None]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=TICK_SCHEMA, orient="row")


def minute(*rows: tuple[str, dt.datetime, float, float, float, float, float]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=MINUTE_SCHEMA, orient="row")


def daily(*rows: tuple[str, dt.date, float, float, float, float, float]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=DAILY_SCHEMA, orient="row")


UPDATED = BAR.replace('"b"', '"u"')
DAILY_EARLY = BAR.replace('"b"', '"d"').replace("19:15", "02:15")  # 21:15 on the 21st in New York
SPY_BAR = ("SPY", dt.datetime(2021, 2, 22, 19, 15, tzinfo=UTC), 388.985, 389.13, 388.975, 389.12,
           49378.0)  # fmt: skip
EMPTY_T, EMPTY_M, EMPTY_D = ticks(), minute(), daily()

CASES: list[tuple[str, str, pl.DataFrame, pl.DataFrame, pl.DataFrame, list[Rejection], list[Control]]] = [  # noqa: E501
    ("connected", CONNECTED, EMPTY_T, EMPTY_M, EMPTY_D, [], [Control("connected", "connected")]),
    ("authenticated", AUTHENTICATED, EMPTY_T, EMPTY_M, EMPTY_D, [],
     [Control("authenticated", "authenticated")]),
    ("406", LIMIT, EMPTY_T, EMPTY_M, EMPTY_D, [],
     [Control("error", "connection limit exceeded", code=406, action="reconnect")]),
    ("subscription", SUBSCRIPTION, EMPTY_T, EMPTY_M, EMPTY_D, [],
     [Control("subscribed", "subscribed", detail={
         "trades": ["AAPL"], "quotes": ["AMD", "CLDR"], "bars": ["*"], "updatedBars": [],
         "dailyBars": ["VOO"], "statuses": ["*"], "lulds": [], "corrections": ["AAPL"],
         "cancelErrors": ["AAPL"]})]),
    ("doc trade", f"[{TRADE}]",
     ticks(("AAPL", dt.datetime(2021, 2, 22, 15, 51, 44, 208000, tzinfo=UTC), 126.55, 1.0,
            "D:96921")), EMPTY_M, EMPTY_D, [], []),
    ("wire trades, ns to us", TRADES,
     ticks(("AAPL", dt.datetime(2023, 4, 6, 11, 54, 26, 838232, tzinfo=UTC), 162.92, 3.0, "K:628"),
           ("AAPL", dt.datetime(2023, 4, 6, 11, 54, 26, 838563, tzinfo=UTC), 162.92, 3.0, "Z:75")),
     EMPTY_M, EMPTY_D, [], []),
    ("minute bar", f"[{BAR}]", EMPTY_T, minute(SPY_BAR), EMPTY_D, [], []),
    ("updated bar", "[" + UPDATED + "]", EMPTY_T, minute(SPY_BAR), EMPTY_D, [], []),
    ("running daily bar: the New York date", "[" + DAILY_EARLY + "]",
     EMPTY_T, EMPTY_M, daily(("SPY", dt.date(2021, 2, 21), *SPY_BAR[2:])), [], []),
    ("halt", '[{"T":"s","S":"GME","sc":"H","sm":"Trading Halt","rc":"T12","rm":"Info Requested","t":"2021-01-27T15:00:00Z","z":"C"}]',  # noqa: E501
     EMPTY_T, EMPTY_M, EMPTY_D, [],
     [Control("status", "Trading Halt", symbol="GME", ts=dt.datetime(2021, 1, 27, 15, tzinfo=UTC),
              halted=True, detail={"sc": "H", "sm": "Trading Halt", "rc": "T12",
                                   "rm": "Info Requested", "z": "C"})]),
    ("a bad element among good ones",
     '[{"T":"t","S":"AAPL","i":1,"p":-1,"s":1,"t":"2021-02-22T15:51:44Z"},' + TRADE + "]",
     ticks(("AAPL", dt.datetime(2021, 2, 22, 15, 51, 44, 208000, tzinfo=UTC), 126.55, 1.0,
            "D:96921")), EMPTY_M, EMPTY_D,
     [Rejection("bad_price", "AAPL", '{"T":"t","S":"AAPL","i":1,"p":-1,"s":1,"t":"2021-02-22T15:51:44Z"}')],  # noqa: E501
     []),
    ("malformed", '[{"T":', EMPTY_T, EMPTY_M, EMPTY_D, [Rejection("malformed_json", raw='[{"T":')],
     []),
    ("missing price", '[{"T":"t","S":"X","s":1,"t":"2021-02-22T15:51:44Z"}]', EMPTY_T, EMPTY_M,
     EMPTY_D, [Rejection("missing_field", "X", '{"T":"t","S":"X","s":1,"t":"2021-02-22T15:51:44Z"}')],  # noqa: E501
     []),
    ("negative size", '[{"T":"t","S":"X","p":1,"s":-1,"t":"2021-02-22T15:51:44Z"}]', EMPTY_T,
     EMPTY_M, EMPTY_D, [Rejection("bad_size", "X", '{"T":"t","S":"X","p":1,"s":-1,"t":"2021-02-22T15:51:44Z"}')],  # noqa: E501
     []),
    ("no timezone", '[{"T":"t","S":"X","p":1,"s":1,"t":"2021-02-22T15:51:44"}]', EMPTY_T,
     EMPTY_M, EMPTY_D, [Rejection("bad_timestamp", "X", '{"T":"t","S":"X","p":1,"s":1,"t":"2021-02-22T15:51:44"}')],  # noqa: E501
     []),
    ("unknown type", '[{"T":"zz"}, 3]', EMPTY_T, EMPTY_M, EMPTY_D,
     [Rejection("bad_message", raw='{"T":"zz"}'), Rejection("bad_message", raw="3")], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "want_ticks", "want_minute", "want_daily", "want_rejections", "want_controls"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decode_frames(
    frame: str,
    want_ticks: pl.DataFrame,
    want_minute: pl.DataFrame,
    want_daily: pl.DataFrame,
    want_rejections: list[Rejection],
    want_controls: list[Control],
) -> None:
    """Each documented frame decodes into exactly these rows, rejections and control events."""
    for payload in (frame, frame.encode()):
        decoded = decode_alpaca(payload, feed="alpaca")
        assert decoded.batch.feed == "alpaca"
        assert decoded.batch.ticks.equals(want_ticks)
        assert decoded.batch.minute_bars.equals(want_minute)
        assert decoded.batch.daily_bars.equals(want_daily)
        assert decoded.batch.rejections == want_rejections
        assert decoded.controls == want_controls


def test_msgpack_frame_decodes_like_json() -> None:
    """The same trades and bars as msgpack (timestamps as strings) decode to the same batch."""
    frame = f"[{TRADE},{BAR}]"
    from_json = decode_alpaca(frame, feed="a")
    from_msgpack = decode_alpaca(msgspec.msgpack.encode(msgspec.json.decode(frame)), feed="a")
    assert from_msgpack.batch.ticks.equals(from_json.batch.ticks)
    assert from_msgpack.batch.minute_bars.equals(from_json.batch.minute_bars)
    assert (from_msgpack.batch.rejections, from_msgpack.controls) == ([], [])


def test_quotes_are_ignored_and_a_correction_lacking_its_fields_is_rejected() -> None:
    """Quotes count as ignored; a correction is taken in now (see test_cancels.py), and one
    without the trades it names is rejected as missing_field, not ignored."""
    frame = '[{"T":"q","S":"AMD","bp":1},{"T":"c","S":"AAPL"}]'
    decoded = decode_alpaca(frame, feed="a")
    assert (decoded.ignored, decoded.batch.size()) == (1, 0)
    assert [r.reason for r in decoded.batch.rejections] == ["missing_field"]


@pytest.mark.parametrize(
    ("code", "action"),
    [(401, "fatal"), (402, "fatal"), (405, "fatal"), (403, "continue"), (404, "reconnect"),
     (406, "reconnect"), (407, "reconnect"), (409, "fatal"), (410, "fatal"), (411, "fatal"),
     (500, "reconnect"), (None, "reconnect")],
)  # fmt: skip
def test_error_action(code: int | None, action: str) -> None:
    """Auth, plan and subscription failures are fatal (410: a channel the stream does not have,
    the URL of another stream; 411: a token without the data scope), 406 / 407 reconnect
    with backoff, 403 is harmless."""
    assert error_action(code) == action


def test_messages() -> None:
    """Auth and subscribe messages match the documented shapes, in JSON or msgpack."""
    assert auth_message("K", "S") == '{"action":"auth","key":"K","secret":"S"}'
    assert msgspec.msgpack.decode(auth_message("K", "S", msgpack=True)) == {
        "action": "auth",
        "key": "K",
        "secret": "S",
    }
    assert subscribe_message(["AAPL"], updated_bars=False, daily_bars=False) == (
        '{"action":"subscribe","trades":["AAPL"],"bars":["AAPL"],"statuses":["AAPL"]}'
    )


def test_session_handshake_and_repr_hide_the_secret() -> None:
    """The session answers connected with auth and authenticated with subscribe; repr hides keys."""
    session = AlpacaSession("wss://x/v2/iex", ["AAPL"], "K", "S")
    assert session.replies(Control("connected")) == [auth_message("K", "S")]
    assert session.replies(Control("authenticated")) == [subscribe_message(["AAPL"])]
    assert session.replies(Control("subscribed")) == []
    assert "S'" not in repr(session) and "K" not in repr(session).replace("AlpacaSession", "")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELD = st.sampled_from(
    ["T", "S", "p", "s", "t", "i", "o", "h", "l", "c", "v", "code", "msg", "sc"]
)
VALUE = (
    st.sampled_from(["t", "b", "u", "d", "q", "s", "success", "error", "subscription", "AAPL",
                     "2021-02-22T15:51:44.208Z", "2021-02-22T15:51:44", ""])
    | st.integers(-(2**63), 2**63) | st.floats() | st.none() | st.booleans() | JSON
)  # fmt: skip
ELEMENT = st.dictionaries(FIELD, VALUE, max_size=8) | JSON


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    """Any bytes, as JSON or msgpack, decode without raising."""
    decoded = decode_alpaca(frame, feed="a")
    assert decoded.elements() >= 1 or frame.strip() in (b"[]", b"\x90")


@settings(max_examples=300, deadline=None)
@given(st.lists(ELEMENT, max_size=6), st.booleans())
def test_every_element_is_decoded_or_rejected(elements: list[Any], packed: bool) -> None:
    """Each element of an array frame lands in exactly one place: a row, a rejection, a control."""
    try:
        frame = msgspec.msgpack.encode(elements) if packed else msgspec.json.encode(elements)
    except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
        return
    decoded = decode_alpaca(frame, feed="a")
    assert decoded.elements() == len(elements)


def test_trades_the_sip_keeps_out_of_the_last_sale_are_rejected() -> None:
    """Trades whose sale conditions keep them out of the consolidated last sale (an average
    price, a prior reference price, sold out of sequence, a qualified contingent trade, an
    official close) are rejected as `trade_condition`, in JSON and msgpack frames alike; a
    regular trade, an odd lot, a Form T trade and tape C's bunched trade ("B", an average price
    on tapes A and B only) are kept. They all used to make bars: a block at the day's average
    price could set the minute's high or the session's close."""
    conditions = {
        1: (["@"], "A"), 2: (["@", "I"], "C"), 3: (["@", "F", "T"], "C"), 4: (["B"], "C"),
        5: (["B"], "A"), 6: (["P"], "C"), 7: (["Z"], "B"), 8: (["7"], "C"), 9: (["M"], "A"),
        10: (["W"], None), 11: (["U"], "C"),
    }  # fmt: skip
    elements = [
        {"T": "t", "S": "AAPL", "i": i, "p": 100.0 + i, "s": 10, "t": "2021-02-22T15:51:44Z",
         "c": c, **({"z": z} if z else {})}
        for i, (c, z) in conditions.items()
    ]  # fmt: skip
    for frame in (msgspec.json.encode(elements), msgspec.msgpack.encode(elements)):
        decoded = decode_alpaca(frame, feed="a")
        assert decoded.batch.ticks.get_column("id").to_list() == ["1", "2", "3", "4"]
        rejected = decoded.batch.rejections
        assert {r.reason for r in rejected} == {"trade_condition"}
        assert [msgspec.json.decode(r.raw or "")["i"] for r in rejected] == [5, 6, 7, 8, 9, 10, 11]
    # The frame's decode (typed, the rejected trades taken out) and each element's agree, with a
    # bar among the trades too.
    bar = msgspec.json.decode(BAR)
    mixed = decode_alpaca(msgspec.json.encode([bar, *elements]), feed="a")
    alone = [decode_alpaca(msgspec.json.encode([e]), feed="a") for e in elements]
    assert mixed.batch.ticks.equals(pl.concat([d.batch.ticks for d in alone]))
    assert [r.reason for r in mixed.batch.rejections] == [
        r.reason for d in alone for r in d.batch.rejections
    ]
    assert mixed.batch.minute_bars.height == 1
    odd = '[{"T":"t","S":"X","p":1,"s":1,"t":"2021-02-22T15:51:44Z","c":"@"}]'
    assert [r.reason for r in decode_alpaca(odd, feed="a").batch.rejections] == ["bad_message"]
