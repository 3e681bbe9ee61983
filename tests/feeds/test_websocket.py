"""WebSocketFeed against fake Alpaca, Polygon and Finnhub streams and a fake bars REST API."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
import polars as pl
import pytest
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, TICK_SCHEMA, FeedBatch
from monitor.credentials import Secret
from monitor.errors import ConfigError
from monitor.feeds.owed import Owed
from monitor.feeds.websocket import FeedEvent, Provider, RestBackfill, WebSocketFeed, mask_url
from monitor.feeds.wire import Wire
from tests.feeds.fake_providers import FakeRest, FakeStream, rest_bar

UTC = dt.UTC
T0 = dt.datetime(2024, 7, 11, 14, 30, 20, tzinfo=UTC)

ALPACA_TRADES = [
    {"T": "t", "S": "AAPL", "i": 628, "x": "K", "p": 162.92, "s": 3, "c": ["@", "F", "T", "I"],
     "z": "C", "t": "2023-04-06T11:54:26.838232225Z"},
    {"T": "t", "S": "AAPL", "i": 75, "x": "Z", "p": 162.92, "s": 3, "c": ["@", "F", "T", "I"],
     "z": "C", "t": "2023-04-06T11:54:26.838562809Z"},
]  # fmt: skip
ALPACA_BAR = {"T": "b", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12,
              "v": 49378, "n": 461, "vw": 389.062639, "t": "2021-02-22T19:15:00Z"}  # fmt: skip
EXPECTED_TICKS = pl.DataFrame(
    {
        "symbol": ["AAPL", "AAPL"],
        "ts": [
            dt.datetime(2023, 4, 6, 11, 54, 26, 838232, tzinfo=UTC),
            dt.datetime(2023, 4, 6, 11, 54, 26, 838563, tzinfo=UTC),
        ],
        "price": [162.92, 162.92],
        "size": [3.0, 3.0],
        "id": ["K:628", "Z:75"],
    },
    schema=TICK_SCHEMA,
)
EXPECTED_BAR = pl.DataFrame(
    {
        "symbol": ["SPY"],
        "start": [dt.datetime(2021, 2, 22, 19, 15, tzinfo=UTC)],
        "open": [388.985],
        "high": [389.13],
        "low": [388.975],
        "close": [389.12],
        "volume": [49378.0],
    },
    schema=MINUTE_SCHEMA,
)


class Clock:
    """A settable wall clock."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def make_feed(
    provider: Provider,
    url: str,
    queue: asyncio.Queue[FeedBatch],
    counters: Counters,
    *,
    key: str = "KEY",
    secret: str | None = "SECRET",
    backoff: Backoff | None = None,
    stale_after_s: float = 60.0,
    regular_hours: bool = True,
    clock: Callable[[], dt.datetime] | None = None,
    events: list[FeedEvent] | None = None,
    **kwargs: object,
) -> WebSocketFeed:
    return WebSocketFeed(
        "test",
        url,
        provider,
        ["AAPL", "SPY"],
        key=Secret(key),  # (as the daemon passes them: `Secret`s, from the environment or a file)
        secret=None if secret is None else Secret(secret),
        queue=queue,
        counters=counters,
        backoff=backoff or Backoff(base_s=0.05, cap_s=0.2, jitter=0),
        stale_after_s=stale_after_s,
        is_regular_hours=lambda _now: regular_hours,
        clock=clock or Clock(),
        on_event=None if events is None else events.append,
        **kwargs,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running(feed: WebSocketFeed) -> AsyncIterator[asyncio.Task[None]]:
    """Run the feed in a task; stop it (and re-raise its errors) on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling a plain condition
            await asyncio.sleep(0.01)


async def run_and_push(feed: WebSocketFeed, fake: FakeStream, *frames: object) -> None:
    """Run the feed until subscribed, push `frames` (the Alpaca trades and bar by default), stop."""
    async with running(feed):
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        for frame in frames or (ALPACA_TRADES, [ALPACA_BAR]):
            await fake.push(frame)
        await asyncio.sleep(0.1)


async def next_batch(queue: asyncio.Queue[FeedBatch]) -> FeedBatch:
    return await asyncio.wait_for(queue.get(), 5)


def assert_batch(
    batch: FeedBatch,
    ticks: pl.DataFrame | None = None,
    minute: pl.DataFrame | None = None,
) -> None:
    assert batch.feed == "test"
    assert batch.ticks.equals(ticks if ticks is not None else pl.DataFrame(schema=TICK_SCHEMA))
    assert batch.minute_bars.equals(
        minute if minute is not None else pl.DataFrame(schema=MINUTE_SCHEMA)
    )
    assert batch.daily_bars.equals(pl.DataFrame(schema=DAILY_SCHEMA))
    assert batch.rejections == []


def rest_frame(symbols: list[str], minutes: list[dt.datetime]) -> pl.DataFrame:
    rows = [(s, m, rest_bar(s, m)) for s in symbols for m in minutes]
    return pl.DataFrame(
        {
            "symbol": [s for s, _, _ in rows],
            "start": [m for _, m, _ in rows],
            **{k: [b[k[0]] for _, _, b in rows] for k in ("open", "high", "low", "close")},
            "volume": [b["v"] for _, _, b in rows],
        },
        schema=MINUTE_SCHEMA,
    )


async def test_alpaca_auth_subscribe_and_data() -> None:
    """The feed authenticates, subscribes to every channel, and queues trades and bars."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    async with FakeStream("alpaca") as fake:
        await run_and_push(make_feed("alpaca", fake.url, queue, counters), fake)
        assert_batch(await next_batch(queue), ticks=EXPECTED_TICKS)
        assert_batch(await next_batch(queue), minute=EXPECTED_BAR)
    symbols = ["AAPL", "SPY"]
    assert fake.received == [
        {"action": "auth", "key": "KEY", "secret": "SECRET"},
        {"action": "subscribe", "trades": symbols, "bars": symbols, "updatedBars": symbols,
         "dailyBars": symbols, "statuses": symbols},
    ]  # fmt: skip
    assert (counters.get("feed_ticks", feed="test"), counters.get("feed_bars", feed="test")) == (
        2.0,
        1.0,
    )


async def test_alpaca_msgpack_decodes_like_json() -> None:
    """With msgpack negotiated, msgpack frames (nanosecond Timestamp ext) decode as JSON does."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    trades = [{**t, "t": _msgpack_ts(str(t["t"]))} for t in ALPACA_TRADES]
    bar = {**ALPACA_BAR, "t": _msgpack_ts(str(ALPACA_BAR["t"]))}
    async with FakeStream("alpaca") as fake:
        feed = make_feed("alpaca", fake.url, queue, Counters(), msgpack=True)
        await run_and_push(feed, fake, trades, [bar])
        assert_batch(await next_batch(queue), ticks=EXPECTED_TICKS)
        assert_batch(await next_batch(queue), minute=EXPECTED_BAR)
    assert fake.headers[0]["content-type"] == "application/msgpack"
    assert fake.received[0] == {"action": "auth", "key": "KEY", "secret": "SECRET"}


def _msgpack_ts(text: str) -> msgspec.msgpack.Ext:
    """An RFC 3339 string as a msgpack Timestamp (timestamp64: nanoseconds and seconds)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    seconds = int(dt.datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    nanos = int((frac + "000000000")[:9])
    return msgspec.msgpack.Ext(-1, ((nanos << 34) | seconds).to_bytes(8, "big"))


async def test_drop_reconnects_resubscribes_and_backfills() -> None:
    """After a dropped connection the feed resubscribes and queues the missed minutes from REST."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    clock = Clock(T0)
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        feed = make_feed("alpaca", fake.url, queue, counters, clock=clock, rest=rest)
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push(ALPACA_TRADES)
            assert_batch(await next_batch(queue), ticks=EXPECTED_TICKS)
            fake.gate.clear()
            await fake.drop()
            await fake.wait_connections(2)
            clock.now = T0 + dt.timedelta(minutes=5)  # 14:35:20
            fake.gate.set()
            backfilled = await next_batch(queue)
    minutes = [dt.datetime(2024, 7, 11, 14, m, tzinfo=UTC) for m in range(29, 35)]
    assert_batch(backfilled, minute=rest_frame(["AAPL", "SPY"], minutes))
    assert fake.subscribes == 2
    assert [(path, q["start"], q["end"], q.get("page_token")) for path, q, _ in api.requests] == [
        ("/v2/stocks/bars", "2024-07-11T14:29:00Z", "2024-07-11T14:34:59Z", None),
        ("/v2/stocks/bars", "2024-07-11T14:29:00Z", "2024-07-11T14:34:59Z", "1"),
    ]
    assert api.requests[0][2]["apca-api-key-id"] == "KEY"
    assert counters.get("backfill_bars", feed="test") == 12.0
    assert counters.get("feed_reconnects", feed="test") == 1.0


async def test_a_delayed_feed_backfills_from_where_its_data_stopped() -> None:
    """A 15-minute delayed stream (Alpaca's delayed_sip) is lost at 14:30:20 having sent data
    up to 14:15:10: the backfill after the reconnect starts at 14:14, where the data stopped,
    not at 14:29, where the clock was (the minutes 14:15 to 14:29 would be lost for good)."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    clock = Clock(T0)
    trade = {**ALPACA_TRADES[0], "t": "2024-07-11T14:15:10Z"}
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        feed = make_feed("alpaca", fake.url, queue, Counters(), clock=clock, rest=rest)
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push([trade])
            await next_batch(queue)
            fake.gate.clear()
            await fake.drop()
            await fake.wait_connections(2)
            clock.now = T0 + dt.timedelta(minutes=5)  # 14:35:20
            fake.gate.set()
            backfilled = await next_batch(queue)
    minutes = [dt.datetime(2024, 7, 11, 14, m, tzinfo=UTC) for m in range(14, 35)]
    assert_batch(backfilled, minute=rest_frame(["AAPL", "SPY"], minutes))
    assert {(q["start"], q["end"]) for _, q, _ in api.requests} == {
        ("2024-07-11T14:14:00Z", "2024-07-11T14:34:59Z")
    }


async def test_a_feed_held_up_by_a_full_queue_backfills_from_where_its_data_stopped() -> None:
    """The engine falls behind (its queue full) for ten minutes: the feed's frames wait, and
    those read at 14:40 hold trades of 14:30; then the connection is lost (the provider gave
    up on a client that stopped reading). The backfill starts where their data ends (14:29),
    not where the clock was when they were read (14:39), which would leave 14:30-14:39 out."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue(maxsize=1)
    counters = Counters()
    clock = Clock(T0)
    first, second = ({**ALPACA_TRADES[0], "t": f"2024-07-11T14:30:{s}Z"} for s in ("10", "12"))
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        feed = make_feed("alpaca", fake.url, queue, counters, clock=clock, rest=rest)
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            queue.put_nowait(FeedBatch.empty("engine"))  # (the engine behind: the queue full)
            await fake.push([first])
            await fake.push([second])
            await until(lambda: counters.get("feed_queue_full_waits", feed="test") == 1)
            clock.now = T0 + dt.timedelta(minutes=10)  # 14:40:20: the engine takes again
            assert (await next_batch(queue)).feed == "engine"
            for _ in range(2):
                assert (await next_batch(queue)).ticks.height == 1
            fake.gate.clear()
            await fake.drop()
            await fake.wait_connections(2)
            clock.now = T0 + dt.timedelta(minutes=11)  # 14:41:20
            fake.gate.set()
            await next_batch(queue)
    assert {(q["start"], q["end"]) for _, q, _ in api.requests} == {
        ("2024-07-11T14:29:00Z", "2024-07-11T14:40:59Z")
    }


async def test_connection_limit_reconnects_with_backoff() -> None:
    """Alpaca 406 twice: the feed waits the backoff delays between attempts, then subscribes."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    backoff = Backoff(base_s=0.2, factor=2, cap_s=1.0, jitter=0)
    async with FakeStream("alpaca", refuse=2) as fake:
        await run_and_push(make_feed("alpaca", fake.url, queue, counters, backoff=backoff), fake)
    gaps = [b - a for a, b in itertools.pairwise(fake.connect_times)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39, gaps
    assert counters.get("feed_provider_errors", feed="test", code="406") == 2.0


async def test_a_handshake_never_acknowledged_is_given_up_and_made_again() -> None:
    """Alpaca says "connected" and never answers the auth: after subscribe_timeout_s the feed
    drops that connection (its error says why, for /healthz) and subscribes on the next one,
    rather than staying connected with no data for ever."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    async with FakeStream("alpaca", unanswered=1) as fake:
        feed = make_feed("alpaca", fake.url, queue, counters, subscribe_timeout_s=0.3)
        await run_and_push(feed, fake)
    assert len(fake.connect_times) == 2
    assert fake.subscribes == 1
    assert feed.last_error == (
        "test: not subscribed 0.3 s after connecting (the alpaca handshake was never acknowledged)"
    )
    assert counters.get("feed_reconnects", feed="test") == 1.0
    assert_batch(await next_batch(queue), EXPECTED_TICKS)


async def test_auth_failure_is_fatal() -> None:
    """Alpaca 402 ends the run with a ConfigError after one attempt: no retry loop."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    async with FakeStream("alpaca", secret="OTHER") as fake:
        feed = make_feed("alpaca", fake.url, queue, Counters())
        with pytest.raises(ConfigError) as caught:
            await asyncio.wait_for(feed.run(asyncio.Event()), 5)
    assert str(caught.value) == (
        "feeds.test: alpaca error 402: 'auth failed'; check the key, secret, plan and symbols"
    )
    assert len(fake.connect_times) == 1


async def test_handshakes_never_acknowledged_back_off_however_long_they_hung() -> None:
    """Three connections in a row whose auth is never answered, each given up after
    subscribe_timeout_s, which is longer than stable_after_s: the attempts count up (the
    delays grow), as for connections that could not be made; before, each counted as a
    stable connection and the delay started over every time."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    backoff = Backoff(base_s=0.05, cap_s=1.0, jitter=0)
    with capture_logs() as logs:
        async with FakeStream("alpaca", unanswered=3) as fake:
            feed = make_feed(
                "alpaca", fake.url, queue, Counters(), backoff=backoff,
                subscribe_timeout_s=0.2, stable_after_s=0.1,
            )  # fmt: skip
            await run_and_push(feed, fake)
    attempts = [e["attempt"] for e in logs if e["event"] == "feed_reconnecting"]
    assert attempts == [1, 2, 3]
    assert fake.subscribes == 1


@pytest.mark.parametrize("code", [410, 411])
async def test_a_subscription_the_stream_refuses_for_good_is_fatal(code: int) -> None:
    """Alpaca 410 (invalid subscribe action for this feed: the URL of another stream) or 411
    (insufficient scope) ends the run with a ConfigError after one attempt: the same
    subscribe sent again is refused again, so no reconnect loop without end."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    async with FakeStream("alpaca", refuse=5, refuse_code=code) as fake:
        feed = make_feed("alpaca", fake.url, queue, Counters())
        with pytest.raises(ConfigError) as caught:
            await asyncio.wait_for(feed.run(asyncio.Event()), 5)
    assert str(caught.value).startswith(f"feeds.test: alpaca error {code}: ")
    assert len(fake.connect_times) == 1


async def test_silence_raises_stale_then_recovered() -> None:
    """No data for stale_after_s in regular hours: feed_stale; the next frame: feed_recovered."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    events: list[FeedEvent] = []
    async with FakeStream("alpaca") as fake:
        feed = make_feed("alpaca", fake.url, queue, counters, stale_after_s=0.3, events=events)
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push(ALPACA_TRADES)
            await next_batch(queue)
            await until(lambda: len(events) == 1)
            assert counters.get("feed_stale", feed="test") == 1.0
            await fake.push([ALPACA_BAR])
            await next_batch(queue)
            await until(lambda: len(events) == 2)
    assert [(e.feed, e.kind, e.at) for e in events] == [
        ("test", "feed_stale", T0),
        ("test", "feed_recovered", T0),
    ]
    stale_gap, recovered_gap = (e.gap_s or 0.0 for e in events)
    assert 0.3 <= stale_gap < 0.6 and recovered_gap >= stale_gap
    assert counters.get("feed_stale", feed="test") == 0.0


async def test_silence_outside_regular_hours_is_not_stale() -> None:
    """Outside regular hours a silent feed raises no stale event."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    events: list[FeedEvent] = []
    async with FakeStream("alpaca") as fake:
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), stale_after_s=0.1, regular_hours=False,
            events=events,
        )  # fmt: skip
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await asyncio.sleep(0.4)
    assert events == []


async def test_polygon_handshake_and_data() -> None:
    """Polygon: auth with the key, subscribe T and AM for every symbol, queue trades and bars."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    trade = {"ev": "T", "sym": "MSFT", "x": 4, "i": "12345", "z": 3, "p": 114.125, "s": 100,
             "c": [0, 12], "t": 1536036818784, "q": 3681328}  # fmt: skip
    async with FakeStream("polygon") as fake:
        await run_and_push(
            make_feed("polygon", fake.url, queue, Counters(), secret=None), fake, [trade]
        )
        batch = await next_batch(queue)
    ticks = pl.DataFrame(
        {
            "symbol": ["MSFT"],
            "ts": [dt.datetime(2018, 9, 4, 4, 53, 38, 784000, tzinfo=UTC)],
            "price": [114.125],
            "size": [100.0],
            "id": ["4:12345"],
        },
        schema=TICK_SCHEMA,
    )
    assert_batch(batch, ticks=ticks)
    assert fake.received == [
        {"action": "auth", "params": "KEY"},
        {"action": "subscribe", "params": "T.AAPL,T.SPY,AM.AAPL,AM.SPY"},
    ]


async def test_polygon_rest_backfill_follows_next_url() -> None:
    """Polygon REST: one range request per symbol, following next_url with the key re-added."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    async with FakeRest() as api, RestBackfill("polygon", api.url, key=Secret("PKEY")) as rest:
        fetched = await rest.fetch(["AAPL"], start, start + dt.timedelta(minutes=5), feed="test")
    assert fetched.failed == {}
    batch = fetched.batch
    minutes = [start + dt.timedelta(minutes=m) for m in range(5)]
    assert_batch(batch, minute=rest_frame(["AAPL"], minutes))
    assert [(q.get("cursor"), q["apiKey"]) for _, q, _ in api.requests] == [
        (None, "PKEY"),
        ("3", "PKEY"),
    ]
    assert api.requests[0][1]["adjusted"] == "false"  # (raw prices, as the stream's)


@pytest.mark.parametrize("provider", ["alpaca", "polygon"])
async def test_a_backfill_hands_on_the_symbols_it_got_and_asks_again_for_the_rest(
    provider: Provider,
) -> None:
    """AAPL's requests fail (once, then for good): SPY's bars are handed on at once, AAPL's
    asked for again (only AAPL), handed on when they come, and named when they never do."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    end = start + dt.timedelta(minutes=3)
    minutes = [start + dt.timedelta(minutes=m) for m in range(3)]
    for failures in (1, -1):
        queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
        counters = Counters()
        async with (
            FakeRest() as api,
            RestBackfill(
                provider, api.url, key=Secret("KEY"), secret=Secret("SECRET"),
                symbols_per_request=1,
            ) as rest,
        ):  # fmt: skip
            api.fail_symbols["AAPL"] = failures
            feed = make_feed(provider, "ws://127.0.0.1:9", queue, counters, rest=rest)
            with capture_logs() as logs:
                await feed._backfill(start, end)
        batches = [queue.get_nowait() for _ in range(queue.qsize())]
        got = [b.minute_bars.get_column("symbol").unique().to_list() for b in batches]
        events = [(e["event"], e.get("symbols")) for e in logs if "backfill" in e["event"]]
        if failures == 1:
            assert got == [["SPY"], ["AAPL"]]
            assert batches[1].minute_bars.equals(rest_frame(["AAPL"], minutes))
            assert events == [("feed_backfilled", 1), ("backfill_retry", "AAPL"),
                              ("feed_backfilled", 1)]  # fmt: skip
            assert counters.get("backfill_failures", feed="test") == 0.0
        else:
            assert got == [["SPY"]]
            assert events[-1] == ("backfill_failed", "AAPL")
            assert counters.get("backfill_failures", feed="test") == 1.0


async def test_a_backfill_that_failed_is_asked_for_again_while_the_connection_stays_up() -> None:
    """After a reconnect the REST API fails every attempt (three) for AAPL: the gap is not
    left until the next reconnect, hours later maybe, but AAPL's window asked for again after
    backfill_retry_s on the same connection (not SPY's, which came); its bars come then,
    /healthz's backfill error clears; the gap is settled once its bars are on disk (AAPL's
    window owed by then), and AAPL's window once its own are."""
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    clock = Clock(T0)
    settled: list[list[Owed]] = []
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill(
            "alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET"), symbols_per_request=1
        ) as rest,
    ):
        api.fail_symbols["AAPL"] = 3
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest,
            backfill_retry_s=0.1, owe=lambda _: None, settle=settled.append,
        )  # fmt: skip
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push(ALPACA_TRADES)
            await next_batch(queue)
            fake.gate.clear()
            await fake.drop()
            await fake.wait_connections(2)
            clock.now = T0 + dt.timedelta(minutes=3)  # 14:33:20
            fake.gate.set()
            items: list[FeedBatch | Wire] = []
            # (each backfill's end: the gap's, AAPL failing, then AAPL's window asked again)
            while sum(isinstance(item, Wire) for item in items) < 2:
                items.append(await asyncio.wait_for(queue.get(), 5))
            assert feed.backfill_error is None
    for item in items:
        if isinstance(item, Wire) and item.ack is not None:
            item.ack()  # (as the engine loop does once the bars before it are on disk)
    bars = [b.minute_bars for b in items if isinstance(b, FeedBatch) and b.minute_bars.height]
    minutes = [dt.datetime(2024, 7, 11, 14, m, tzinfo=UTC) for m in range(29, 33)]
    assert pl.concat(bars).sort("symbol", "start").equals(rest_frame(["AAPL", "SPY"], minutes))
    assert len(fake.connect_times) == 2
    # (the gap settled once its bars and AAPL's failed window were owed; that window once
    # its bars came)
    assert [[gap.symbols for gap in gaps] for gaps in settled] == [[None], [("AAPL",)]]
    # (the failed window asked for again as it was, of the symbol that failed only)
    asked = [(q["symbols"], q["start"], q["end"]) for _, q, _ in api.requests]
    window = ("2024-07-11T14:29:00Z", "2024-07-11T14:32:59Z")
    assert sorted(asked) == [("AAPL", *window)] * 4 + [("SPY", *window)]


async def test_finnhub_token_in_url_is_masked_in_logs() -> None:
    """Finnhub: the token goes in the query string, never in a log; pings are not data."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    with capture_logs() as logs:
        async with FakeStream("finnhub", key="TOKEN123") as fake:
            feed = make_feed("finnhub", fake.url, queue, counters, key="TOKEN123", secret=None)
            async with running(feed):
                await asyncio.wait_for(fake.subscribed.wait(), 5)
                await until(lambda: len(fake.received) == 2)
                await fake.push({"type": "ping"})
                await fake.push(
                    {"data": [{"c": None, "p": 7296.89, "s": "BINANCE:BTCUSDT",
                               "t": 1575526691134, "v": 0.011467}], "type": "trade"}
                )  # fmt: skip
                batch = await next_batch(queue)
    assert batch.ticks.rows() == [
        ("BINANCE:BTCUSDT", dt.datetime(2019, 12, 5, 6, 18, 11, 134000, tzinfo=UTC), 7296.89,
         0.011467, None)
    ]  # fmt: skip
    assert fake.received == [
        {"type": "subscribe", "symbol": "AAPL"},
        {"type": "subscribe", "symbol": "SPY"},
    ]
    assert fake.paths[0] == "/stream?token=TOKEN123"
    assert counters.get("feed_pings", feed="test") == 1.0
    assert not [entry for entry in logs if "TOKEN123" in repr(entry)]
    assert mask_url(f"{fake.url}?token=TOKEN123") == f"{fake.url}?token=***"


async def test_a_provider_error_repeated_is_counted_each_time_and_logged_once_a_while() -> None:
    """Finnhub answers each subscribe past the plan's limit with the same error, and the feed
    carries on: 200 of them are 200 in feed_provider_errors, and one log line (the next one,
    after the rejection log interval, says how many were not logged), not 200 lines at each
    connect."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    error = {"type": "error", "msg": "Subscribing to too many symbols"}
    with capture_logs() as logs:
        async with FakeStream("finnhub", key="TOKEN") as fake:
            feed = make_feed("finnhub", fake.url, queue, counters, key="TOKEN", secret=None)
            async with running(feed):
                await asyncio.wait_for(fake.subscribed.wait(), 5)
                for _ in range(200):
                    await fake.push(error)
                await until(lambda: counters.total("feed_provider_errors") == 200)
    lines = [e for e in logs if e["event"] == "feed_provider_error"]
    assert [(e["code"], e["message"], e.get("not_logged_since")) for e in lines] == [
        ("none", "Subscribing to too many symbols", None)
    ]


async def test_stop_during_backoff_exits_promptly() -> None:
    """With nothing listening, setting stop ends run() at once, mid-backoff."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    backoff = Backoff(base_s=5.0, cap_s=5.0, jitter=0)
    feed = make_feed("alpaca", "ws://127.0.0.1:9/stream", queue, Counters(), backoff=backoff)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    stop.set()
    await asyncio.wait_for(task, 2)
    assert loop.time() - began < 0.5


async def test_a_backfill_waits_as_long_as_a_429_asks_before_asking_again() -> None:
    """Polygon answers AAPL's first request 429 with Retry-After: 1: SPY's bars are handed on
    at once, AAPL's asked for again after a second (the backoff alone is 0.05 s), not before."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    async with FakeRest() as api, RestBackfill("polygon", api.url, key=Secret("KEY")) as rest:
        api.rate_limited["AAPL"] = "1"
        feed = make_feed("polygon", "ws://127.0.0.1:9", queue, Counters(), rest=rest)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await feed._backfill(start, start + dt.timedelta(minutes=2))
        took = loop.time() - began
    asked = [path.split("/")[4] for path, _, _ in api.requests]
    assert sorted(asked[:2]) == ["AAPL", "SPY"] and asked[2:] == ["AAPL"]
    assert took >= 1.0
    got = [b.minute_bars.get_column("symbol").unique().to_list() for b in drain(queue)]
    assert got == [["SPY"], ["AAPL"]]


async def test_an_alpaca_429_is_waited_out_until_its_window_resets() -> None:
    """Alpaca's 429 says when its rate limit's window resets (X-RateLimit-Reset, in epoch
    seconds), not how long to wait (no Retry-After): the fetch asks to wait until then
    (ten minutes here: whole seconds, and a slow machine's seconds of work, are no matter),
    where before it said nothing and the next attempts came within a second, inside the same
    window, to be refused again."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    async with (
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        api.window_reset["AAPL"] = str(int(time.time()) + 600)
        fetched = await rest.fetch(
            ["AAPL", "SPY"], start, start + dt.timedelta(minutes=2), feed="t"
        )
    assert fetched.failed.keys() == {"AAPL", "SPY"}
    assert fetched.wait_s is not None and 500.0 < fetched.wait_s <= 600.0


def drain(queue: asyncio.Queue[FeedBatch]) -> list[FeedBatch]:
    """The batches on `queue` (the markers of a backfill's end, which are not, left out)."""
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    return [item for item in items if isinstance(item, FeedBatch)]


async def test_a_reply_nobody_foresaw_costs_only_its_symbols_bars() -> None:
    """Polygon sends AAPL a malformed `next_url` (httpx cannot even parse it): AAPL's bars are
    a failure of AAPL's, named; SPY's come; the feed goes on (before, the error ended the
    feed's task group, and every symbol's bars with it)."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    async with FakeRest() as api, RestBackfill("polygon", api.url, key=Secret("KEY")) as rest:
        api.broken_next_url.add("AAPL")
        fetched = await rest.fetch(
            ["AAPL", "SPY"], start, start + dt.timedelta(minutes=5), feed="t"
        )
    assert fetched.batch.minute_bars.get_column("symbol").unique().to_list() == ["SPY"]
    assert list(fetched.failed) == ["AAPL"] and "polygon REST" in fetched.failed["AAPL"]


async def test_after_a_429_the_symbols_not_asked_yet_wait_for_the_next_attempt() -> None:
    """Polygon, one request at a time: AAPL's 429 stops the fetch from asking for SPY and QQQ
    in that attempt (they would only be refused, and count against the key); all three are
    failed, to be asked again after the wait."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    async with (
        FakeRest() as api,
        RestBackfill("polygon", api.url, key=Secret("KEY"), concurrency=1) as rest,
    ):
        api.rate_limited["AAPL"] = "2"
        symbols = ["AAPL", "SPY", "QQQ"]
        fetched = await rest.fetch(symbols, start, start + dt.timedelta(minutes=2), feed="t")
    assert [path.split("/")[4] for path, _, _ in api.requests] == ["AAPL"]
    assert sorted(fetched.failed) == sorted(symbols) and fetched.wait_s == 2.0


async def test_a_group_refused_for_one_symbol_is_asked_again_one_by_one() -> None:
    """Alpaca refuses a request naming ^RUT (400, "invalid symbol"), and so the whole group of
    three: the next attempt asks for each symbol alone, AAPL's and SPY's bars come, and only
    ^RUT is named, given up as refused with the provider's reason (not asked a third time)."""
    start = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    async with (
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        api.invalid_symbols.add("^RUT")
        feed = WebSocketFeed(
            "test", "ws://127.0.0.1:9", "alpaca", ["AAPL", "^RUT", "SPY"], key=Secret("KEY"),
            secret=Secret("SECRET"), queue=queue, counters=Counters(),
            backoff=Backoff(base_s=0.01, cap_s=0.02, jitter=0), stale_after_s=60,
            is_regular_hours=lambda _now: True, clock=Clock(), rest=rest,
        )  # fmt: skip
        with capture_logs() as logs:
            await feed._backfill(start, start + dt.timedelta(minutes=2))
    asked = [q["symbols"] for _, q, _ in api.requests if "page_token" not in q]
    assert asked[0] == "AAPL,^RUT,SPY" and sorted(asked[1:]) == ["AAPL", "SPY", "^RUT"]
    got = sorted(s for b in drain(queue) for s in b.minute_bars.get_column("symbol").unique())
    assert got == ["AAPL", "SPY"]
    [given_up] = [e for e in logs if e["event"] == "backfill_given_up"]
    assert given_up["symbols"] == "^RUT" and "invalid symbol: ^RUT" in given_up["error"]
