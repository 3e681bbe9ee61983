"""The minute a WebSocket feed reconnects in, whole: its trades before the reconnect (in the gap)
are fetched over REST once the minute is over, and its bar is the provider's true one; against
local Alpaca- and Polygon-like stream and REST servers, the daemon on a simulated clock, real
Redis."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.clock import SimClock
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.feeds.owed import Owed
from monitor.feeds.wire import Wire
from tests.feeds.fake_providers import FakeRest, FakeStream, ProviderName, Trade, tape_bar
from tests.feeds.test_backfill_owed import alpaca_servers, asked, until_wire
from tests.feeds.test_websocket import ALPACA_TRADES, Clock, make_feed, running
from tests.test_service import daemon_running

UTC = dt.UTC
MINUTE = dt.datetime(2024, 7, 16, 19, 50, tzinfo=UTC)  # M, the minute of the reconnect


def at(second: float) -> dt.datetime:
    """`second` seconds after 19:50:00 (Tuesday 2024-07-16, regular hours)."""
    return MINUTE + dt.timedelta(seconds=second)


# AAA's tape in 19:50: two trades the stream sends before it drops (19:50:20), two in the gap
# (the high and the low of the minute, and most of its volume), one after the reconnect
BEFORE: list[Trade] = [(at(5), 10.0, 100.0), (at(15), 10.1, 100.0)]
GAP: list[Trade] = [(at(25), 10.8, 3000.0), (at(30), 9.6, 2000.0)]
AFTER: list[Trade] = [(at(45), 10.2, 100.0)]
NEXT: Trade = (at(61), 10.3, 100.0)  # (19:51's first)


def message(provider: ProviderName, n: int, trade: Trade) -> dict[str, Any]:
    """The stream's message of AAA's trade number `n`."""
    ts, price, size = trade
    if provider == "alpaca":
        stamp = ts.isoformat().replace("+00:00", "Z")
        return {"T": "t", "S": "AAA", "i": n, "x": "V", "p": price, "s": size, "t": stamp,
                "c": ["@"], "z": "C"}  # fmt: skip
    return {"ev": "T", "sym": "AAA", "x": 4, "i": str(n), "z": 3, "p": price, "s": size,
            "t": int(ts.timestamp() * 1000)}  # fmt: skip


def write_config(
    tmp: Path, prefix: str, provider: ProviderName, url: str, rest_url: str, engine: str = ""
) -> Path:
    """The daemon on one stream at `url` with its REST API at `rest_url` (and `engine`, lines
    of its [engine] section), no rules firing."""
    rules = tmp / "rules.toml"
    rules.write_text(
        '[[rules]]\nid = "spike"\nkind = "surge"\nsymbols = ["AAA"]\ntimeframe = "1m"\n'
        "window = 1\nmin_return = 0.5\n"
    )
    secret = 'secret_env = "MM_TEST_SECRET"\n' if provider == "alpaca" else ""
    path = tmp / "monitor.toml"
    path.write_text(
        f'[store]\npath = "{tmp / "store"}"\n'
        f'[[feeds]]\nname = "ws"\nkind = "websocket"\nprovider = "{provider}"\nurl = "{url}"\n'
        f'rest_url = "{rest_url}"\nsymbols = ["AAA"]\nkey_env = "MM_TEST_KEY"\n{secret}'
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{prefix}:alerts"\n'
        f'[rules]\nfile = "{rules}"\n[http]\nport = 0\n'
        f"[engine]\nbatch_max_age_ms = 20\nhold_cut_short = false\n{engine}"
    )
    path.chmod(0o600)
    return path


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def bar_of(minutes: pl.DataFrame) -> dict[str, float] | None:
    """AAA's bar of 19:50 among `minutes` (the engine's closed minute bars), if closed."""
    rows = minutes.filter((pl.col("symbol") == "AAA") & (pl.col("start") == MINUTE))
    if not rows.height:
        return None
    row = rows.row(0, named=True)
    return {"o": row["open"], "h": row["high"], "l": row["low"], "c": row["close"],
            "v": row["volume"]}  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("provider", ["alpaca", "polygon"])
async def test_the_minute_of_a_reconnect_closes_with_its_trades_from_the_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: ProviderName
) -> None:
    """AAA trades five times in 19:50; the stream drops at 19:50:20 and is back at 19:50:40,
    the two trades between (the minute's high and low, most of its volume) only in the REST
    API. The daemon's bar of 19:50, the first time it closes (what a 1m rule evaluates) and
    after, is the REST API's true bar, its volume counted once: its close is held past when
    it was due (19:51:02) while the stream is live, until the REST API is asked for 19:50,
    five seconds after its end. (Before, the backfill stopped at 19:50, and the bar closed
    without the gap's trades: high 10.2, low 10.0, volume 300.)"""
    truth = tape_bar([*BEFORE, *GAP, *AFTER])
    async with reconnected_in_the_minute(tmp_path, monkeypatch, provider) as (
        daemon,
        _,
        seen,
        clock,
    ):
        counters = daemon.counters
        behind = partial(counters.get, "close_clock_behind_seconds")
        await until(lambda: seen.closed() or behind() >= 1.5)
        clock.set(at(70))
        with contextlib.suppress(TimeoutError):
            await until(lambda: seen.closed() and seen.bars[-1] == truth, timeout_s=10)
        assert seen.bars[:1] == [truth]
        assert seen.bars == [truth]
        assert truth == {"o": 10.0, "h": 10.8, "l": 9.6, "c": 10.2, "v": 5300.0}
        # (no longer awaited, nor owed: its bars are on disk)
        store = daemon.store
        await until(lambda: not daemon.awaited and store.load_owed_backfills() == {})
        assert counters.get("backfill_failures", feed="ws") == 0


@pytest.mark.integration
async def test_a_minute_whose_rest_bar_is_late_closes_as_built_and_is_corrected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, the REST API slow to answer, `catch_up_hold_s` 1 s: the minute is held a
    second past when it was due, then closes as the stream built it; the REST bar, once in,
    replaces it (the true bar again: its volume not added to the stream's)."""
    truth = tape_bar([*BEFORE, *GAP, *AFTER])
    built = tape_bar([*BEFORE, *AFTER])
    held_1s = "catch_up_hold_s = 1\n"
    scene = reconnected_in_the_minute(tmp_path, monkeypatch, "alpaca", held_1s, slow=True)
    async with scene as (daemon, api, seen, clock):
        await until(seen.closed)
        assert seen.bars == [built]
        clock.set(at(70))
        await until(lambda: len(api.requests) == 2)  # (the gap's and the minute's)
        api.answering.set()
        await until(lambda: seen.closed() and seen.bars[-1] == truth)
        assert seen.bars == [built, truth]
        replaced = partial(daemon.counters.get, "bar_events", kind="bar_replaced")
        await until(lambda: replaced() >= 1)  # (counted as the step ends)
        assert replaced() == 1


class Seen:
    """AAA's bars of 19:50 the engine closed, each as it first was (`closed` looks)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.bars: list[dict[str, float]] = []

    def closed(self) -> bool:
        """Whether the bar is closed, noting it if it changed."""
        bar = bar_of(self.daemon.engine.minutes)
        if bar is not None and (not self.bars or self.bars[-1] != bar):
            self.bars.append(bar)
        return bool(self.bars)


@contextlib.asynccontextmanager
async def reconnected_in_the_minute(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    provider: ProviderName,
    engine: str = "",
    *,
    slow: bool = False,
) -> AsyncIterator[tuple[Any, FakeRest, Seen, SimClock]]:
    """The daemon on `provider`'s stream, AAA's 19:50 traded as said above (the stream lost
    from 19:50:20 to 19:50:40), the clock at 19:51:04: the minute's close is due (its end and
    the close delay, 2 s), the stream live (a trade of 19:51:01), its REST bar not yet (at
    19:51:05); `slow`: the REST API answers nothing until told (`answering`), once the gap's
    backfill is in."""
    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    prefix = f"mm-tail-{uuid.uuid4().hex[:8]}"
    clock = SimClock(at(-10))
    try:
        async with FakeStream(provider) as fake, FakeRest() as api:
            api.tape["AAA"] = [*BEFORE, *GAP, *AFTER, NEXT]
            conf = write_config(tmp_path, prefix, provider, fake.url, api.url, engine)
            async with daemon_running(conf, clock=clock) as daemon:
                counters = daemon.counters
                await asyncio.wait_for(fake.subscribed.wait(), 10)
                clock.set(at(20))
                await fake.push([message(provider, i, t) for i, t in enumerate(BEFORE)])
                await until(lambda: counters.get("ticks_in") == 2)
                clock.set(at(40))
                await fake.drop()
                await until(lambda: counters.get("feed_subscribes", feed="ws") == 2)
                await fake.push([message(provider, 9, AFTER[0])])
                await until(lambda: counters.get("ticks_in") == 3)
                # (the gap's backfill on disk: what is owed is the minute, every symbol)
                owed = {"start": MINUTE.isoformat(), "end": at(60).isoformat(), "symbols": ["AAA"]}
                tail = {"ws": {"windows": [owed]}}
                await until(lambda: daemon.store.load_owed_backfills() == tail)
                if slow:
                    api.answering.clear()
                clock.set(at(64))
                await fake.push([message(provider, 10, NEXT)])
                await until(lambda: counters.get("ticks_in") == 4)
                yield daemon, api, Seen(daemon), clock
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


TAIL = Owed(MINUTE, MINUTE + dt.timedelta(minutes=1), ("AAPL", "SPY"))  # (make_feed's symbols)
GAP_ASKED = [(s, "2024-07-16T19:49:00Z", "2024-07-16T19:49:59Z") for s in ("AAPL", "SPY")]
TAIL_ASKED = [(s, "2024-07-16T19:50:00Z", "2024-07-16T19:50:59Z") for s in ("AAPL", "SPY")]


class Hooks:
    """What a feed owed, settled and awaited (`await_minute`), in order."""

    def __init__(self) -> None:
        self.owed: list[Owed] = []
        self.settled: list[Owed] = []
        self.awaited: list[tuple[dt.datetime, bool]] = []

    def options(self) -> dict[str, Any]:
        return {
            "owe": self.owed.append,
            "settle": self.settled.extend,
            "await_minute": lambda minute, on: self.awaited.append((minute, on)),
        }


async def until_released(queue: asyncio.Queue[Any], hooks: Hooks) -> list[FeedBatch]:
    """The batches queued until the feed no longer awaits a minute, every marker acknowledged
    as the engine loop does once the step that took it in is on disk."""
    batches: list[FeedBatch] = []
    while not hooks.awaited or hooks.awaited[-1][1]:
        item = await asyncio.wait_for(queue.get(), 5)
        if isinstance(item, Wire):
            assert item.ack is not None
            item.ack()
        else:
            batches.append(item)
    return batches


async def test_the_tail_is_fetched_once_over_owed_until_on_disk_and_awaited_until_taken_in() -> (
    None
):
    """Back at 19:50:40 (data stopped at 19:50:15): the gap's backfill ends at 19:50; 19:50
    itself is owed (every symbol) and awaited from the subscription, asked of the REST API
    once it is over and five seconds more (19:51:05), its bars handed on, settled once on
    disk, and no longer awaited once the step that took them in is done (its marker's ack)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    clock, hooks = Clock(at(40)), Hooks()
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, gap_since=at(15),
            **hooks.options(),
        )  # fmt: skip
        async with running(feed):
            gap = await until_wire(queue)
            assert asked(api) == GAP_ASKED
            assert (hooks.owed, hooks.awaited) == ([Owed(at(15)), TAIL], [(MINUTE, True)])
            marker = gap[-1]
            assert isinstance(marker, Wire) and marker.ack is not None
            marker.ack()
            assert hooks.settled == [Owed(at(15))]
            clock.now = at(66)
            batches = await until_released(queue, hooks)
    assert asked(api) == sorted(GAP_ASKED + TAIL_ASKED)
    bars = pl.concat([b.minute_bars for b in batches])
    assert bars.select("symbol", "start").rows() == [("AAPL", MINUTE), ("SPY", MINUTE)]
    assert hooks.settled == [Owed(at(15)), TAIL]
    assert hooks.awaited == [(MINUTE, True), (MINUTE, False)]


async def test_a_tail_that_fails_is_counted_said_owed_and_no_longer_awaited() -> None:
    """19:50's fetch fails for AAPL (one attempt): counted in backfill_failures, said in
    backfill_failed, AAPL's minute owed as a failed window (asked for again later, and an
    error on /healthz meanwhile); SPY's bar is handed on; the minute no longer awaited (it
    closes as built; the bar, once fetched, corrects it)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    clock, hooks, counters = Clock(at(40)), Hooks(), Counters()
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, counters, clock=clock, rest=rest, gap_since=at(15),
            backfill_attempts=1, backfill_retry_s=3600.0, **hooks.options(),
        )  # fmt: skip
        async with running(feed):
            await until_wire(queue)
            api.fail_symbols["AAPL"] = -1
            clock.now = at(66)
            with capture_logs() as logged:
                batches = await until_released(queue, hooks)
            assert feed.backfill_error is not None and "AAPL" in feed.backfill_error
    bars = pl.concat([b.minute_bars for b in batches])
    assert bars.select("symbol", "start").rows() == [("SPY", MINUTE)]
    assert counters.get("backfill_failures", feed="test") == 1
    assert [e["symbols"] for e in logged if e["event"] == "backfill_failed"] == ["AAPL"]
    assert hooks.owed[-1] == Owed(MINUTE, TAIL.end, ("AAPL",))
    assert TAIL in hooks.settled  # (what failed is owed anew, its symbols only)
    assert hooks.awaited == [(MINUTE, True), (MINUTE, False)]


async def test_a_stop_before_the_tail_is_fetched_leaves_it_owed_and_a_minutes_start_owes_none() -> (
    None
):
    """Back at 19:50:40, then lost and back again at 19:50:50: 19:50 is owed and awaited once,
    and, the feed stopped before it is over, still owed (fetched at the next start) and no
    longer awaited. A feed back at a minute's start (19:52:00) owes no tail: the stream has
    all of that minute; nor does one back in a minute of no session."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    clock, hooks = Clock(at(40)), Hooks()
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, gap_since=at(15),
            **hooks.options(),
        )  # fmt: skip
        async with running(feed):
            await until_wire(queue)
            await fake.push(ALPACA_TRADES)
            await until(lambda: not queue.empty())
            clock.now = at(50)
            await fake.drop()
            await fake.wait_connections(2)
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await until_wire(queue)
        assert [o for o in hooks.owed if o.end is not None] == [TAIL]
        assert TAIL not in hooks.settled
        assert hooks.awaited == [(MINUTE, True), (MINUTE, False)]

        hooks = Hooks()
        clock.now = MINUTE + dt.timedelta(minutes=2)
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, gap_since=at(50),
            **hooks.options(),
        )  # fmt: skip
        async with running(feed):
            await until_wire(queue)
        assert (hooks.owed, hooks.awaited) == ([Owed(at(50))], [])

        hooks = Hooks()  # (nor does a minute of no session: the engine takes no trade of it)
        clock.now = at(190)
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, gap_since=at(150),
            traded=lambda start, end: start < MINUTE, **hooks.options(),
        )  # fmt: skip
        async with running(feed):
            await until_wire(queue)
    assert (hooks.owed, hooks.awaited) == ([Owed(at(150))], [])
    assert TAIL_ASKED[0] not in asked(api)
