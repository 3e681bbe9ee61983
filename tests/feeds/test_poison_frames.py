"""Frames that once made a provider's decoder raise (the WebSocket feed then dropped its
connection, and the REST backfill its window): each is now a counted rejection, and the good
trade beside the bad one is taken."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from monitor.feeds.alpaca import decode_alpaca
from monitor.feeds.finnhub import decode_finnhub
from monitor.feeds.polygon import decode_polygon
from monitor.feeds.provider import Decoded

T_MS = 1_721_138_400_000  # 2024-07-16 14:00 UTC
BIG = "1" + "0" * 400  # an integer no float holds


def finnhub(price: str, t_ms: int, symbol: str = "BBB") -> str:
    good = f'{{"s":"AAA","p":10.0,"t":{T_MS},"v":100}}'
    return f'{{"type":"trade","data":[{good},{{"s":"{symbol}","p":{price},"t":{t_ms},"v":1}}]}}'


def polygon(price: str, t_ms: int, symbol: str = "BBB") -> str:
    good = f'{{"ev":"T","sym":"AAA","p":10.0,"s":100,"t":{T_MS}}}'
    return f'[{good},{{"ev":"T","sym":"{symbol}","p":{price},"s":1,"t":{t_ms}}}]'


def alpaca(price: str, t_ms: int, symbol: str = "BBB") -> str:
    stamp = "2024-07-16T14:00:00Z" if t_ms == T_MS else "0001-01-01T00:00:00+01:00"
    good = '{"T":"t","S":"AAA","p":10.0,"s":100,"t":"2024-07-16T14:00:00Z","i":1}'
    return f'[{good},{{"T":"t","S":"{symbol}","p":{price},"s":1,"t":"{stamp}","i":2}}]'


PROVIDERS: dict[str, tuple[Callable[..., Decoded], Callable[..., str]]] = {
    "finnhub": (decode_finnhub, finnhub),
    "polygon": (decode_polygon, polygon),
    "alpaca": (decode_alpaca, alpaca),
}
CASES = {
    "a price of 401 digits": (lambda make: make(BIG, T_MS), "bad_price"),
    "a price of 1e308": (lambda make: make("1e308", T_MS), "bad_price"),
    "a time before 1900": (lambda make: make("5.0", -100_000_000_000_000), "bad_timestamp"),
    "a symbol with a space": (lambda make: make("5.0", T_MS, "B B"), "bad_message"),
}


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_trade_is_a_rejection_and_the_good_one_beside_it_is_taken(
    provider: str, case: str
) -> None:
    decode, make = PROVIDERS[provider]
    frame, reason = CASES[case]
    decoded = decode(frame(make), feed="f")
    assert decoded.batch.ticks.get_column("symbol").to_list() == ["AAA"]
    assert [r.reason for r in decoded.batch.rejections] == [reason]


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_a_frame_nested_too_deep_is_malformed(provider: str) -> None:
    decode, _ = PROVIDERS[provider]
    decoded = decode("[" * 5000 + "]" * 5000, feed="f")
    assert decoded.batch.size() == 0
    assert [r.reason for r in decoded.batch.rejections] == ["malformed_json"]
