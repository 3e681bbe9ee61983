"""The engine loop's close clock: a backlog that comes in many micro-batches closes its minutes
when their ticks are in (the same bars and minute alerts as one batch, no late ticks), and a
feed's hold on it ends when it catches up, goes quiet, or has held for `catch_up_hold_s`."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Sequence

import msgspec
import polars as pl
from structlog.testing import capture_logs

from monitor.clock import SimClock
from monitor.close_clock import CloseClock
from monitor.core.counters import Counters
from monitor.core.engine import Engine
from monitor.core.model import Alert, FeedBatch
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions
from monitor.feeds.generic import decode_generic_many
from monitor.feeds.wire import Wire
from monitor.pipeline import Pipeline

START = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)  # 10:00 New York, a Tuesday
BACKLOG_MIN = 20
WALL = START + dt.timedelta(minutes=BACKLOG_MIN + 25)  # the daemon takes the backlog in then
DELAY = dt.timedelta(seconds=2)  # (the bar builder's close delay)
RULES = msgspec.json.decode(
    b'{"rules": ['
    b'{"id": "m.surge", "kind": "surge", "timeframe": "1m", "window": 3, "min_return": 0.004,'
    b' "universe": true},'
    b'{"id": "m.streak", "kind": "streak", "timeframe": "1m", "count": 3, "min_return": 0.0005,'
    b' "universe": true}'
    b"]}",
    type=RulesFile,
)


class TickingClock:
    """The wall clock at WALL, a millisecond later at every read (a step reads it twice)."""

    def __init__(self, start: dt.datetime = WALL) -> None:
        self.at = start

    def now(self) -> dt.datetime:
        self.at += dt.timedelta(milliseconds=1)
        return self.at


def backlog() -> list[bytes]:
    """BACKLOG_MIN minutes of trades of three symbols from START, random walks in time order,
    as a feed's JSON messages."""
    rng = random.Random(7)
    prices = {"AAA": 10.0, "BBB": 20.0, "CCC": 5.0}
    messages: list[tuple[int, bytes]] = []
    for symbol in prices:
        first = int(START.timestamp() * 1000)
        times = sorted(first + rng.randrange(BACKLOG_MIN * 60_000) for _ in range(40 * BACKLOG_MIN))
        for i, ms in enumerate(times):
            prices[symbol] *= 1 + rng.gauss(0.0001, 0.001)
            message = {"symbol": symbol, "ts": ms, "price": round(prices[symbol], 4), "size": 100,
                       "id": f"{symbol}-{i}"}  # fmt: skip
            messages.append((ms, msgspec.json.encode(message)))
    return [m for _, m in sorted(messages, key=lambda m: m[0])]


async def taken_in(
    sessions: Sessions, wires: list[Wire], batch_max_rows: int, hold_s: float | None = None
) -> tuple[Engine, pl.DataFrame, list[Alert]]:
    """The engine loop (the daemon's engine: minute rules a minute at a time) over `wires`,
    then a step a minute later with nothing coming: the engine, every minute bar it emitted
    (the last version of each) and its alerts."""
    engine = Engine(RULES, sessions, minute_by_minute=True)
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    for wire in wires:
        queue.put_nowait(wire)
    alerts: list[Alert] = []
    bars: list[pl.DataFrame] = []
    options = {} if hold_s is None else {"catch_up_hold_s": hold_s}
    pipeline = Pipeline(
        engine,
        queue,
        clock=TickingClock(),
        counters=Counters(),
        sinks=[alerts.extend],
        decoders={"mqtt": lambda payloads: decode_generic_many(payloads, feed="mqtt")},
        batch_max_rows=batch_max_rows,
        on_step=lambda step: bars.append(step.minute_bars),
        **options,  # type: ignore[arg-type]
    )
    done = asyncio.Event()
    done.set()  # feeds done and stop asked: drain the queue, then return
    await asyncio.wait_for(pipeline.run(done, done), 60)
    last = engine.advance(WALL + dt.timedelta(minutes=1))  # (the feed went quiet: all close)
    alerts += last.alerts
    bars.append(last.minute_bars)
    emitted = pl.concat(bars).unique(["symbol", "start"], keep="last").sort("symbol", "start")
    return engine, emitted, alerts


def said(alerts: Sequence[Alert]) -> list[tuple[str, str, dict[str, object]]]:
    return sorted((a.id, a.ts, dict(a.metrics)) for a in alerts)


async def test_a_backlog_in_many_batches_closes_minutes_as_one_batch_does(
    sessions: Sessions,
) -> None:
    """Twenty minutes of trades taken in 25 messages a batch, 25 minutes late: the same
    minute bars and the same minute alerts (ids, times, metrics) as the whole backlog in one
    batch, and not one late tick (each batch used to close every minute to the wall clock,
    and the rest of the backlog came as late ticks correcting bars the rules had fired on)."""
    messages = backlog()
    one_engine, one_bars, one_alerts = await taken_in(
        sessions, [Wire("mqtt", messages)], batch_max_rows=len(messages)
    )
    wires = [Wire("mqtt", [m]) for m in messages]
    many_engine, many_bars, many_alerts = await taken_in(sessions, wires, batch_max_rows=25)
    assert one_alerts, "the rules fire on the backlog"
    assert one_bars.height == 3 * BACKLOG_MIN
    assert many_engine.book_counts() == one_engine.book_counts() == {}
    assert many_bars.to_dicts() == one_bars.to_dicts()
    assert said(many_alerts) == said(one_alerts)


async def test_with_no_hold_the_backlog_comes_late(sessions: Sessions) -> None:
    """`catch_up_hold_s = 0`: each batch closes the minutes to the wall clock, as before, and
    the rest of the backlog corrects them (the close clock is what the test above shows)."""
    messages = backlog()
    wires = [Wire("mqtt", [m]) for m in messages]
    engine, _, _ = await taken_in(sessions, wires, batch_max_rows=25, hold_s=0)
    assert engine.book_counts()["late_tick_corrected"] > 0


MIN = dt.timedelta(minutes=1)
S = dt.timedelta(seconds=1)


def test_a_feed_catching_up_holds_the_clock_until_it_catches_up() -> None:
    """A feed 30 minutes behind holds the close clock at its newest data, batch after batch,
    and releases it when its data is live: one line when the hold starts, one when it ends."""
    clock = CloseClock(hold_max_s=60)
    with capture_logs() as logs:
        clock.delivered("mqtt", 0.0, WALL - 30 * MIN)
        first = clock.close_at(WALL, 0.0, DELAY)
        clock.delivered("mqtt", 1.0, WALL - 20 * MIN)
        second = clock.close_at(WALL + S, 1.0, DELAY)
        clock.delivered("mqtt", 2.0, WALL + S)
        third = clock.close_at(WALL + 2 * S, 2.0, DELAY)
    assert (first, second, third) == (WALL - 30 * MIN, WALL - 20 * MIN, None)
    assert [(e["event"], e["feed"], e.get("why")) for e in logs] == [
        ("close_clock_held", "mqtt", None),
        ("close_clock_released", "mqtt", "caught_up"),
    ]
    assert (logs[0]["behind_s"], logs[1]["held_s"]) == (1800.0, 2.0)


def test_a_quiet_feed_releases_the_clock() -> None:
    """A feed behind that delivers nothing for `quiet_s` real seconds (its backlog drained,
    the market quiet) no longer holds the clock, whatever the engine's clock says (a
    simulated one stands still)."""
    clock = CloseClock(hold_max_s=60, quiet_s=2)
    clock.delivered("mqtt", 10.0, WALL - 30 * MIN)
    assert clock.close_at(WALL, 12.0, DELAY) == WALL - 30 * MIN
    with capture_logs() as logs:
        assert clock.close_at(WALL, 12.5, DELAY) is None
    assert [(e["event"], e["why"]) for e in logs] == [("close_clock_released", "quiet")]


def test_a_feed_always_behind_holds_only_until_the_bound_then_not_again() -> None:
    """A feed 15 minutes delayed for good holds the clock `hold_max_s`, then releases it and
    holds it no more while it keeps delivering delayed data; quiet, then back, it may again.
    Another feed catching up meanwhile still holds it."""
    clock = CloseClock(hold_max_s=10)
    behind = 15 * MIN
    got: list[dt.datetime | None] = []
    with capture_logs() as logs:
        for s in range(14):
            clock.delivered("delayed", float(s), WALL + s * S - behind)
            got.append(clock.close_at(WALL + s * S, float(s), DELAY))
        now = WALL + 14 * S
        clock.delivered("delayed", 14.0, now - behind)
        clock.delivered("other", 14.0, now - 40 * MIN)
        with_other = clock.close_at(now, 14.0, DELAY)
        quiet = WALL + 30 * S
        clock.close_at(quiet, 30.0, DELAY)
        clock.delivered("delayed", 30.0, quiet - behind)
        again = clock.close_at(quiet, 30.0, DELAY)
    assert got == [WALL + s * S - behind for s in range(11)] + [None] * 3
    assert with_other == now - 40 * MIN
    assert again == quiet - behind
    assert [(e["event"], e["feed"], e.get("why")) for e in logs] == [
        ("close_clock_held", "delayed", None),
        ("close_clock_released", "delayed", "bound"),
        ("close_clock_held", "other", None),
        ("close_clock_released", "other", "quiet"),
        ("close_clock_held", "delayed", None),
    ]


def test_a_minute_a_feed_awaits_the_providers_bar_of_stays_open_until_it_is_in() -> None:
    """A feed back at WALL+20 s awaits the provider's bar of WALL's minute: nothing held until
    that minute would close (WALL+62 s), then the clock stays just short of its close, until
    the feed no longer awaits it (one line each); a second minute awaited is held at most
    `hold_max_s` from when it would have closed, then released and not held again; and a
    minute the close clock closed already is not held."""
    clock = CloseClock(hold_max_s=10)
    minute = WALL.replace(second=0, microsecond=0)
    closes = minute + MIN + DELAY
    waits = {"ws": minute}
    with capture_logs() as logs:
        early = clock.close_at(minute + 40 * S, 0.0, DELAY, awaiting=waits)
        held = [clock.close_at(closes + n * S, float(n), DELAY, awaiting=waits) for n in (0, 9)]
        done = clock.close_at(closes + 12 * S, 12.0, DELAY, awaiting={})
        later = {"ws": minute + MIN}
        bound = [
            clock.close_at(closes + (60 + n) * S, 40.0 + n, DELAY, awaiting=later)
            for n in (0, 10, 11, 12)
        ]
        closed = {"ws": minute + 2 * MIN}
        past = clock.close_at(closes + 180 * S, 60.0, DELAY, closes + 180 * S, awaiting=closed)
    just_short = closes - dt.timedelta(microseconds=1)
    assert (early, held, done) == (None, [just_short, just_short], None)
    assert bound == [just_short + MIN, just_short + MIN, None, None]
    assert past is None
    assert [(e["event"], e["feed"], e.get("why"), e["minute"]) for e in logs] == [
        ("close_clock_held", "ws", None, minute.isoformat()),
        ("close_clock_released", "ws", "no_longer_awaited", minute.isoformat()),
        ("close_clock_held", "ws", None, (minute + MIN).isoformat()),
        ("close_clock_released", "ws", "bound", (minute + MIN).isoformat()),
    ]
    assert (logs[0]["behind_s"], logs[1]["held_s"], logs[3]["held_s"]) == (0.0, 12.0, 11.0)


def test_a_feed_a_few_seconds_behind_does_not_hold() -> None:
    """Live data a few seconds old (within the close delay and the slack) holds nothing."""
    clock = CloseClock()
    clock.delivered("mqtt", 0.0, WALL - 6 * S)
    assert clock.close_at(WALL, 0.0, DELAY) is None


async def test_a_backlog_that_stops_coming_closes_its_last_minute(sessions: Sessions) -> None:
    """The engine's clock standing still 25 minutes past a backlog (a simulated one, as the
    daemon's replay feed's once its data is out): the last minute stays open while the feed
    delivers, and closes, whole, once the feed has been quiet for a couple of real seconds."""
    messages = backlog()
    engine = Engine(RULES, sessions, minute_by_minute=True)
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    pipeline = Pipeline(
        engine,
        queue,
        clock=SimClock(WALL),
        counters=Counters(),
        sinks=[],
        decoders={"mqtt": lambda payloads: decode_generic_many(payloads, feed="mqtt")},
        batch_max_rows=100,  # (a batch a Wire)
    )
    stop, done = asyncio.Event(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(pipeline.run(stop, done))
        for i in range(0, len(messages), 100):
            queue.put_nowait(Wire("mqtt", messages[i : i + 100]))
        async with asyncio.timeout(30):
            while engine.minutes.height < 3 * BACKLOG_MIN:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        stop.set()
        done.set()
        await asyncio.wait_for(task, 10)
    assert engine.book_counts() == {}
    assert engine.minutes.get_column("volume").sum() == 100.0 * len(messages)
    events = [(e["event"], e.get("why")) for e in logs if e["event"].startswith("close_clock")]
    assert events == [("close_clock_held", None), ("close_clock_released", "quiet")]


async def test_a_delayed_feed_quiet_between_its_ticks_holds_the_clock_once(
    sessions: Sessions,
) -> None:
    """A feed 15 minutes delayed for good whose ticks come a few seconds apart (quiet between
    them): its first delivery holds the clock, and once released (quiet) it holds it no more,
    its data being in minutes closed already. (Each tick after a quiet spell held the clock
    again, for nothing, with two info lines: a line a tick, the other feeds' minutes kept open
    meanwhile.)"""
    engine = Engine(RULES, sessions, minute_by_minute=True)
    clock = SimClock(WALL)
    pipeline = Pipeline(
        engine,
        asyncio.Queue(),
        clock=clock,
        counters=Counters(),
        sinks=[],
        decoders={"mqtt": lambda payloads: decode_generic_many(payloads, feed="mqtt")},
    )
    pipeline.close_clock.quiet_s = 0.01  # (the ticks come a few real seconds apart)
    with capture_logs() as logs:
        for i in range(6):
            now = WALL + i * 5 * S
            clock.set(now)
            ms = int((now - 15 * MIN).timestamp() * 1000)
            tick = {"symbol": "AAA", "ts": ms, "price": 10.0, "size": 100, "id": f"t{i}"}
            await pipeline._process([Wire("mqtt", [msgspec.json.encode(tick)])])
            await asyncio.sleep(0.05)  # (quiet)
            clock.set(now + S)
            await pipeline._process([])  # (an idle step)
    events = [(e["event"], e.get("why")) for e in logs if e["event"].startswith("close_clock")]
    assert events == [("close_clock_held", None), ("close_clock_released", "quiet")]
    assert engine.closes_at == WALL + 26 * S


def test_a_start_holds_the_restored_clock_until_a_feed_delivers_or_the_bound() -> None:
    """At a start, the close clock saved at the stop stays there through the idle steps
    before the first delivery (a broker's backlog comes once its feed has connected), until
    a feed delivers (its own hold then, or none), every feed has subscribed and `quiet_s`
    passed with nothing delivered, or `hold_max_s` without any delivery."""
    saved = WALL - 30 * MIN
    clock = CloseClock(hold_max_s=60)
    clock.starting(saved, 0.0)
    with capture_logs() as logs:
        idle = [clock.close_at(WALL + s * S, float(s), DELAY, saved) for s in range(5)]
        clock.delivered("mqtt", 5.0, saved + 10 * S)
        backlog = clock.close_at(WALL + 5 * S, 5.0, DELAY, saved)
    assert idle == [saved] * 5
    assert backlog == saved + 10 * S
    assert [(e["event"], e["feed"], e.get("why")) for e in logs] == [
        ("close_clock_held", None, None),
        ("close_clock_released", None, "delivered"),
        ("close_clock_held", "mqtt", None),
    ]
    unheard = CloseClock(hold_max_s=60)
    unheard.starting(saved, 0.0)
    assert unheard.close_at(WALL, 60.0, DELAY, saved) == saved
    assert unheard.close_at(WALL, 61.0, DELAY, saved) is None
    live = CloseClock(hold_max_s=60)
    live.starting(WALL - 3 * S, 0.0)  # (stopped a moment ago: nothing to hold)
    assert live.close_at(WALL, 1.0, DELAY, WALL - 3 * S) is None
    subscribed = CloseClock(hold_max_s=60, quiet_s=2)
    subscribed.starting(saved, 0.0)
    assert subscribed.close_at(WALL, 5.0, DELAY, saved) == saved  # (connecting)
    subscribed.ready(6.0)
    assert subscribed.close_at(WALL, 8.0, DELAY, saved) == saved
    with capture_logs() as logs:
        assert subscribed.close_at(WALL, 8.5, DELAY, saved) is None
    assert [(e["event"], e["why"]) for e in logs] == [("close_clock_released", "quiet")]


def test_a_feed_that_lost_its_connection_holds_the_clock_until_back_and_caught_up() -> None:
    """A live feed that loses its connection (its data up to WALL) holds the close clock
    there while it is down (its broker queues what it misses: a persistent session), and
    through the backlog it delivers once back, until its data are live again. (The idle steps
    of the outage closed its minutes by the wall clock: the whole queue came late.) An outage
    longer than `hold_max_s` is released by the bound."""
    clock = CloseClock(hold_max_s=60, quiet_s=2)
    clock.delivered("mqtt", 0.0, WALL)
    assert clock.close_at(WALL + S, 0.5, DELAY, WALL + S) is None  # (live)
    down = frozenset({"mqtt"})
    with capture_logs() as logs:
        outage = {clock.close_at(WALL + s * S, float(s), DELAY, WALL + S, down) for s in range(40)}
        back = clock.close_at(WALL + 41 * S, 41.0, DELAY, WALL + S)  # (its queue not in yet)
        clock.delivered("mqtt", 41.5, WALL + 20 * S)
        backlog = clock.close_at(WALL + 42 * S, 41.5, DELAY, WALL + S)
        clock.delivered("mqtt", 42.0, WALL + 42 * S)
        live = clock.close_at(WALL + 42 * S, 42.0, DELAY, WALL + S)
    assert (outage, back, backlog, live) == ({WALL}, WALL, WALL + 20 * S, None)
    assert [(e["event"], e.get("why"), e["log_level"]) for e in logs] == [
        ("close_clock_held", None, "info"),
        ("close_clock_released", "caught_up", "info"),
    ]
    long = CloseClock(hold_max_s=60, quiet_s=2)
    long.delivered("mqtt", 0.0, WALL)
    held = [long.close_at(WALL + s * S, float(s), DELAY, WALL, down) for s in (1, 30, 61)]
    assert held == [WALL, WALL, WALL]
    assert long.close_at(WALL + 62 * S, 62.0, DELAY, WALL, down) is None


def test_a_sessions_last_minute_is_held_from_when_it_closes_with_the_session(
    sessions: Sessions,
) -> None:
    """The daemon's bar builder closes a session's last minute (15:59) with the session's bar,
    10 s after the close: a feed awaiting the provider's bar of it holds nothing before then,
    and from then holds the clock just short of it (before, held from 2 s after the close;
    judged by the minute's 2 s, it was taken as closed already 5 s after the close and never
    held); and a feed catching up on a backlog of it, 5 s after the close, holds the clock
    (it was taken as in minutes closed already)."""
    from monitor.core.bars import BarBook

    book = BarBook(sessions, session_close_delay_s=10)
    close = sessions.close_of(dt.date(2024, 7, 16))
    last = close - MIN
    clock = CloseClock()
    waits = {"ws": last}
    just_short = close + 10 * S - dt.timedelta(microseconds=1)
    # (the step's clock, and the close clock of the step before: the hold's from 10 s on)
    steps = [(5, close + 4 * S), (9, close + 8 * S), (10, close + 9 * S), (30, just_short)]
    held = [
        clock.close_at(
            close + n * S, float(n), DELAY, at, awaiting=waits, closes=book.minute_closes_at
        )
        for n, at in steps
    ]
    assert held == [None, None, just_short, just_short]
    behind = CloseClock()
    behind.delivered("mqtt", 0.0, last + S)  # (15:59:01, a minute behind, still coming)
    hold = behind.close_at(close + 5 * S, 0.5, DELAY, close + 4 * S, closes=book.minute_closes_at)
    assert hold == last + S
