"""The generic JSON decoder: every shape decodes, every kind of bad input becomes a Rejection."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.core.model import Rejection
from monitor.feeds.generic import RAW_LIMIT, REASONS, FieldMap, decode_generic
from monitor.feeds.provider import is_symbol

UTC = dt.UTC
T = dt.datetime(2024, 5, 29, 16, 26, 40, tzinfo=UTC)  # 1717000000000 ms
T_MS = 1_717_000_000_000


def tick_row(
    symbol: str = "ACME",
    ts: dt.datetime = T,
    price: float = 10.5,
    size: float = 100.0,
    id: str | None = None,
) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "price": price, "size": size, "id": id}


def bar_row(
    key: str, when: object, o: float = 10, h: float = 12, lo: float = 9, c: float = 11
) -> dict[str, Any]:
    return {"symbol": "ACME", key: when, "open": o, "high": h, "low": lo, "close": c, "volume": 5.0}


MINUTE_BAR = b'{"symbol":"ACME","timeframe":"1m","start":1717000000000,"open":10,"high":12,"low":9,"close":11,"volume":5}'  # noqa: E501
DAILY_BAR = b'{"symbol":"ACME","timeframe":"1d","session":"2024-05-29","open":10,"high":12,"low":9,"close":11,"volume":5}'  # noqa: E501

DECODED = [
    ("tick object", b'{"symbol":"ACME","ts":1717000000000,"price":10.5,"size":100}', [tick_row()]),
    (
        "tick array, int and string ids",
        b'[{"symbol":"ACME","ts":1717000000000,"price":10.5,"size":100,"id":7},'
        b'{"symbol":"XYZ","ts":1717000000001,"price":2,"size":0,"id":"t-8"}]',
        [
            tick_row(id="7"),
            tick_row("XYZ", T + dt.timedelta(milliseconds=1), 2.0, 0.0, "t-8"),
        ],
    ),
    (
        "float ms",
        b'{"symbol":"ACME","ts":1717000000000.5,"price":10.5,"size":100}',
        [tick_row(ts=T + dt.timedelta(microseconds=500))],
    ),
    ("no size", b'{"symbol":"ACME","ts":1717000000000,"price":10.5}', [tick_row(size=0.0)]),
    (
        "iso Z",
        b'{"symbol":"ACME","ts":"2024-05-29T16:26:40Z","price":10.5,"size":100}',
        [tick_row()],
    ),
    (
        "iso offset",
        b'{"symbol":"ACME","ts":"2024-05-29T18:26:40.25+02:00","price":10.5,"size":100}',
        [tick_row(ts=T + dt.timedelta(milliseconds=250))],
    ),
    (
        "iso naive is UTC",
        b'{"symbol":"ACME","ts":"2024-05-29T16:26:40","price":10.5,"size":100}',
        [tick_row()],
    ),
    (
        "null id",
        b'{"symbol":"ACME","ts":1717000000000,"price":10.5,"size":100,"id":null}',
        [tick_row()],
    ),
    ("empty array", b"[]", []),
]


@pytest.mark.parametrize(("payload", "rows"), [c[1:] for c in DECODED], ids=[c[0] for c in DECODED])
def test_tick_shapes_decode_to_tick_rows(payload: bytes, rows: list[dict[str, Any]]) -> None:
    """Each tick shape decodes to exactly these rows and nothing else."""
    batch = decode_generic(payload, feed="f")
    assert (batch.feed, batch.ticks.to_dicts(), batch.rejections) == ("f", rows, [])
    assert (batch.minute_bars.height, batch.daily_bars.height) == (0, 0)


def test_bars_and_ticks_in_one_array_land_in_their_frames() -> None:
    """A mixed array fills the tick, minute and daily frames and rejects only the bad element."""
    payload = (
        b"["
        + MINUTE_BAR
        + b","
        + DAILY_BAR
        + b',{"symbol":"ACME","ts":1717000000000,"price":10.5,"size":100},"x"]'
    )
    batch = decode_generic(payload, feed="f")
    assert batch.ticks.to_dicts() == [tick_row()]
    assert batch.minute_bars.to_dicts() == [bar_row("start", T)]
    assert batch.daily_bars.to_dicts() == [bar_row("session", dt.date(2024, 5, 29))]
    assert batch.rejections == [Rejection("bad_message", None, '"x"')]


@pytest.mark.parametrize(
    ("fields", "payload", "rows"),
    [
        (
            FieldMap(symbol="S", price="p", size="s", ts="t", id="i"),
            b'[{"S":"ACME","t":1717000000000,"p":10.5,"s":100,"i":3}]',
            [tick_row(id="3")],
        ),
        (
            FieldMap(ts_unit="s"),
            b'{"symbol":"ACME","ts":1717000000,"price":10.5,"size":100}',
            [tick_row()],
        ),
        (
            FieldMap(ts_unit="s"),
            b'{"symbol":"ACME","ts":1717000000.5,"price":10.5,"size":100}',
            [tick_row(ts=T + dt.timedelta(milliseconds=500))],
        ),
        (
            FieldMap(ts_unit="ns"),
            b'{"symbol":"ACME","ts":1717000000000001999,"price":10.5,"size":100}',
            [tick_row(ts=T + dt.timedelta(microseconds=1))],
        ),
        (
            FieldMap(ts_unit="iso", ts="time"),
            b'{"symbol":"ACME","time":"2024-05-29T16:26:40+00:00","price":10.5,"size":100}',
            [tick_row()],
        ),
    ],
    ids=["renamed", "seconds", "float seconds", "nanoseconds", "iso"],
)
def test_field_maps_read_other_shapes(fields: FieldMap, payload: bytes, rows: list[Any]) -> None:
    """A FieldMap renames keys and sets the unit of numeric timestamps."""
    batch = decode_generic(payload, feed="f", mapping=fields)
    assert (batch.ticks.to_dicts(), batch.rejections) == (rows, [])


def el(**fields: object) -> bytes:
    base: dict[str, object] = {"symbol": "ACME", "ts": T_MS, "price": 10.5, "size": 100}
    base.update(fields)
    return msgspec.json.encode({k: v for k, v in base.items() if v is not DROP})


def bar(**fields: object) -> bytes:
    base = msgspec.json.decode(MINUTE_BAR)
    base.update(fields)
    return msgspec.json.encode({k: v for k, v in base.items() if v is not DROP})


DROP = object()

REJECTED = [
    ("not an object", b"5", "bad_message"),
    ("nested array", b"[[1]]", "bad_message"),
    ("neither tick nor bar", b'{"symbol":"ACME"}', "missing_field"),
    ("no ts", el(ts=DROP), "missing_field"),
    ("no symbol", el(symbol=DROP), "missing_field"),
    ("empty symbol", el(symbol=""), "bad_message"),
    ("blank symbol", el(symbol=" "), "bad_message"),
    ("symbol with a space", el(symbol="A A"), "bad_message"),
    (
        "symbol of a lone surrogate",
        b'{"symbol":"\\ud800","ts":1717000000000,"price":10.5}',
        "bad_message",
    ),
    ("symbol too long", el(symbol="X" * 33), "bad_message"),
    (
        "price of 401 digits",
        b'{"symbol":"ACME","ts":1717000000000,"price":1' + b"0" * 400 + b"}",
        "bad_price",
    ),
    ("price of 1e308", el(price=1e308), "bad_price"),
    ("size of 1e308", el(size=1e308), "bad_size"),
    ("ts before 1900", el(ts=-100_000_000_000_000), "bad_timestamp"),
    ("ts in seconds, read as ms (1970)", el(ts=1_721_138_400), "bad_timestamp"),
    ("bar start in seconds", bar(start=1_721_138_400), "bad_timestamp"),
    ("ts in year 0 after its offset", el(ts="0001-01-01T00:00:00+01:00"), "bad_timestamp"),
    ("ts past 9999 after its offset", el(ts="9999-12-31T23:59:59-01:00"), "bad_timestamp"),
    ("numeric symbol", el(symbol=5), "bad_message"),
    ("string price", el(price="10.5"), "bad_message"),
    ("boolean price", el(price=True), "bad_message"),
    ("null size", el(size=None), "bad_message"),
    ("object id", el(id={"a": 1}), "bad_message"),
    ("list ts", el(ts=[1]), "bad_message"),
    ("zero price", el(price=0), "bad_price"),
    ("negative price", el(price=-1.5), "bad_price"),
    ("negative size", el(size=-1), "bad_size"),
    ("unparseable iso", el(ts="yesterday"), "bad_timestamp"),
    ("ts out of range", el(ts=10**18), "bad_timestamp"),
    ("bar timeframe", bar(timeframe="5m"), "bad_timeframe"),
    ("bar without start", bar(start=DROP), "missing_field"),
    ("bar without high", bar(high=DROP), "missing_field"),
    ("bar string open", bar(open="1"), "bad_message"),
    ("bar low above high", bar(low=13), "bad_bar"),
    ("bar open above high", bar(open=12.5), "bad_bar"),
    ("bar close below low", bar(close=8), "bad_bar"),
    ("bar zero low", bar(low=0), "bad_price"),
    ("bar negative volume", bar(volume=-5), "bad_size"),
    (
        "daily bar bad session",
        bar(timeframe="1d", start=DROP, session="2024-5-29"),
        "bad_timestamp",
    ),
    ("daily bar without session or start", bar(timeframe="1d", start=DROP), "missing_field"),
    ("daily bar of a bad start", bar(timeframe="1d", start="2024-07-16T25:00"), "bad_timestamp"),
]


@pytest.mark.parametrize(
    ("payload", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_bad_elements_become_rejections_and_the_rest_still_decodes(
    payload: bytes, reason: str
) -> None:
    """A bad element is rejected with reason, symbol and raw JSON; its good neighbour decodes."""
    good = b'{"symbol":"GOOD","ts":1717000000000,"price":10.5,"size":100}'
    batch = decode_generic(b"[" + payload + b"," + good + b"]", feed="f")
    element = json.loads(payload)
    symbol = element.get("symbol") if isinstance(element, dict) else None
    raw = payload.decode()[:RAW_LIMIT]
    expected = Rejection(reason, symbol if is_symbol(symbol) else None, raw)
    assert (batch.ticks.to_dicts(), batch.rejections) == ([tick_row("GOOD")], [expected])
    assert (batch.minute_bars.height, batch.daily_bars.height) == (0, 0)


def test_numeric_ts_with_iso_unit_is_rejected() -> None:
    """With ts_unit="iso" a number is not a timestamp."""
    batch = decode_generic(el(), feed="f", mapping=FieldMap(ts_unit="iso"))
    assert (batch.size(), [r.reason for r in batch.rejections]) == (0, ["bad_timestamp"])


def test_malformed_json_is_one_rejection_with_the_first_200_bytes() -> None:
    """A payload that is not JSON is one malformed_json rejection carrying its first 200 bytes."""
    payload = b'[{"symbol":"ACME",' + b"x" * 300
    batch = decode_generic(payload, feed="f")
    assert batch.size() == 0
    assert batch.rejections == [Rejection("malformed_json", None, payload[:200].decode())]


def expected_elements(payload: bytes) -> int | None:
    """How many elements the payload holds, or None when it is not JSON."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    return len(doc) if isinstance(doc, list) else 1


def assert_accounted(payload: bytes) -> None:
    batch = decode_generic(payload, feed="f")
    count = expected_elements(payload)
    reasons = {r.reason for r in batch.rejections}
    assert reasons <= set(REASONS)
    if count is None:
        assert (batch.size(), [r.reason for r in batch.rejections]) == (0, ["malformed_json"])
    else:
        assert batch.size() + len(batch.rejections) == count


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["ACME", "", "1m", "1d", "5m", "2024-05-29", "2024-05-29T16:26:40Z", "x"]),
    st.text(max_size=30),
)
wire_objects = st.dictionaries(
    st.sampled_from(
        [
            *("symbol", "ts", "price", "size", "id", "timeframe", "start", "session"),
            *("open", "high", "low", "close", "volume"),
        ]
    ),
    field_values,
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    """Any bytes decode to a batch whose rows and rejections account for every element."""
    assert_accounted(payload)


@given(json_values)
def test_arbitrary_json_never_raises(value: object) -> None:
    """Any JSON value decodes to a batch whose rows and rejections account for every element."""
    assert_accounted(msgspec.json.encode(value))


@given(st.lists(wire_objects, max_size=10) | wire_objects)
def test_tick_and_bar_like_objects_are_each_decoded_or_rejected(value: object) -> None:
    """Objects with tick and bar keys of any value are each either a row or a rejection."""
    assert_accounted(msgspec.json.encode(value))


def test_a_bar_with_a_null_volume_decodes_as_one_without_volume() -> None:
    """`"volume": null` (an index's bar, a file of closes sent by feed-replay) is a bar with
    volume 0, as one without the key: not a rejected message."""
    null = decode_generic(DAILY_BAR.replace(b'"volume":5', b'"volume":null'), feed="f")
    missing = decode_generic(DAILY_BAR.replace(b',"volume":5', b""), feed="f")
    assert null.rejections == missing.rejections == []
    assert null.daily_bars.to_dicts() == missing.daily_bars.to_dicts()
    assert null.daily_bars.get_column("volume").to_list() == [0.0]


@pytest.mark.parametrize(
    "messages",
    [
        [b'{"symbol":"AAA","ts":1717000000000,"price":1.0},{"symbol":"BBB","ts":1,"price":2.0}'],
        [b'{"symbol":"AAA","ts":1717000000000,"price":1.0,"x":[1', b'{"y":2}]}'],
        [
            b'{"symbol":"AAA","ts":1717000000000,"price":1.0},{"symbol":"BBB","ts":1,"price":2.0}',
            b'[{"symbol":"CCC","ts":1717000000000,"price":3.0,"size":100}]',
        ],
        [b'[{"symbol":"AAA","ts":1717000000000,"price":1.0,"x":[1]', b"[2]}]"],
    ],
    ids=[
        "two objects unbracketed",
        "one object in two halves",
        "beside an array message",
        "an array in two halves",
    ],
)
def test_a_message_malformed_alone_is_malformed_in_a_batch(messages: list[bytes]) -> None:
    """Messages decoded together (a micro-batch, joined into one array) give what each gives
    alone: a message that is no JSON by itself is `malformed_json`, though the join would
    parse, and the good messages beside it are taken. (Beside a message that is an array,
    the join of two unbracketed objects used to be taken: two ticks of a malformed message.)"""
    from monitor.feeds.generic import decode_generic_many

    good = b'{"symbol":"GOOD","ts":1717000000000,"price":10.5,"size":100}'
    if all(m.startswith(b"[") for m in messages):  # (a feed of arrays)
        good = b"[" + good + b"]"
    batch = decode_generic_many([good, *messages], feed="f")
    alone = [decode_generic(m, feed="f") for m in [good, *messages]]
    assert batch.ticks.get_column("symbol").to_list() in (["GOOD"], ["GOOD", "CCC"])
    assert batch.ticks.to_dicts() == [row for b in alone for row in b.ticks.to_dicts()]
    assert [r.reason for r in batch.rejections] == [r.reason for b in alone for r in b.rejections]
    assert {r.reason for r in batch.rejections} == {"malformed_json"}


def test_a_daily_bar_may_name_its_day_by_start() -> None:
    """Issue #3's bar is `"start" or "session"`: a daily bar without `session` takes its day
    from `start`: a date as written, a naive time's own date, an instant's New York date
    (Alpaca's and Polygon's day bars start at New York's midnight, 04:00 UTC in summer).
    Before, each was rejected as missing_field."""
    ms = 1721102400000  # 2024-07-16T04:00:00Z, New York's midnight
    utc = 1721088000000  # 2024-07-16T00:00:00Z: a provider dating its bars in UTC
    close = "2024-07-16T20:00:00Z"  # (a bar stamped at the close)
    starts = ("2024-07-16", "2024-07-16T00:00:00", "2024-07-16T00:00:00-04:00", ms, utc, close)
    for start in (*starts, "2024-07-16T00:00:00Z"):
        batch = decode_generic(bar(timeframe="1d", start=start), feed="f")
        assert batch.rejections == [], start
        assert batch.daily_bars.get_column("session").to_list() == [dt.date(2024, 7, 16)], start
