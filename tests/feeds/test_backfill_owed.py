"""What a WebSocket feed's backfill asks for once one failed: per symbol, the windows it lacks
(not every symbol from the oldest failure), and nothing older than the engine keeps (given up:
counted, said once, no longer an error), live and across a restart, against fake Alpaca
servers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from monitor import logs
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.credentials import Secret
from monitor.feeds.owed import Owed
from monitor.feeds.websocket import RestBackfill, WebSocketFeed
from monitor.feeds.wire import Wire
from monitor.owed_backfills import OwedBackfills
from monitor.store import Store
from tests.feeds.fake_providers import FakeRest, FakeStream
from tests.feeds.test_websocket import ALPACA_TRADES, Clock, make_feed, running

UTC = dt.UTC
STOPPED = dt.datetime(2024, 7, 12, 14, 10, 30, tzinfo=UTC)  # data stopped (a restart's gap)
FAILED_AT = dt.datetime(2024, 7, 12, 14, 20, 20, tzinfo=UTC)  # its backfill fails then
W1 = ("2024-07-12T14:09:00Z", "2024-07-12T14:19:59Z")  # its window, as asked
W2 = ("2024-07-12T14:24:00Z", "2024-07-12T14:24:59Z")  # the next reconnect's gap, at 14:25:20


def asked(api: FakeRest) -> list[tuple[str, str, str]]:
    """(symbols, start, end) of each request the REST server saw, sorted."""
    return sorted((q["symbols"], q["start"], q["end"]) for _, q, _ in api.requests)


async def until_wire(queue: asyncio.Queue[FeedBatch | Wire]) -> list[FeedBatch | Wire]:
    """The items queued up to the next backfill's end (its settle marker)."""
    items: list[FeedBatch | Wire] = []
    while not any(isinstance(item, Wire) for item in items):
        items.append(await asyncio.wait_for(queue.get(), 5))
    return items


async def until_failed(feed: WebSocketFeed, queue: asyncio.Queue[FeedBatch | Wire]) -> None:
    """Once the feed's backfill failed (its error for /healthz), what it queued dropped."""
    async with asyncio.timeout(5):
        while feed.backfill_error is None:  # noqa: ASYNC110 - set by the backfill's task
            await asyncio.sleep(0.01)
    while not queue.empty():
        queue.get_nowait()


@contextlib.asynccontextmanager
async def alpaca_servers() -> AsyncIterator[tuple[FakeStream, FakeRest, RestBackfill]]:
    """A local Alpaca stream and REST API, and a REST client of it asking a symbol a request
    (so that the requests say which symbol was asked for which window)."""
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill(
            "alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET"), symbols_per_request=1
        ) as rest,
    ):
        yield fake, api, rest


def feed_of(url: str, rest: RestBackfill, queue: Any, clock: Clock, **options: Any) -> Any:
    """An Alpaca feed of AAPL and SPY, its settle markers queued (`settle`)."""
    options = {"owe": lambda _: None, "settle": lambda _: None, **options}
    return make_feed("alpaca", url, queue, Counters(), clock=clock, rest=rest, **options)


async def test_a_reconnect_asks_for_a_failed_window_of_its_symbols_and_the_gap_of_all() -> None:
    """AAPL's backfill of the window since 14:09 fails (SPY's comes); at the next reconnect,
    at 14:25, AAPL is asked for that window and for the new gap, SPY for the new gap only:
    not every symbol from 14:09 (at 2,000 symbols, a REST call per group for the hour)."""
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    clock = Clock(FAILED_AT)
    async with alpaca_servers() as (fake, api, rest):
        api.fail_symbols["AAPL"] = -1
        feed = feed_of(
            fake.url, rest, queue, clock, gap_since=STOPPED, backfill_attempts=1,
            backfill_retry_s=3600.0,
        )  # fmt: skip
        async with running(feed):
            await until_failed(feed, queue)
            assert asked(api) == [("AAPL", *W1), ("SPY", *W1)]
            api.fail_symbols.clear()
            api.requests.clear()
            await fake.push(ALPACA_TRADES)
            await asyncio.wait_for(queue.get(), 5)
            clock.now = dt.datetime(2024, 7, 12, 14, 25, 20, tzinfo=UTC)
            await fake.drop()
            await fake.wait_connections(2)
            items = await until_wire(queue)
            assert feed.backfill_error is None
    assert asked(api) == [("AAPL", *W1), ("AAPL", *W2), ("SPY", *W2)]
    bars = [b.minute_bars for b in items if isinstance(b, FeedBatch)]
    assert sum(frame.height for frame in bars) == 11 + 2


async def test_a_failed_window_older_than_the_engine_keeps_is_given_up() -> None:
    """AAPL's window fails on Friday 12 July; asked for again while the connection stays up,
    on Tuesday 16 July, when the engine keeps minutes from Monday's open only: it is given up
    (counted by reason, said once with the symbol and window), not asked for, and no longer a
    backfill error (/healthz's); a reconnect later asks for its own gap only."""
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    clock = Clock(FAILED_AT)
    counters = Counters()
    settled: list[list[Owed]] = []
    monday_open = dt.datetime(2024, 7, 15, 13, 30, tzinfo=UTC)
    async with alpaca_servers() as (fake, api, rest):
        api.fail_symbols["AAPL"] = -1
        feed = make_feed(
            "alpaca", fake.url, queue, counters, clock=clock, rest=rest, gap_since=STOPPED,
            backfill_attempts=1, backfill_retry_s=0.2, owe=lambda _: None,
            settle=settled.append,
            keeps_from=lambda now: monday_open if now > monday_open else None,
        )  # fmt: skip
        with capture_logs() as logged:
            async with running(feed):
                await until_failed(feed, queue)
                api.requests.clear()
                clock.now = dt.datetime(2024, 7, 16, 14, 0, 20, tzinfo=UTC)
                async with asyncio.timeout(5):  # (the refill: given up, or asked for)
                    while feed.backfill_error is not None and not api.requests:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                assert api.requests == []
                assert feed.backfill_error is None
                await fake.drop()
                await fake.wait_connections(2)
                await until_wire(queue)
    assert asked(api) == [
        (symbol, "2024-07-16T13:59:00Z", "2024-07-16T13:59:59Z") for symbol in ("AAPL", "SPY")
    ]
    reason = {"feed": "test", "reason": "older_than_kept"}
    assert counters.get("backfill_given_up", **reason) == 1
    given_up = [e for e in logged if e["event"] == "backfill_given_up"]
    assert [(e["log_level"], e["symbols"], e["start"], e["end"]) for e in given_up] == [
        ("warning", "AAPL", "2024-07-12T14:09:00+00:00", "2024-07-12T14:20:00+00:00")
    ]
    # (no longer owed: settled at once, there being nothing to fetch; the markers queued
    # after the other backfills' bars settle the rest once the engine loop has them on disk)
    given_up_window = Owed(
        dt.datetime(2024, 7, 12, 14, 9, tzinfo=UTC), dt.datetime(2024, 7, 12, 14, 20, tzinfo=UTC),
        ("AAPL",),
    )  # fmt: skip
    assert settled == [[given_up_window]]


async def test_a_restart_fetches_what_each_symbol_owes_and_gives_up_what_is_too_old(
    tmp_path: Path,
) -> None:
    """AAPL's window failed, owed in the store with its symbol; the next start fetches AAPL
    over that window and every symbol from where the data taken up ends only. A window owed
    from a week before, older than the engine keeps, is given up at the first subscription
    and dropped from `backfills_owed.json` once the backfill is on disk."""
    store = Store(tmp_path / "store")
    owed = OwedBackfills(store, logs.get("test"))
    stale = Owed(
        dt.datetime(2024, 7, 5, 14, 0, tzinfo=UTC), dt.datetime(2024, 7, 5, 14, 5, tzinfo=UTC),
        ("SPY",),
    )  # fmt: skip
    window = Owed(
        dt.datetime(2024, 7, 12, 14, 9, tzinfo=UTC), dt.datetime(2024, 7, 12, 14, 20, tzinfo=UTC),
        ("AAPL",),
    )  # fmt: skip
    owed.owe("test", window)
    owed.owe("test", stale)
    saved = store.load_owed_backfills()["test"]
    assert isinstance(saved, dict) and [w["symbols"] for w in saved["windows"]] == [  # type: ignore[union-attr]
        ["SPY"],
        ["AAPL"],
    ]

    restarted = OwedBackfills(store, logs.get("test"))
    since, windows = restarted.take("test")
    assert since is None and sorted(windows, key=lambda w: w.start) == [stale, window]
    resumed = dt.datetime(2024, 7, 12, 14, 30, 10, tzinfo=UTC)  # (where the data ends)
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    clock = Clock(dt.datetime(2024, 7, 12, 14, 40, 20, tzinfo=UTC))
    counters = Counters()
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, counters, clock=clock, rest=rest, gap_since=resumed,
            owed=windows, owe=lambda o: restarted.owe("test", o),
            settle=lambda o: restarted.settle("test", o),
            keeps_from=lambda now: dt.datetime(2024, 7, 10, 13, 30, tzinfo=UTC),
        )  # fmt: skip
        async with running(feed):
            items = await until_wire(queue)
    gap = ("2024-07-12T14:29:00Z", "2024-07-12T14:39:59Z")
    assert asked(api) == [("AAPL", *W1), ("AAPL", *gap), ("SPY", *gap)]
    assert counters.get("backfill_given_up", feed="test", reason="older_than_kept") == 1
    marker = items[-1]
    assert isinstance(marker, Wire) and marker.ack is not None
    assert "test" in store.load_owed_backfills()  # (not on disk yet)
    marker.ack()
    # (what is left: the minute of the start, 14:40, whose trades before 14:40:20 are fetched
    # once it is over; the stop came before)
    tail = {"start": "2024-07-12T14:40:00+00:00", "end": "2024-07-12T14:41:00+00:00"}
    assert store.load_owed_backfills() == {
        "test": {"windows": [{**tail, "symbols": ["AAPL", "SPY"]}]}
    }
