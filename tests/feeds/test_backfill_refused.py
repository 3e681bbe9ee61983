"""A symbol the provider refuses as a symbol (its request alone answered 404 or 422, the others'
answered) is given up for the window at once, not owed, asked again or an error; a failure
(a 500, or every symbol refused) is still one; against local Alpaca- and Polygon-like stream
and REST servers, the owed windows in a real store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from monitor import logs
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.credentials import Secret
from monitor.feeds.owed import Owed
from monitor.feeds.rest import RestBackfill
from monitor.feeds.wire import Wire
from monitor.owed_backfills import OwedBackfills
from monitor.store import Store
from tests.feeds.fake_providers import FakeRest, FakeStream, ProviderName
from tests.feeds.test_backfill_losses import paths
from tests.feeds.test_backfill_owed import until_wire
from tests.feeds.test_websocket import ALPACA_TRADES, Clock, make_feed, running, until

UTC = dt.UTC
STOPPED = dt.datetime(2024, 7, 12, 14, 10, 30, tzinfo=UTC)  # data stopped (a restart's gap)
BACK = dt.datetime(2024, 7, 12, 14, 20, tzinfo=UTC)  # subscribed (a minute's start: no tail)
W1 = ("2024-07-12T14:09:00Z", "2024-07-12T14:19:59Z")  # the gap's window, as Alpaca is asked
W2 = ("2024-07-12T14:23:00Z", "2024-07-12T14:24:59Z")  # the next reconnect's, at 14:25:00
REFUSED = {"feed": "test", "reason": "refused"}


class Run:
    """A feed of AAPL and SPY back at 14:20 from a gap since 14:10:30, its owed windows in a
    store: what it queued, counted and said."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "store")
        self.owed = OwedBackfills(self.store, logs.get("test"))
        self.queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
        self.counters = Counters()
        self.clock = Clock(BACK)
        self.logged: list[MutableMapping[str, Any]] = []

    def feed(self, provider: ProviderName, url: str, rest: RestBackfill, **options: Any) -> Any:
        """The feed of `provider`'s stream at `url`, backfilling with `rest`."""
        secret = "SECRET" if provider == "alpaca" else None
        return make_feed(
            provider, url, self.queue, self.counters, secret=secret, clock=self.clock, rest=rest,
            gap_since=STOPPED, owe=partial(self.owed.owe, "test"),
            settle=partial(self.owed.settle, "test"), **options,
        )  # fmt: skip

    def said(self, event: str) -> list[MutableMapping[str, Any]]:
        """The log lines of `event`, in order."""
        return [e for e in self.logged if e["event"] == event]


@asynccontextmanager
async def servers(
    provider: ProviderName,
) -> AsyncIterator[tuple[FakeStream, FakeRest, RestBackfill]]:
    """A local stream and REST API of `provider`, and a REST client of it (Alpaca's asking
    100 symbols a request, as configured by default)."""
    secret = Secret("SECRET") if provider == "alpaca" else None
    async with (
        FakeStream(provider) as fake,
        FakeRest() as api,
        RestBackfill(provider, api.url, key=Secret("KEY"), secret=secret) as rest,
    ):
        yield fake, api, rest


def on_disk(items: list[FeedBatch | Wire]) -> list[tuple[str, int]]:
    """The symbols and bar counts of the batches queued; the settle marker acknowledged, as
    the engine loop does once they are on disk."""
    marker = items[-1]
    assert isinstance(marker, Wire) and marker.ack is not None
    marker.ack()
    bars = [item.minute_bars for item in items if isinstance(item, FeedBatch)]
    counts: dict[str, int] = {}
    for frame in bars:
        for symbol in frame.get_column("symbol").to_list():
            counts[symbol] = counts.get(symbol, 0) + 1
    return sorted(counts.items())


def alpaca_asked(api: FakeRest) -> list[tuple[str, str, str]]:
    """(symbols, start, end) of each request Alpaca's REST API saw, in order."""
    return [(q["symbols"], q["start"], q["end"]) for _, q, _ in api.requests]


async def test_a_symbol_the_provider_refuses_is_given_up_at_once_not_owed(tmp_path: Path) -> None:
    """Alpaca answers 404 for AAPL (a ticker it does not know), and so for the group of AAPL
    and SPY; asked one by one, SPY's bars come and AAPL's window is given up at once: counted
    (`refused`), said once with the provider's words, no backfill error (/healthz's), nothing
    owed in `backfills_owed.json`, not asked again in that backfill nor at the next reconnect
    (whose gap is asked for SPY alone, AAPL's window counted as given up). It used to be owed,
    asked for again and again, and /healthz degraded until it aged out, two sessions later."""
    run = Run(tmp_path)
    async with servers("alpaca") as (fake, api, rest):
        api.unknown_symbols["AAPL"] = 404
        feed = run.feed("alpaca", fake.url, rest, backfill_retry_s=0.05)
        with capture_logs() as run.logged:
            async with running(feed):
                assert on_disk(await until_wire(run.queue)) == [("SPY", 11)]
                assert feed.backfill_error is None
                assert run.store.load_owed_backfills() == {}
                await asyncio.sleep(0.2)  # (a failure's refill would have asked by now)
                assert len(api.requests) == 3
                await fake.push(ALPACA_TRADES)
                await asyncio.wait_for(run.queue.get(), 5)
                run.clock.now = dt.datetime(2024, 7, 12, 14, 25, tzinfo=UTC)
                await fake.drop()
                await fake.wait_connections(2)
                assert on_disk(await until_wire(run.queue)) == [("SPY", 2)]
                assert feed.backfill_error is None
                assert run.store.load_owed_backfills() == {}
    assert alpaca_asked(api) == [("AAPL,SPY", *W1), ("AAPL", *W1), ("SPY", *W1), ("SPY", *W2)]
    assert run.counters.get("backfill_given_up", **REFUSED) == 2
    assert run.said("backfill_failed") == []
    [given_up] = run.said("backfill_given_up")
    said = ("log_level", "reason", "failed", "symbols", "start", "end")
    assert {k: given_up[k] for k in said} == {
        "log_level": "warning",
        "reason": "the provider refuses the symbol (its request alone refused, the others'"
        " answered): not asked for again until the daemon restarts",
        "failed": 1,
        "symbols": "AAPL",
        "start": "2024-07-12T14:09:00+00:00",
        "end": "2024-07-12T14:20:00+00:00",
    }
    assert given_up["error"].startswith(f"alpaca REST: HTTP 404 for {api.url}/v2/stocks/bars")
    assert given_up["error"].endswith(': {"status":"NOT_FOUND","message":"ticker not found: AAPL"}')


async def test_polygon_says_the_refusal_in_its_words_with_the_key_masked(tmp_path: Path) -> None:
    """Polygon, asked symbol by symbol, answers 422 for AAPL and 200 for SPY: AAPL is given up
    at once, in one line naming it with Polygon's words and the URL asked (not its API key);
    SPY's bars come, nothing is owed and there is no backfill error."""
    run = Run(tmp_path)
    async with servers("polygon") as (fake, api, rest):
        api.unknown_symbols["AAPL"] = 422
        feed = run.feed("polygon", fake.url, rest)
        with capture_logs() as run.logged:
            async with running(feed):
                assert on_disk(await until_wire(run.queue)) == [("SPY", 11)]
                assert feed.backfill_error is None
                assert run.store.load_owed_backfills() == {}
    assert [path.split("/")[4] for path in paths(api)].count("AAPL") == 1
    assert run.counters.get("backfill_given_up", **REFUSED) == 1
    [given_up] = run.said("backfill_given_up")
    assert given_up["symbols"] == "AAPL"
    words = given_up["error"]
    assert words.startswith(f"polygon REST: HTTP 422 for {api.url}/v2/aggs/ticker/AAPL/range/")
    assert "KEY" not in words and words.endswith('"message":"ticker not found: AAPL"}')


async def test_a_symbol_whose_request_fails_with_a_500_is_still_owed_and_asked_again(
    tmp_path: Path,
) -> None:
    """Polygon answers AAPL's requests with a 500 (its servers, not the symbol): AAPL's window
    is owed in `backfills_owed.json`, a backfill error (/healthz degraded), asked for again
    while the connection stays up, and nothing is given up as refused; SPY's bars come."""
    run = Run(tmp_path)
    async with servers("polygon") as (fake, api, rest):
        api.fail_symbols["AAPL"] = -1
        feed = run.feed("polygon", fake.url, rest, backfill_attempts=1, backfill_retry_s=0.05)
        with capture_logs() as run.logged:
            async with running(feed):
                assert on_disk(await until_wire(run.queue)) == [("SPY", 11)]
                assert feed.backfill_error is not None and "HTTP 500" in feed.backfill_error
                window = {"start": "2024-07-12T14:09:00+00:00", "end": "2024-07-12T14:20:00+00:00"}
                owes = {"test": {"windows": [{**window, "symbols": ["AAPL"]}]}}
                assert run.store.load_owed_backfills() == owes
                await until(lambda: [p.split("/")[4] for p in paths(api)].count("AAPL") >= 2)
    assert run.counters.get("backfill_given_up", **REFUSED) == 0
    assert run.said("backfill_given_up") == []
    assert run.said("backfill_failed")[0]["symbols"] == "AAPL"


async def test_every_symbol_refused_is_a_failure_not_symbols_given_up(tmp_path: Path) -> None:
    """Polygon answers 404 for every symbol (a wrong `rest_url` answers so): the provider
    refuses the request, not the symbols, so nothing is given up as refused; the window is
    owed for both, and a backfill error (/healthz degraded) says the provider's answer."""
    run = Run(tmp_path)
    async with servers("polygon") as (fake, api, rest):
        api.unknown_symbols.update(AAPL=404, SPY=404)
        feed = run.feed("polygon", fake.url, rest, backfill_attempts=1, backfill_retry_s=3600.0)
        async with running(feed):
            assert on_disk(await until_wire(run.queue)) == []
            assert feed.backfill_error is not None and "HTTP 404" in feed.backfill_error
            window = {"start": "2024-07-12T14:09:00+00:00", "end": "2024-07-12T14:20:00+00:00"}
            owes = {"test": {"windows": [{**window, "symbols": ["AAPL", "SPY"]}]}}
            assert run.store.load_owed_backfills() == owes
    assert run.counters.get("backfill_given_up", **REFUSED) == 0


async def test_a_symbol_refused_in_a_request_of_its_own_is_given_up_if_another_is_answered(
    tmp_path: Path,
) -> None:
    """A start owes AAPL's window from 14:00 (failed before: an earlier version owed a refused
    symbol's windows), so AAPL is asked alone from 14:00 and SPY alone for the gap: Alpaca's
    404 for AAPL, SPY's answered in the same backfill, gives AAPL up (once, not asked again),
    nothing owed and no backfill error (/healthz's), where it used to fail again."""
    run = Run(tmp_path)
    run.owed.owe("test", Owed(dt.datetime(2024, 7, 12, 14, tzinfo=UTC), STOPPED, ("AAPL",)))
    run.owed = OwedBackfills(run.store, logs.get("test"))  # (a restart)
    _, windows = run.owed.take("test")
    async with servers("alpaca") as (fake, api, rest):
        api.unknown_symbols["AAPL"] = 404
        feed = run.feed("alpaca", fake.url, rest, owed=windows, backfill_attempts=2)
        with capture_logs() as run.logged:
            async with running(feed):
                assert on_disk(await until_wire(run.queue)) == [("SPY", 11)]
                assert feed.backfill_error is None
                assert run.store.load_owed_backfills() == {}
    # (AAPL's windows merged, 14:00 to 14:20, asked once: refused alone, not asked again)
    assert alpaca_asked(api) == [("AAPL", "2024-07-12T14:00:00Z", W1[1]), ("SPY", *W1)]
    assert run.counters.get("backfill_given_up", **REFUSED) == 1
    assert [e["symbols"] for e in run.said("backfill_given_up")] == ["AAPL"]
    assert run.said("backfill_failed") == []


async def test_a_window_that_failed_for_a_symbol_then_refused_is_given_up_with_it(
    tmp_path: Path,
) -> None:
    """A start owes AAPL's window of 13:00; Polygon answers it with a 500, then refuses AAPL
    (404) in the gap's backfill, SPY's answered: AAPL is refused, so its 13:00 window is given
    up with it (counted, not owed, no backfill error), not asked for again and again."""
    run = Run(tmp_path)
    old = Owed(
        dt.datetime(2024, 7, 12, 13, tzinfo=UTC), dt.datetime(2024, 7, 12, 13, 5, tzinfo=UTC)
    )
    run.owed.owe("test", Owed(old.start, old.end, ("AAPL",)))
    run.owed = OwedBackfills(run.store, logs.get("test"))  # (a restart)
    _, windows = run.owed.take("test")
    async with servers("polygon") as (fake, api, rest):
        api.fail_symbols["AAPL"] = 1
        api.unknown_symbols["AAPL"] = 404
        feed = run.feed("polygon", fake.url, rest, owed=windows, backfill_attempts=1)
        with capture_logs() as run.logged:
            async with running(feed):
                assert on_disk(await until_wire(run.queue)) == [("SPY", 11)]
                assert feed.backfill_error is None
                assert run.store.load_owed_backfills() == {}
    firsts = [path.split("/")[4] for path, query, _ in api.requests if "cursor" not in query]
    assert sorted(firsts) == ["AAPL", "AAPL", "SPY"]  # (13:00 and the gap; SPY's pages not counted)
    assert run.counters.get("backfill_given_up", **REFUSED) == 2
    assert [e["start"] for e in run.said("backfill_given_up")] == ["2024-07-12T14:09:00+00:00"]
