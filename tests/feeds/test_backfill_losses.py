"""What a WebSocket feed's backfill lost or hid before: an open gap older than the engine keeps
cut at the reach without a word, and the owed windows of symbols since removed from the config
fetched at the next start; against local Alpaca-like stream and REST servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, MutableMapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.credentials import Secret
from monitor.feeds.owed import Owed
from monitor.feeds.rest import RestBackfill
from monitor.feeds.wire import Wire
from tests.feeds.fake_providers import FakeRest, FakeStream
from tests.feeds.test_backfill_owed import alpaca_servers, asked, until_failed, until_wire
from tests.feeds.test_websocket import ALPACA_TRADES, Clock, make_feed, running, until

if TYPE_CHECKING:
    from monitor.service import Daemon

UTC = dt.UTC
STOPPED = dt.datetime(2024, 7, 12, 14, 10, 30, tzinfo=UTC)  # where the data taken up ends
BACK = dt.datetime(2024, 7, 12, 14, 40, 20, tzinfo=UTC)  # the restart
KEPT_FROM = dt.datetime(2024, 7, 12, 14, 20, tzinfo=UTC)  # (a horizon within the gap)


def daemon_of(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    symbols: tuple[str, ...] = ("AAPL",),
    extended_hours: bool = False,
    stream: str = "wss://stream.example.com/v2/iex",
    rest: str = "https://data.example.com",
    now: dt.datetime = BACK,
) -> Daemon:
    """A daemon (not running) of one Alpaca WebSocket feed, `alpaca`, with a `rest_url`."""
    from monitor import config as cfg
    from monitor.clock import SimClock
    from monitor.service import Daemon
    from tests.conftest import RULES

    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[store]\npath = "{tmp_path / "store"}"\n[rules]\nfile = "{RULES}"\n'
        f"[engine]\nextended_hours = {str(extended_hours).lower()}\n"
        '[[feeds]]\nname = "alpaca"\nkind = "websocket"\nprovider = "alpaca"\n'
        f'url = "{stream}"\nrest_url = "{rest}"\nsymbols = {json.dumps(symbols)}\n'
        'key_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'
    )
    conf.chmod(0o600)
    return Daemon(cfg.load(conf), clock=SimClock(now))


async def restarted_past_the_reach(
    traded: Callable[[dt.datetime, dt.datetime], bool] | None,
) -> tuple[list[tuple[str, str, str]], Counters, list[MutableMapping[str, Any]]]:
    """A restart whose gap (from 14:10:30) began before what the engine keeps (14:20): the
    requests, the counters and the `backfill_given_up` lines."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    counters = Counters()
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, counters, clock=Clock(BACK), rest=rest,
            gap_since=STOPPED, keeps_from=lambda now: KEPT_FROM, traded=traded,
            owe=lambda _: None, settle=lambda _: None,
        )  # fmt: skip
        with capture_logs() as logged:
            async with running(feed):
                await until_wire(queue)
    given_up = [e for e in logged if e["event"] == "backfill_given_up"]
    return asked(api), counters, given_up


async def test_an_open_gap_older_than_the_engine_keeps_is_given_up_out_loud() -> None:
    """The part of the gap before the reach (14:09 to 14:20), never asked for, is given up as
    a failed window's is: counted by symbol (`gap_older_than_kept`) and said once with the
    symbols and the window; the part within reach is fetched for every symbol."""
    requests, counters, given_up = await restarted_past_the_reach(traded=None)
    kept = ("2024-07-12T14:20:00Z", "2024-07-12T14:39:59Z")
    assert requests == [("AAPL", *kept), ("SPY", *kept)]
    assert counters.get("backfill_given_up", feed="test", reason="gap_older_than_kept") == 2
    assert counters.get("backfill_given_up", feed="test", reason="older_than_kept") == 0
    assert [
        (e["log_level"], e["symbols"], e["start"], e["end"], e["kept_from"]) for e in given_up
    ] == [
        (
            "warning",
            "AAPL, SPY",
            "2024-07-12T14:09:00+00:00",
            "2024-07-12T14:20:00+00:00",
            "2024-07-12T14:20:00+00:00",
        )
    ]


async def test_a_cut_that_held_no_session_minutes_is_no_loss() -> None:
    """A gap whose part before the reach held no minute of a session (a night, a weekend:
    `traded` says so) loses nothing: neither counted nor said; the rest is fetched alike."""
    requests, counters, given_up = await restarted_past_the_reach(traded=lambda a, b: False)
    kept = ("2024-07-12T14:20:00Z", "2024-07-12T14:39:59Z")
    assert requests == [("AAPL", *kept), ("SPY", *kept)]
    assert counters.get("backfill_given_up", feed="test", reason="gap_older_than_kept") == 0
    assert given_up == []


def test_the_daemon_says_which_cuts_held_session_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's `traded`, which its WebSocket feeds are given: a cut from Wednesday's
    close to Thursday's open held no minute the engine takes in regular hours, but held
    Wednesday's after-hours with `extended_hours`; a weekend from Friday 20:00 New York to
    Monday 04:00 held none either way; a cut over a whole session held some."""
    from monitor.feeds.websocket import WebSocketFeed

    def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime(2024, 7, day, hour, minute, tzinfo=UTC)

    cuts = [
        (at(10, 20, 4), at(11, 13, 30)),  # Wednesday 16:04 to Thursday 09:30, New York
        (at(13, 0, 4), at(15, 8)),  # Friday 20:04 to Monday 04:00
        (at(11, 14), at(12, 13, 30)),  # Thursday 10:00 to Friday 09:30
    ]
    for extended, held in ((False, [False, False, True]), (True, [True, False, True])):
        daemon = daemon_of(tmp_path, monkeypatch, extended_hours=extended)
        assert [daemon.traded(start, end) for start, end in cuts] == held, extended
        daemon.build_feeds()
        feed = daemon.feeds[0]
        assert isinstance(feed, WebSocketFeed)
        assert feed._gaps._traded == daemon.traded


async def test_a_symbol_removed_from_the_config_is_dropped_from_what_is_owed_not_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows owed at the stop for AAPL and GONE, then a restart whose feed has AAPL only:
    GONE's part is dropped at the start, said once (`backfill_owed_dropped`, naming it) and
    counted (`symbol_removed`, a symbol's window each), gone from `backfills_owed.json`, and
    never asked of the REST API; AAPL's window is fetched and settled."""
    from monitor.store import Store

    window = {"start": "2024-07-12T14:09:00+00:00", "end": "2024-07-12T14:20:00+00:00"}
    alone = {"start": "2024-07-12T13:50:00+00:00", "end": "2024-07-12T13:55:00+00:00"}
    store = Store(tmp_path / "store")
    store.save_owed_backfills(
        {"alpaca": {"windows": [{**window, "symbols": ["AAPL", "GONE"]},
                                {**alone, "symbols": ["GONE"]}]}}
    )  # fmt: skip
    async with alpaca_servers() as (fake, api, _):
        with capture_logs() as logged:
            daemon = daemon_of(tmp_path, monkeypatch, stream=fake.url, rest=api.url)
            daemon.build_feeds()
        dropped = [e for e in logged if e["event"] == "backfill_owed_dropped"]
        assert [(e["feed"], e["symbols"], e["since"]) for e in dropped] == [
            ("alpaca", "GONE", alone["start"])
        ]
        reason = {"feed": "alpaca", "reason": "symbol_removed"}
        assert daemon.counters.get("backfill_given_up", **reason) == 2
        assert store.load_owed_backfills() == {
            "alpaca": {"windows": [{**window, "symbols": ["AAPL"]}]}
        }
        try:
            async with running(daemon.feeds[0]):
                marker = [i for i in await until_wire(daemon.queue) if isinstance(i, Wire)]
        finally:
            for client in daemon.rest_clients:
                await client.aclose()
    assert asked(api) == [("AAPL", "2024-07-12T14:09:00Z", "2024-07-12T14:19:59Z")]
    assert marker[0].ack is not None
    marker[0].ack()
    assert store.load_owed_backfills() == {}

    with capture_logs() as logged:  # (said once: the next start has nothing to drop)
        daemon_of(tmp_path, monkeypatch).build_feeds()
    assert [e for e in logged if e["event"] == "backfill_owed_dropped"] == []


async def test_health_stays_degraded_while_a_failed_window_is_asked_for_again() -> None:
    """AAPL's window since 14:09 failed (the backfill error, /healthz's); the next reconnect
    asks for it again, slowly, and meanwhile another reconnect's backfill of its own gap
    succeeds: the error stays until the failed window is in, then goes (Polygon, whose
    symbols are asked a few at a time: the second backfill is not queued behind the first)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    clock = Clock(dt.datetime(2024, 7, 12, 14, 20, 20, tzinfo=UTC))
    retried = "2024-07-12T14:09:00Z"  # (the failed window's start)
    async with (
        FakeStream("polygon") as fake,
        FakeRest() as api,
        RestBackfill("polygon", api.url, key=Secret("KEY")) as rest,
    ):
        api.fail_symbols["AAPL"] = -1
        feed = make_feed(
            "polygon", fake.url, queue, Counters(), secret=None, clock=clock, rest=rest,
            gap_since=STOPPED, backfill_attempts=1, backfill_retry_s=3600.0,
            owe=lambda _: None, settle=lambda _: None,
        )  # fmt: skip
        async with running(feed):
            await until_failed(feed, queue)
            failed = feed.backfill_error
            assert failed is not None and failed.startswith("from 2024-07-12 14:09Z, 1 symbol")
            api.fail_symbols.clear()
            api.held_starts.add(retried)
            api.requests.clear()
            clock.now = dt.datetime(2024, 7, 12, 14, 25, 20, tzinfo=UTC)
            await fake.drop()
            await until(lambda: any(retried in path for path in paths(api)))
            clock.now = dt.datetime(2024, 7, 12, 14, 30, 20, tzinfo=UTC)
            await fake.drop()
            items = await until_wire(queue)  # (the second reconnect's backfill, done)
            assert [i.minute_bars.height for i in items if isinstance(i, FeedBatch)] != []
            assert feed.backfill_error == failed
            api.released.set()
            await until_wire(queue)
            assert feed.backfill_error is None


def paths(api: FakeRest) -> list[str]:
    """The paths the REST server was asked, Polygon's with their window's start as asked
    (ISO, not epoch milliseconds)."""
    out = []
    for path, _, _ in api.requests:
        pieces = path.split("/")
        if len(pieces) > 8:
            start = dt.datetime.fromtimestamp(int(pieces[8]) / 1000, UTC)
            pieces[8] = start.isoformat().replace("+00:00", "Z")
        out.append("/".join(pieces))
    return out


async def test_windows_owed_from_before_a_start_are_an_error_until_fetched() -> None:
    """A start that owes AAPL's failed window (from `backfills_owed.json`) says so from the
    start (the backfill error, /healthz's), as the stop did, not healthy until the first
    subscription's backfill fails again; once the window is in, the error goes."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    window = Owed(
        dt.datetime(2024, 7, 12, 14, 9, tzinfo=UTC), dt.datetime(2024, 7, 12, 14, 20, tzinfo=UTC),
        ("AAPL",),
    )  # fmt: skip
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=Clock(BACK), rest=rest, owed=[window],
            owe=lambda _: None, settle=lambda _: None,
        )  # fmt: skip
        assert feed.backfill_error == (
            "from 2024-07-12 14:09Z, 1 symbol (AAPL): failed before this start, asked for again"
            " at the first subscription"
        )
        async with running(feed):
            await until_wire(queue)
            assert feed.backfill_error is None
    assert asked(api) == [("AAPL", "2024-07-12T14:09:00Z", "2024-07-12T14:19:59Z")]


class CrashOnce(list[Any]):
    """Feed events, as the daemon's callback takes them, but the first trading status
    raises (a bug in the callback: the feed crashes, and its supervisor starts it again)."""

    def append(self, event: Any) -> None:
        if event.kind == "trading_status" and not self:
            super().append(event)
            raise RuntimeError("a bug")
        super().append(event)


@pytest.mark.parametrize("in_flight", [False, True])
async def test_a_feed_started_again_after_a_crash_backfills_what_it_missed(
    in_flight: bool,
) -> None:
    """The feed crashes at 14:31:20, its data last at 14:31:20, and is run again (as its
    supervisor does) at 14:33:20: its first subscription fetches what the crash cut off, from
    14:30 (the minute before the data stopped), and, had the crash cancelled the backfill of
    a gap before (from 14:10:30, a restart's), that gap too. It used to fetch neither: no
    connection was lost, so no gap was opened, and the cancelled one was forgotten."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    clock = Clock(dt.datetime(2024, 7, 12, 14, 31, 20, tzinfo=UTC))
    halt = {"T": "s", "S": "AAPL", "sc": "H", "sm": "Trading Halt", "rc": "T12",
            "rm": "Info Requested", "t": "2024-07-12T14:31:00Z", "z": "C"}  # fmt: skip
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest,
            gap_since=STOPPED if in_flight else None, events=CrashOnce(),
            owe=lambda _: None, settle=lambda _: None,
        )  # fmt: skip
        api.answering.clear()  # (a backfill under way at the crash, if any)
        stop = asyncio.Event()
        crashed = asyncio.create_task(feed.run(stop))
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        if in_flight:
            await until(lambda: len(api.requests) > 0)
        await fake.push(ALPACA_TRADES)
        await asyncio.wait_for(queue.get(), 5)
        await fake.push([halt])
        with pytest.raises(ExceptionGroup):
            await asyncio.wait_for(crashed, 5)
        api.answering.set()
        api.requests.clear()
        clock.now = dt.datetime(2024, 7, 12, 14, 33, 20, tzinfo=UTC)
        async with running(feed):
            await until_wire(queue)
    start = "2024-07-12T14:09:00Z" if in_flight else "2024-07-12T14:30:00Z"
    assert asked(api) == [(s, start, "2024-07-12T14:32:59Z") for s in ("AAPL", "SPY")]


async def test_a_delayed_feed_stopped_owes_from_where_its_data_ends(tmp_path: Path) -> None:
    """A 15-minute delayed stream (Alpaca's delayed_sip) has sent data up to 14:15:10 when
    the daemon stops at 14:30:20: the store owes its gap from there, and the next start
    (whose saved clock says 14:30:20) backfills from 14:14, not from 14:29, which lost the
    minutes 14:15 to 14:29 for good (the stream, back, goes on from 15 minutes before its
    clock)."""
    from monitor import logs
    from monitor.owed_backfills import OwedBackfills
    from monitor.store import Store

    store = Store(tmp_path / "store")
    owed = OwedBackfills(store, logs.get("test"))
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stopped = dt.datetime(2024, 7, 11, 14, 30, 20, tzinfo=UTC)
    clock = Clock(stopped)
    trade = {**ALPACA_TRADES[0], "t": "2024-07-11T14:15:10Z"}
    async with alpaca_servers() as (fake, api, rest):
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest,
            owe=partial(owed.owe, "test"), settle=partial(owed.settle, "test"),
        )  # fmt: skip
        async with running(feed):
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.push([trade])
            await asyncio.wait_for(queue.get(), 5)
        assert store.load_owed_backfills() == {"test": "2024-07-11T14:15:10+00:00"}

        while not queue.empty():  # (a new daemon's queue: what the stopped one left is gone)
            queue.get_nowait()
        restarted = OwedBackfills(store, logs.get("test"))
        since, _ = restarted.take("test")
        assert since is not None
        clock.now = dt.datetime(2024, 7, 11, 14, 35, 20, tzinfo=UTC)
        feed = make_feed(
            "alpaca", fake.url, queue, Counters(), clock=clock, rest=rest,
            gap_since=min(stopped, since),  # (as the daemon: the earlier of its saved clock)
            owe=partial(restarted.owe, "test"), settle=partial(restarted.settle, "test"),
        )  # fmt: skip
        async with running(feed):
            await until_wire(queue)
    assert asked(api) == [
        (s, "2024-07-11T14:14:00Z", "2024-07-11T14:34:59Z") for s in ("AAPL", "SPY")
    ]


def test_every_reason_a_backfill_is_given_up_for_is_in_the_readme() -> None:
    """Each `backfill_given_up` reason the feeds count is named in the README, with its label."""
    from monitor.feeds.owed import GIVEN_UP
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    assert [r for r in GIVEN_UP if f'reason="{r}"' not in readme] == []
