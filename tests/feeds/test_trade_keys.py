"""A provider's trade id is unique per symbol and reporting venue only: the duplicate key says
where the trade was reported, so two venues' trades with one id are two trades, and a copy
of one trade, redelivered, is still a duplicate."""

from __future__ import annotations

import datetime as dt

import exchange_calendars as xc

from monitor.core.bars import BarBook
from monitor.core.sessions import Sessions
from monitor.feeds.alpaca import decode_alpaca
from monitor.feeds.polygon import decode_polygon

SESSIONS = Sessions(xc.get_calendar("XNYS", start="2025-07-01", end="2025-07-31"))
T_MS = int(dt.datetime(2025, 7, 2, 14, 0, 5, tzinfo=dt.UTC).timestamp() * 1000)


def _closed_minute(book: BarBook) -> tuple[float, float]:
    closed = book.advance(dt.datetime(2025, 7, 2, 14, 1, 5, tzinfo=dt.UTC))
    row = closed.minute.row(0, named=True)
    return row["close"], row["volume"]


def test_polygon_trades_of_two_exchanges_sharing_an_id_are_both_kept() -> None:
    """NYSE (x 10) and Nasdaq (x 12) trades of X with the same id `1001`, and a TRF's (x 4)
    with it too: three trades in the bar; the first sent again is a duplicate. Before, the
    key was the id alone and the second and third were dropped as duplicates."""
    frame = (
        f'[{{"ev":"T","sym":"X","x":10,"i":"1001","p":10.0,"s":100,"t":{T_MS}}},'
        f'{{"ev":"T","sym":"X","x":12,"i":"1001","p":10.05,"s":300,"t":{T_MS + 7}}},'
        f'{{"ev":"T","sym":"X","x":4,"trfi":202,"i":"1001","p":10.02,"s":50,"t":{T_MS + 9}}}]'
    )
    book = BarBook(SESSIONS)
    assert book.ingest_ticks(decode_polygon(frame, feed="p").batch.ticks) == []
    again = decode_polygon(frame.split("},")[0] + "}]", feed="p").batch.ticks
    assert [r.reason for r in book.ingest_ticks(again)] == ["duplicate"]
    assert _closed_minute(book) == (10.02, 450.0)


def test_alpaca_trades_of_two_exchanges_sharing_an_id_are_both_kept() -> None:
    """The same for Alpaca's `x` letters: exchanges D and K, id 628."""
    stamp = "2025-07-02T14:00:05.1"
    frame = (
        f'[{{"T":"t","S":"X","i":628,"x":"D","p":10.0,"s":100,"t":"{stamp}Z"}},'
        f'{{"T":"t","S":"X","i":628,"x":"K","p":10.05,"s":300,"t":"{stamp}5Z"}}]'
    )
    book = BarBook(SESSIONS)
    assert book.ingest_ticks(decode_alpaca(frame, feed="a").batch.ticks) == []
    again = decode_alpaca(frame, feed="a").batch.ticks
    assert [r.reason for r in book.ingest_ticks(again)] == ["duplicate", "duplicate"]
    assert _closed_minute(book) == (10.05, 400.0)


def test_alpaca_trade_ids_name_the_exchange_in_a_frame_mixing_trades_and_bars() -> None:
    """A trade in a frame that also carries a bar (or a control, a cancel) gets the key of a
    trade in a frame of trades only, "V:7": before, such a frame's trades kept the bare id,
    so the same trade redelivered in another frame's shape was taken twice, and a cancel
    (which names "exchange:id") could not find it."""
    trade = '{"T":"t","S":"X","i":7,"x":"V","p":10.0,"s":100,"t":"2025-07-02T14:00:05Z"}'
    bar = '{"T":"b","S":"Y","o":1,"h":1,"l":1,"c":1,"v":1,"t":"2025-07-02T14:00:00Z"}'
    alone = decode_alpaca(f"[{trade}]", feed="a").batch.ticks
    mixed = decode_alpaca(f"[{trade},{bar}]", feed="a").batch.ticks
    assert mixed.get_column("id").to_list() == alone.get_column("id").to_list() == ["V:7"]
    book = BarBook(SESSIONS)
    assert book.ingest_ticks(mixed) == []
    assert [r.reason for r in book.ingest_ticks(alone)] == ["duplicate"]
