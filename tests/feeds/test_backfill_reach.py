"""How far back a WebSocket feed's REST backfill reaches: past `backfill_max_s` to the open of
the oldest session whose minutes the engine still takes (a feed down through the close, back
the next morning, fetches the afternoon whose session bars wait for it), and, from
`gap_since`, what came while the daemon was down (a restart), against fake Alpaca servers."""

from __future__ import annotations

import asyncio
import datetime as dt
from functools import partial
from pathlib import Path

import pytest

from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.credentials import Secret
from monitor.feeds.owed import Owed
from monitor.feeds.websocket import RestBackfill
from tests.feeds.fake_providers import FakeRest, FakeStream
from tests.feeds.test_websocket import (
    ALPACA_TRADES,
    Clock,
    make_feed,
    next_batch,
    running,
)

UTC = dt.UTC
AFTERNOON = dt.datetime(2024, 7, 11, 19, 0, 20, tzinfo=UTC)  # 15:00 New York, Thursday
NEXT_MORNING = dt.datetime(2024, 7, 12, 13, 35, 20, tzinfo=UTC)  # 09:35 New York, Friday
THURSDAY_OPEN = dt.datetime(2024, 7, 11, 13, 30, tzinfo=UTC)


def windows(api: FakeRest) -> list[tuple[str, str]]:
    """The (start, end) of each backfill's first page request."""
    return [(q["start"], q["end"]) for _, q, _ in api.requests if "page_token" not in q]


async def dropped_overnight(**options: object) -> list[tuple[str, str]]:
    """Trades at 15:00 on Thursday, the connection lost, back at 09:35 on Friday: the windows
    the backfill asked the REST API for."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    clock = Clock(AFTERNOON)
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        feed = make_feed("alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, **options)
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push(ALPACA_TRADES)
            await next_batch(queue)
            fake.gate.clear()
            await fake.drop()
            await fake.wait_connections(2)
            clock.now = NEXT_MORNING
            fake.gate.set()
            backfilled = await next_batch(queue)
            assert backfilled.minute_bars.height > 0
    return windows(api)


async def test_a_feed_down_through_the_close_backfills_the_afternoon_it_missed() -> None:
    """With the engine taking Thursday's minutes still (its session bars wait for them), the
    backfill starts at the minute before the data stopped, 18.5 hours back, not at
    `backfill_max_s` (6 hours) before now, which would miss the whole afternoon."""
    reach = await dropped_overnight(keeps_from=lambda now: THURSDAY_OPEN)
    assert reach == [("2024-07-11T18:59:00Z", "2024-07-12T13:34:59Z")]
    without = await dropped_overnight()
    assert without == [("2024-07-12T07:35:20Z", "2024-07-12T13:34:59Z")]


async def test_the_reach_stops_at_the_oldest_session_the_engine_takes() -> None:
    """Data stopped long before the oldest session the engine still takes: the backfill goes
    back to that session's open, no further (older minutes would be rejected as late)."""
    friday_open = dt.datetime(2024, 7, 12, 13, 30, tzinfo=UTC)
    reach = await dropped_overnight(keeps_from=lambda now: friday_open)
    assert reach == [("2024-07-12T13:30:00Z", "2024-07-12T13:34:59Z")]


async def test_a_restart_backfills_what_came_while_the_daemon_was_down() -> None:
    """`gap_since` (the clock of the sessions the daemon took up at its start): the first
    subscription backfills from the minute before it."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    stopped = dt.datetime(2024, 7, 12, 14, 10, 30, tzinfo=UTC)
    clock = Clock(dt.datetime(2024, 7, 12, 14, 40, 20, tzinfo=UTC))
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        feed = make_feed(
            "alpaca", fake.url, queue, counters, clock=clock, rest=rest, gap_since=stopped
        )
        async with running(feed):
            backfilled = await next_batch(queue)
    assert windows(api) == [("2024-07-12T14:09:00Z", "2024-07-12T14:39:59Z")]
    assert backfilled.minute_bars.height == 2 * 31
    assert counters.get("backfill_bars", feed="test") == 62.0


def test_the_daemon_gives_its_websocket_feeds_the_clock_it_stopped_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's WebSocket feed with a `rest_url` starts with a gap from the clock of the
    sessions it took up from the store (saved at the last stop), and reaches back to the open
    of the oldest session its engine takes: the session before the latest closed one."""
    from monitor import config as cfg
    from monitor.calendar import nyse_sessions
    from monitor.clock import SimClock
    from monitor.core.engine import Engine
    from monitor.core.model import Tick, ticks_frame
    from monitor.core.rules.spec import RulesFile
    from monitor.feeds.websocket import WebSocketFeed
    from monitor.service import Daemon
    from monitor.store import Store
    from tests.conftest import RULES

    stopped = dt.datetime(2024, 7, 16, 15, 0, 5, tzinfo=UTC)
    engine = Engine(RulesFile(), nyse_sessions(dt.date(2024, 1, 1)))
    batch = FeedBatch.empty("t")
    batch.ticks = ticks_frame([Tick("AAPL", stopped - dt.timedelta(seconds=3), 10.0, 1.0, "1")])
    engine.ingest(batch)
    engine.advance(stopped)
    Store(tmp_path / "store").save_intraday(engine.book.state())
    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[store]\npath = "{tmp_path / "store"}"\n[rules]\nfile = "{RULES}"\n'
        '[[feeds]]\nname = "alpaca"\nkind = "websocket"\nprovider = "alpaca"\n'
        'url = "wss://stream.example.com/v2/iex"\nrest_url = "https://data.example.com"\n'
        'symbols = ["AAPL"]\nkey_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'
    )
    conf.chmod(0o600)

    def feed_at(now: dt.datetime) -> WebSocketFeed:
        daemon = Daemon(cfg.load(conf), clock=SimClock(now))
        daemon.build_feeds()
        feed = daemon.feeds[0]
        assert isinstance(feed, WebSocketFeed)
        return feed

    now = stopped + dt.timedelta(minutes=40)
    feed = feed_at(now)
    assert feed._gap.start == stopped
    # (2024-07-16 under way: the latest closed session is 07-15, the one before it 07-12)
    assert feed._reach(now) == dt.datetime(2024, 7, 12, 13, 30, tzinfo=UTC)

    # Back a week later, the saved sessions too old to take up: the feed still backfills,
    # from the oldest session the engine takes (07-22, before 07-23, the latest closed), and
    # with extended hours from its pre-market (04:00 New York).
    later = dt.datetime(2024, 7, 24, 14, 0, tzinfo=UTC)
    conf.write_text(conf.read_text() + "[engine]\nextended_hours = true\n")
    feed = feed_at(later)
    assert feed._gap.start == stopped
    assert feed._reach(later) == dt.datetime(2024, 7, 22, 8, 0, tzinfo=UTC)

    # A gap whose backfill was cut off before the stop, owed from earlier: from there.
    owed_from = stopped - dt.timedelta(minutes=20)
    Store(tmp_path / "store").save_owed_backfills({"alpaca": owed_from.isoformat()})
    assert feed_at(later)._gap.start == owed_from


async def test_a_halt_is_dated_by_the_providers_time_not_its_arrival() -> None:
    """An Alpaca trading status reaches the daemon as a `trading_status` event at the time the
    provider stamped (when the halt began), not when the feed read it."""
    from monitor.feeds.events import FeedEvent

    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    events: list[FeedEvent] = []
    halt = {"T": "s", "S": "GME", "sc": "H", "sm": "Trading Halt", "rc": "T12",
            "rm": "Info Requested", "t": "2021-01-27T15:00:00Z", "z": "C"}  # fmt: skip
    async with FakeStream("alpaca") as fake:
        clock = Clock(dt.datetime(2021, 1, 27, 15, 0, 40, tzinfo=UTC))  # (read 40 s later)
        feed = make_feed("alpaca", fake.url, queue, Counters(), clock=clock, events=events)
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push([halt])
            async with asyncio.timeout(5):
                while not events:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
    assert [(e.kind, e.symbol, e.halted, e.at) for e in events] == [
        ("trading_status", "GME", True, dt.datetime(2021, 1, 27, 15, 0, tzinfo=UTC))
    ]


def test_after_a_crash_the_gap_starts_where_the_journal_ends(tmp_path: Path) -> None:
    """A crash after the last save: the journal holds the ticks accepted since, and the gap a
    feed backfills starts at its last tick, not at the saved clock (those minutes are taken up
    already); with no save at all, at the journal's last tick too."""
    from monitor import logs
    from monitor.calendar import nyse_sessions
    from monitor.core.engine import Engine
    from monitor.core.model import Tick, ticks_frame
    from monitor.core.rules.spec import RulesFile
    from monitor.intraday import Intraday
    from monitor.journal import Journal
    from monitor.store import Store

    sessions = nyse_sessions(dt.date(2024, 1, 1))
    saved_at = dt.datetime(2024, 7, 16, 15, 0, 5, tzinfo=UTC)
    last_tick = saved_at + dt.timedelta(minutes=3)

    def ticks(at: dt.datetime, trade: str) -> FeedBatch:
        batch = FeedBatch.empty("t")
        batch.ticks = ticks_frame([Tick("AAPL", at, 10.0, 1.0, trade)])
        return batch

    for save in (True, False):
        folder = tmp_path / str(save)
        store, journal = Store(folder / "store"), Journal(folder / "journal")
        engine = Engine(RulesFile(), sessions)
        engine.ingest(ticks(saved_at - dt.timedelta(seconds=3), "1"))
        engine.advance(saved_at)
        if save:
            store.save_intraday(engine.book.state())
        intraday = Intraday(store, engine, logs.get("test"), Counters(), journal)
        assert intraday.append(ticks(last_tick, "2"))  # (journaled, then the crash)
        restarted = Engine(RulesFile(), sessions)
        again = Intraday(
            store, restarted, logs.get("test"), Counters(), Journal(folder / "journal")
        )
        again.restore(last_tick + dt.timedelta(minutes=30))
        assert again.resumed_from == last_tick


async def test_a_backfill_cut_off_by_a_stop_is_owed_and_fetched_at_the_next_start(
    tmp_path: Path,
) -> None:
    """The connection lost at 14:30, back at 14:35; the REST API slow: the daemon stops while
    the gap's backfill is in flight. The gap stays owed in the store (`backfills_owed.json`),
    and the next start's feed backfills from it, though its data (ticks after the gap) ends
    later; the owed gap is settled only once the engine loop acknowledges the marker queued
    after the bars (on disk by then). So is the minute each subscription came back in (its
    trades before then), fetched once it is over: 14:35's, cut off by the stop, is owed and
    fetched at the next start (with the gap it lies in); 14:40's is still owed at the end."""
    from structlog.testing import capture_logs

    from monitor import logs
    from monitor.feeds.wire import Wire
    from monitor.owed_backfills import OwedBackfills
    from monitor.store import Store

    store = Store(tmp_path / "store")
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    clock = Clock(dt.datetime(2024, 7, 11, 14, 30, 20, tzinfo=UTC))
    owed = OwedBackfills(store, logs.get("test"))
    hooks = {"owe": lambda t: owed.owe("test", t), "settle": lambda t: owed.settle("test", t)}
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        feed = make_feed("alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, **hooks)
        with capture_logs() as logged:
            async with running(feed):
                await asyncio.wait_for(fake.subscribed.wait(), 5)
                await fake.push(ALPACA_TRADES)
                await next_batch(queue)
                gap = owed.since("test")
                assert gap is None
                api.answering.clear()
                fake.gate.clear()
                await fake.drop()
                await fake.wait_connections(2)
                clock.now = dt.datetime(2024, 7, 11, 14, 35, 20, tzinfo=UTC)
                fake.gate.set()
                async with asyncio.timeout(5):
                    while not api.requests:  # noqa: ASYNC110 - the backfill is asked for
                        await asyncio.sleep(0.01)
        assert "backfill_abandoned" in [e["event"] for e in logged]
        gap = owed.since("test")
        assert gap is not None and gap <= dt.datetime(2024, 7, 11, 14, 30, 20, tzinfo=UTC)
        tail = Owed(at_1411(14, 35), at_1411(14, 36), ("AAPL", "SPY"))
        assert store.load_owed_backfills() == {
            "test": {"since": gap.isoformat(), "windows": [saved(tail)]}
        }

        # The next start: the data taken up ends after the gap (14:36), what is owed before.
        restarted = OwedBackfills(store, logs.get("test"))
        assert restarted.take("test") == (gap, [tail])  # (as the daemon hands it to its feed)
        hooks = {
            "owe": lambda t: restarted.owe("test", t),
            "settle": lambda t: restarted.settle("test", t),
        }
        api.answering.set()
        api.requests.clear()
        clock.now = dt.datetime(2024, 7, 11, 14, 40, 20, tzinfo=UTC)
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, gap_since=gap,
            owed=[tail], **hooks,
        )  # fmt: skip
        async with running(feed):
            backfilled = await next_batch(queue)
            marker = await asyncio.wait_for(queue.get(), 5)
    assert windows(api) == [("2024-07-11T14:29:00Z", "2024-07-11T14:39:59Z")]
    assert backfilled.minute_bars.height == 2 * 11
    assert isinstance(marker, Wire) and marker.payloads == [] and marker.ack is not None
    # (this start's, owed from its subscription: the stop came before 14:41:05)
    tail_now = Owed(at_1411(14, 40), at_1411(14, 41), ("AAPL", "SPY"))
    assert store.load_owed_backfills() == {
        "test": {"since": gap.isoformat(), "windows": [saved(tail), saved(tail_now)]}
    }  # (not on disk yet)
    marker.ack()
    assert restarted.since("test") == tail_now.start
    assert store.load_owed_backfills() == {"test": {"windows": [saved(tail_now)]}}


def at_1411(hour: int, minute: int) -> dt.datetime:
    """That minute of Thursday 2024-07-11, UTC."""
    return dt.datetime(2024, 7, 11, hour, minute, tzinfo=UTC)


def saved(window: Owed) -> dict[str, object]:
    """`window` as `backfills_owed.json` holds it."""
    assert window.end is not None and window.symbols is not None
    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "symbols": list(window.symbols),
    }


async def test_a_failed_backfill_is_asked_for_again_at_the_next_subscription() -> None:
    """AAPL's bars refused (for good, one attempt): the backfill of the gap since 14:10 fails,
    and the feed says so (`backfill_error`, on /healthz); at the next subscription (the
    connection lost and back) it asks again for the failed window (14:09 to 14:20) beside the
    new gap's, not for everything from 14:09, and once that succeeds the error is gone."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    stopped = dt.datetime(2024, 7, 12, 14, 10, 30, tzinfo=UTC)
    clock = Clock(dt.datetime(2024, 7, 12, 14, 20, 20, tzinfo=UTC))
    async with (
        FakeStream("alpaca") as fake,
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        api.fail_symbols["AAPL"] = -1
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest, gap_since=stopped,
            backfill_attempts=1,
        )  # fmt: skip
        async with running(feed):
            async with asyncio.timeout(5):
                while feed.backfill_error is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert feed.backfill_error.startswith("from 2024-07-12 14:09Z, 2 symbols (AAPL, SPY)")
            api.fail_symbols.clear()
            api.requests.clear()
            await fake.push(ALPACA_TRADES)
            await next_batch(queue)
            clock.now = dt.datetime(2024, 7, 12, 14, 25, 20, tzinfo=UTC)
            await fake.drop()
            await fake.wait_connections(2)
            backfilled = [await next_batch(queue), await next_batch(queue)]
    assert windows(api) == [
        ("2024-07-12T14:09:00Z", "2024-07-12T14:19:59Z"),
        ("2024-07-12T14:24:00Z", "2024-07-12T14:24:59Z"),
    ]
    assert [b.minute_bars.height for b in backfilled] == [2 * 11, 2 * 1]
    assert feed.backfill_error is None


async def test_each_backfill_settles_only_the_gaps_it_filled(tmp_path: Path) -> None:
    """Two backfills, one failing (AAPL refused) and one not, in either order: the gap of the
    one that failed stays owed (and said on /healthz) whichever ends last; the gap of the one
    that succeeded is settled, even when its window ends in the minute its gap began."""
    from monitor import logs
    from monitor.feeds.wire import Wire
    from monitor.owed_backfills import OwedBackfills
    from monitor.store import Store

    failing = dt.datetime(2024, 7, 12, 14, 0, 30, tzinfo=UTC)
    good = dt.datetime(2024, 7, 12, 14, 25, 19, tzinfo=UTC)
    minute = dt.timedelta(minutes=1)

    async def backfill(feed: object, gap: dt.datetime, api: FakeRest, refuse: bool) -> None:
        api.fail_symbols = {"AAPL": -1} if refuse else {}
        start = gap.replace(second=0) - minute
        end = start + minute  # (the minute the gap began in: a reconnect within it)
        await feed._backfill(start, end, [Owed(gap)])  # type: ignore[attr-defined]

    for order in ("failing first", "good first"):
        store = Store(tmp_path / order.replace(" ", "-"))
        owed = OwedBackfills(store, logs.get("test"))
        queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
        async with (
            FakeRest() as api,
            RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
        ):
            feed = make_feed(
                "alpaca", "ws://127.0.0.1:9", queue, Counters(), rest=rest,
                owe=partial(owed.owe, "test"), settle=partial(owed.settle, "test"),
                backfill_attempts=1,
            )  # fmt: skip
            owed.owe("test", Owed(failing))
            owed.owe("test", Owed(good))
            runs = [(failing, True), (good, False)]
            for gap, refuse in runs if order == "failing first" else runs[::-1]:
                await backfill(feed, gap, api, refuse)
        for item in [queue.get_nowait() for _ in range(queue.qsize())]:
            if isinstance(item, Wire) and item.ack is not None:
                item.ack()  # (the engine loop's, once on disk)
        # (the failing one's window owed, of the symbols that failed: their group's two)
        window = {"start": "2024-07-12T13:59:00+00:00", "end": "2024-07-12T14:00:00+00:00"}
        assert store.load_owed_backfills() == {
            "test": {"windows": [{**window, "symbols": ["AAPL", "SPY"]}]}
        }, order
        assert feed.backfill_error is not None, order


def test_a_backfill_owed_by_a_feed_no_longer_configured_is_said_and_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap owed at the stop by a feed since renamed, removed or left without `rest_url` is
    never fetched: the start says so (`backfill_owed_dropped`, with when its minutes begin)
    and drops it from `backfills_owed.json`; a configured feed's gap is still fetched."""
    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.clock import SimClock
    from monitor.service import Daemon
    from monitor.store import Store
    from tests.conftest import RULES

    stopped = dt.datetime(2024, 7, 16, 15, 0, 5, tzinfo=UTC)
    owed = {name: (stopped - dt.timedelta(minutes=n)).isoformat()
            for n, name in enumerate(("alpaca", "renamed", "plain"), start=1)}  # fmt: skip
    store = Store(tmp_path / "store")
    store.save_owed_backfills(owed)
    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    feed = (
        '[[feeds]]\nname = "{name}"\nkind = "websocket"\nprovider = "alpaca"\n'
        'url = "wss://stream.example.com/v2/iex"\n{rest}symbols = ["AAPL"]\n'
        'key_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'
    )
    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[store]\npath = "{tmp_path / "store"}"\n[rules]\nfile = "{RULES}"\n'
        + feed.format(name="alpaca", rest='rest_url = "https://data.example.com"\n')
        + feed.format(name="plain", rest="")
    )
    conf.chmod(0o600)
    with capture_logs() as events:
        daemon = Daemon(cfg.load(conf), clock=SimClock(stopped + dt.timedelta(minutes=40)))
        daemon.build_feeds()
    dropped = [(e["feed"], e["since"]) for e in events if e["event"] == "backfill_owed_dropped"]
    assert dropped == [("plain", owed["plain"]), ("renamed", owed["renamed"])]
    assert store.load_owed_backfills() == {"alpaca": owed["alpaca"]}
    assert daemon.feeds[0]._gap.start.isoformat() == owed["alpaca"]  # type: ignore[attr-defined]

    with capture_logs() as events:  # (said once: the next start has nothing to say)
        Daemon(cfg.load(conf), clock=SimClock(stopped + dt.timedelta(minutes=50))).build_feeds()
    assert not [e for e in events if e["event"] == "backfill_owed_dropped"]
