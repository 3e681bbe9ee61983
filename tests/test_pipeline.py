"""The engine loop with raw Wires: decoded many at once, acknowledged only after processing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from monitor import logs
from monitor.clock import SimClock
from monitor.core.counters import Counters
from monitor.core.engine import Engine, Step
from monitor.core.model import Alert, FeedBatch
from monitor.core.rules.spec import RulesFile
from monitor.core.sessions import Sessions
from monitor.feeds.generic import decode_generic_many
from monitor.feeds.wire import Wire
from monitor.intraday import Intraday
from monitor.journal import Journal
from monitor.pipeline import Pipeline
from monitor.store import Store
from tests.test_journal import full_disk

NOW = dt.datetime(2024, 7, 16, 14, 0, 30, tzinfo=dt.UTC)


def tick(i: int) -> bytes:
    ts = int(NOW.timestamp() * 1000) - 1000 + i
    return msgspec.json.encode({"symbol": "ACME", "ts": ts, "price": 10.0, "size": 1, "id": i})


async def run_pipeline(
    sessions: Sessions, items: list[FeedBatch | Wire], counters: Counters, **kwargs: object
) -> list[Step]:
    """Put `items` on the queue and run the loop until it has drained them."""
    steps: list[Step] = []
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    pipeline = Pipeline(
        Engine(RulesFile(), sessions),
        queue,
        clock=SimClock(NOW),
        counters=counters,
        sinks=[],
        decoders={"raw": lambda payloads: decode_generic_many(payloads, feed="raw")},
        on_step=steps.append,
        **kwargs,  # type: ignore[arg-type]
    )
    done = asyncio.Event()
    done.set()  # feeds done and stop asked: drain the queue, then return
    await asyncio.wait_for(pipeline.run(done, done), 10)
    return steps


async def drained(
    engine: Engine, items: list[FeedBatch | Wire], counters: Counters, now: dt.datetime = NOW
) -> list[dict[str, Any]]:
    """Run the engine loop over `engine` at `now` until it has drained `items`: what it
    logged."""
    from structlog.testing import capture_logs

    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    pipeline = Pipeline(
        engine, queue, clock=SimClock(now), counters=counters, sinks=[], decoders={}
    )
    done = asyncio.Event()
    done.set()  # feeds done and stop asked: drain the queue, then return
    with capture_logs() as logs:
        await asyncio.wait_for(pipeline.run(done, done), 10)
    return logs


async def test_a_wire_is_acknowledged_once_after_its_ticks_were_processed(
    sessions: Sessions,
) -> None:
    """Each Wire's ack runs once, after the engine step that took its ticks in."""
    counters = Counters()
    ticks_in_at_ack: list[float] = []

    def ack() -> None:
        ticks_in_at_ack.append(counters.total("ticks_in"))

    wires: list[FeedBatch | Wire] = [
        Wire("raw", [tick(0), tick(1), tick(2)], ack),
        Wire("raw", [tick(3)], ack),
    ]
    steps = await run_pipeline(sessions, wires, counters)
    assert (len(steps), ticks_in_at_ack) == (1, [4.0, 4.0])  # one step, then both acks


async def test_batch_max_rows_counts_the_messages_in_wires(sessions: Sessions) -> None:
    """A micro-batch stops taking Wires once it holds batch_max_rows messages."""
    wires: list[FeedBatch | Wire] = [
        Wire("raw", [tick(3 * w + i) for i in range(3)]) for w in range(3)
    ]
    counters = Counters()
    steps = await run_pipeline(sessions, wires, counters, batch_max_rows=5)
    assert counters.total("ticks_in") == 9
    assert len(steps) == 2  # 3 + 3 messages, then 3


async def test_bar_builder_events_reach_the_metrics(sessions: Sessions) -> None:
    """What the bar builder counts (here a late tick corrected) is exported as bar_events."""
    late = msgspec.json.encode(
        {"symbol": "ACME", "ts": int(NOW.timestamp() * 1000) - 120_000, "price": 10.5, "size": 1}
    )
    counters = Counters()
    first: list[FeedBatch | Wire] = [Wire("raw", [tick(0)])]
    await run_pipeline(sessions, first, counters)
    assert counters.total("bar_events") == 0
    engine = Engine(RulesFile(), sessions)
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    pipeline = Pipeline(
        engine,
        queue,
        clock=SimClock(NOW),
        counters=counters,
        sinks=[],
        decoders={"raw": lambda payloads: decode_generic_many(payloads, feed="raw")},
    )
    done = asyncio.Event()
    done.set()
    for payload in (late, tick(1), late.replace(b"10.5", b"10.6")):
        queue.put_nowait(Wire("raw", [payload]))
        await asyncio.wait_for(pipeline.run(done, done), 10)
    assert engine.book_counts().get("late_tick_corrected", 0) >= 1
    assert (
        counters.get("bar_events", kind="late_tick_corrected")
        == engine.book_counts()["late_tick_corrected"]
    )


async def test_a_withdrawn_wire_is_neither_processed_nor_acknowledged(sessions: Sessions) -> None:
    """A Wire whose claim fails (its feed withdrew it at shutdown) is left alone: its ticks are
    not taken in and its ack never runs; the claimed Wire beside it is processed and acked."""
    counters = Counters()
    acked: list[str] = []
    wires: list[FeedBatch | Wire] = [
        Wire("raw", [tick(0), tick(1)], lambda: acked.append("kept"), lambda: True),
        Wire("raw", [tick(2)], lambda: acked.append("withdrawn"), lambda: False),
    ]
    await run_pipeline(sessions, wires, counters)
    assert (counters.total("ticks_in"), acked) == (2.0, ["kept"])


def stamped(symbol: str, ts_ms: int) -> FeedBatch:
    """One tick of `symbol` at `ts_ms`, decoded as a feed would."""
    payload = {"symbol": symbol, "ts": ts_ms, "price": 10.0, "size": 1}
    return decode_generic_many([msgspec.json.encode(payload)], feed="raw")


async def test_feed_lag_comes_from_accepted_ticks_and_minute_bars_only(
    sessions: Sessions,
) -> None:
    """Rejected ticks (dated 1969, a bad_timestamp, or 2100, outside any session) leave
    feed_lag_seconds alone, in a step of their own or beside an accepted tick of another
    symbol; an accepted minute bar counts from its end."""
    now_ms = int(NOW.timestamp() * 1000)
    year_2100_ms = int(dt.datetime(2100, 1, 4, 15, tzinfo=dt.UTC).timestamp() * 1000)
    bar = {"symbol": "BAR", "timeframe": "1m", "start": now_ms - 90_000, "open": 10.0,
           "high": 10.0, "low": 10.0, "close": 10.0, "volume": 5}  # fmt: skip
    steps: list[list[FeedBatch]] = [
        [stamped("ACME", now_ms - 2_000)],
        [stamped("ACME", -1)],
        [stamped("ACME", year_2100_ms)],
        [stamped("OLD", -1), stamped("NEW", now_ms - 1_000), stamped("FUTURE", year_2100_ms)],
        [decode_generic_many([msgspec.json.encode(bar)], feed="raw")],
    ]
    counters = Counters()
    lags = []
    for batches in steps:
        await run_pipeline(sessions, [*batches], counters)
        lags.append(counters.get("feed_lag_seconds"))
    assert counters.get("rejections", reason="outside_session") == 2
    assert counters.get("rejections", reason="bad_timestamp") == 2
    assert lags == [2.0, 2.0, 2.0, 1.0, 30.0]


async def test_feed_lag_grows_while_nothing_arrives(sessions: Sessions) -> None:
    """The lag is the clock minus the newest tick yet, at every step: after the ticks stop it
    grows (it stayed at the last tick's 2 s, and an alert on it never fired); a tick older than
    the newest does not bring it back."""
    now_ms = int(NOW.timestamp() * 1000)
    counters, clock = Counters(), SimClock(NOW)
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    pipeline = Pipeline(
        Engine(RulesFile(), sessions),
        queue,
        clock=clock,
        counters=counters,
        sinks=[],
        decoders={"raw": lambda payloads: decode_generic_many(payloads, feed="raw")},
    )
    lags = []
    for seconds_later, batch in [
        (0, [stamped("ACME", now_ms - 2_000)]),
        (60, []),
        (120, [stamped("ACME", now_ms - 30_000)]),  # (late: older than the newest)
    ]:
        clock.set(NOW + dt.timedelta(seconds=seconds_later))
        await pipeline._process([*batch])
        lags.append(counters.get("feed_lag_seconds"))
    assert lags == [2.0, 62.0, 122.0]


async def test_a_rejection_a_feed_logged_is_counted_again_but_logged_once(
    sessions: Sessions,
) -> None:
    """A bad message a WebSocket feed decoded (and logged, with its name) is counted in the
    daemon's `rejections` too, but gives one `tick_rejected` line, not two."""
    from structlog.testing import capture_logs

    from monitor import logs
    from monitor.feeds.generic import decode_generic
    from monitor.feeds.rejections import RejectionLog
    from monitor.feeds.wire import hand_on

    counters = Counters()
    feed_log = RejectionLog(
        logs.get("feed.websocket").bind(feed="ws"),
        counters,
        counter="feed_rejections",
        interval_s=10,
        clock=lambda: 0.0,
        feed="ws",
    )
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    with capture_logs() as logged:
        await hand_on(decode_generic(b"{not json", feed="ws"), queue, counters, feed_log, "ws")
        await run_pipeline(sessions, [queue.get_nowait()], counters)
    lines = [(e.get("feed", ""), e["reason"]) for e in logged if e["event"] == "tick_rejected"]
    assert lines == [("ws", "malformed_json")]
    assert (counters.total("feed_rejections"), counters.total("rejections")) == (1, 1)


async def test_session_bars_stored_as_corrections_are_logged(sessions: Sessions) -> None:
    """A session bar for a day already evaluated (a feed sending late, or out of order) fires
    nothing: the daemon says so in one `daily_bars_corrected` warning with the count, besides
    `bar_events{kind="daily_bar_corrected"}`."""

    from monitor.cli import load_rules
    from monitor.datafiles import DataSpec, read_daily
    from monitor.replay import build_engine
    from tests.conftest import RULES, RUT

    bars = read_daily(DataSpec(path=str(RUT), symbol="^RUT"), end=dt.date(2024, 7, 15)).bars
    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    engine.ingest_daily(bars)
    engine.advance(sessions.close_of(dt.date(2024, 7, 15)))
    late = FeedBatch.empty("t")
    # 07-12 and 07-15: the last day evaluated is evaluated again; 07-12's is a correction
    revised = pl.col("close") * 1.01
    late.daily_bars = bars.tail(2).with_columns(revised, pl.max_horizontal("high", revised))
    counters = Counters()
    logs = await drained(engine, [late], counters)
    said = [(e["bars"], e["log_level"]) for e in logs if e["event"] == "daily_bars_corrected"]
    assert said == [(1, "warning")]
    assert counters.get("bar_events", kind="daily_bar_corrected") == 1


async def test_the_rest_of_a_burst_is_logged_within_the_interval_not_at_the_stop(
    sessions: Sessions,
) -> None:
    """A burst of rejections, then of session bars stored as corrections, each in two steps
    within the log interval: the first step's are said at once, the second's once the interval
    has passed, while the daemon runs on with nothing more coming. Before, those of the second
    step waited for the next of their kind (a tick_rejected line said 20 of 200 bad prices)
    or for the stop (the corrections' never)."""
    from structlog.testing import capture_logs

    from monitor.cli import load_rules
    from monitor.datafiles import DataSpec, read_daily
    from monitor.replay import build_engine
    from tests.conftest import RULES, RUT

    bars = read_daily(DataSpec(path=str(RUT), symbol="^RUT"), end=dt.date(2024, 7, 15)).bars
    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    engine.ingest_daily(bars)
    engine.advance(sessions.close_of(dt.date(2024, 7, 15)))

    def bad(n: int) -> Wire:
        ts = int(NOW.timestamp() * 1000)
        return Wire("raw", [msgspec.json.encode({"symbol": "ACME", "ts": ts, "price": -1})] * n)

    def corrected(days: slice) -> FeedBatch:
        late = FeedBatch.empty("t")  # (sessions before 07-15, evaluated already)
        late.daily_bars = bars[days].with_columns(pl.col("close", "high") * 1.01)
        return late

    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    stepped = asyncio.Event()
    pipeline = Pipeline(
        engine, queue, clock=SimClock(NOW), counters=Counters(), sinks=[],
        decoders={"raw": lambda payloads: decode_generic_many(payloads, feed="raw")},
        on_step=lambda step: stepped.set(), log_every_s=0.5,
    )  # fmt: skip
    feeds_done, stop = asyncio.Event(), asyncio.Event()

    def said() -> list[tuple[str, int]]:
        events = ("tick_rejected", "daily_bars_corrected")
        return [(e["event"], e.get("count", e.get("bars"))) for e in logs if e["event"] in events]

    with capture_logs() as logs:
        running = asyncio.create_task(pipeline.run(feeds_done, stop))
        for item in (bad(3), corrected(slice(-10, -5)), bad(20), corrected(slice(-5, -2))):
            stepped.clear()
            queue.put_nowait(item)
            await asyncio.wait_for(stepped.wait(), 10)
        async with asyncio.timeout(10):  # (the idle steps, once a second, say the rest)
            while len(said()) < 4:
                stepped.clear()
                await stepped.wait()
        running_then = said()
        feeds_done.set()
        stop.set()
        await asyncio.wait_for(running, 10)
    assert sorted(running_then) == [
        ("daily_bars_corrected", 3),
        ("daily_bars_corrected", 5),
        ("tick_rejected", 3),
        ("tick_rejected", 20),
    ]
    assert said() == running_then  # (nothing was left for the stop)


@dataclasses.dataclass
class Journaled:
    """A running pipeline whose steps are journaled (`Intraday.append`), and its parts."""

    queue: asyncio.Queue[FeedBatch | Wire]
    intraday: Intraday
    journal: Journal
    counters: Counters
    stepped: asyncio.Event  # (set at each step)


@contextlib.asynccontextmanager
async def journaled(sessions: Sessions, tmp_path: Path) -> AsyncIterator[Journaled]:
    """A pipeline running with the daemon's journal as its `on_batch`, stopped on the way out."""
    counters = Counters()
    engine = Engine(RulesFile(), sessions)
    journal = Journal(tmp_path / "journal")
    intraday = Intraday(Store(tmp_path), engine, logs.get("test"), counters, journal)
    stepped = asyncio.Event()
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    pipeline = Pipeline(
        engine, queue, clock=SimClock(NOW), counters=counters, sinks=[],
        decoders={"raw": lambda payloads: decode_generic_many(payloads, feed="raw")},
        on_batch=intraday.append, on_step=lambda step: stepped.set(),
    )  # fmt: skip
    feeds_done, stop = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(pipeline.run(feeds_done, stop))
    try:
        yield Journaled(queue, intraday, journal, counters, stepped)
    finally:
        feeds_done.set()
        stop.set()
        await asyncio.wait_for(running, 10)


async def test_acks_wait_while_the_journal_cannot_be_written(
    sessions: Sessions, tmp_path: Path
) -> None:
    """The journal's segment cannot be written (a folder stands where the file goes, as a full
    disk refuses it): the Wire's ticks go into the engine but its ack waits, so the broker
    keeps the message (a crash now loses nothing acknowledged); once the journal can be written
    again, an idle step (nothing arriving) writes the waiting record and gives the ack. Before,
    the message was acked with its ticks on no disk."""
    acked = asyncio.Event()
    async with journaled(sessions, tmp_path) as j:
        with full_disk(j.journal):
            j.queue.put_nowait(Wire("raw", [tick(0), tick(1)], acked.set))
            await asyncio.wait_for(j.stepped.wait(), 10)
            assert j.counters.total("ticks_in") == 2
            await asyncio.sleep(1.5)  # (an idle step or more: the journal still fails)
            assert (acked.is_set(), j.intraday.unwritten) == (False, 1)
            assert j.counters.get("journal_write_failures") >= 2
        await asyncio.wait_for(acked.wait(), 10)
        assert j.intraday.unwritten == 0
        assert [b.ticks.height for b in j.journal.read_after(-1)] == [2]


async def test_a_feed_without_acks_has_its_unwritten_record_written_by_an_idle_step(
    sessions: Sessions, tmp_path: Path
) -> None:
    """A WebSocket feed's batch (no acks to hold) whose record the journal could not write:
    once the journal can be written, the next idle step writes it (before, only a step with
    new data or held acks tried again, so it waited, in memory only, for the next tick)."""
    async with journaled(sessions, tmp_path) as j:
        with full_disk(j.journal):
            j.queue.put_nowait(decode_generic_many([tick(0), tick(1)], feed="ws"))
            await asyncio.wait_for(j.stepped.wait(), 10)
            await asyncio.sleep(1.2)
            assert j.intraday.unwritten == 1
        async with asyncio.timeout(10):
            while j.intraday.unwritten:  # noqa: ASYNC110 (idle steps, about once a second)
                await asyncio.sleep(0.05)
        assert [b.ticks.height for b in j.journal.read_after(-1)] == [2]


MOVERS_1M = """
[[rules]]
id = "m.movers"
kind = "movers"
universe = true
timeframe = "1m"
window = 1
top = 3
"""


async def test_a_closing_print_5_s_late_is_in_the_last_minutes_movers_as_in_replay(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Six symbols trade at :30 of the session's last three minutes (2024-07-16), each tick as
    it happens, and DDD's closing print (stamped 16:00:00 New York, +1.5% on its 15:59 trade)
    comes 5 s after the close, the engine loop of the daemon's engine stepping every second:
    the `1m` movers of 15:59 are replay's over the same ticks (AAA #1, DDD #2, BBB #3), each
    once, and no tick came late. (The last minute closed 2 s after its end, without the print:
    BBB #2 and CCC #3 were sent, then DDD #2 too, a step after the print corrected the
    minute.)"""
    from monitor import config as cfg
    from monitor.service import Daemon
    from tests.test_backlog_catch_up import replayed, said
    from tests.test_service import write_config

    close = sessions.close_of(dt.date(2024, 7, 16))
    second = dt.timedelta(seconds=1)
    # (15:58: EEE and FFF up, the others flat or down; 15:59: by `move` on 15:58)
    before = {"AAA": 10.0, "BBB": 9.99, "CCC": 9.98, "DDD": 9.97, "EEE": 10.01, "FFF": 10.02}
    moves = {"AAA": 0.03, "BBB": 0.02, "CCC": 0.015, "DDD": 0.01, "EEE": 0.005, "FFF": -0.01}
    trades: list[tuple[dt.datetime, str, float]] = []
    for symbol, move in moves.items():
        trades += [
            (close - 150 * second, symbol, 10.0),
            (close - 90 * second, symbol, before[symbol]),
            (close - 30 * second, symbol, round(before[symbol] * (1 + move), 4)),
        ]
    cross = (close, "DDD", round(before["DDD"] * 1.025, 4))  # (+2.5% on 15:58)
    arrivals = {ts: [t for t in trades if t[0] == ts] for ts, _, _ in trades}
    arrivals[close + 5 * second] = [cross]
    ticks = tmp_path / "ticks.csv"
    rows = [f"{ts.isoformat()},{s},{p},100,{s}-{ts:%H%M%S}" for ts, s, p in [*trades, cross]]
    ticks.write_text("\n".join(["ts,symbol,price,size,id", *sorted(rows)]) + "\n")
    rules = tmp_path / "rules.toml"
    rules.write_text(MOVERS_1M)
    want = replayed(rules, ticks)

    conf = write_config(tmp_path, f"mm-lastmin-{uuid.uuid4().hex[:8]}", rules=rules)
    engine = Daemon(cfg.load(conf)).engine
    clock = SimClock(close - 155 * second)
    alerts: list[Alert] = []
    pipeline = Pipeline(
        engine,
        asyncio.Queue(),
        clock=clock,
        counters=Counters(),
        sinks=[alerts.extend],
        decoders={"mqtt": lambda payloads: decode_generic_many(payloads, feed="mqtt")},
    )
    pipeline.close_clock.quiet_s = 0.01  # (a second of the clock is 0.02 real ones here)
    for s in range(-155, 13):
        now = close + s * second
        clock.set(now)
        messages = [
            msgspec.json.encode(
                {
                    "symbol": sym,
                    "ts": int(ts.timestamp() * 1000),
                    "price": p,
                    "size": 100,
                    "id": f"{sym}-{ts:%H%M%S}",
                }
            )
            for ts, sym, p in arrivals.get(now, [])
        ]
        await pipeline._process([Wire("mqtt", messages)] if messages else [])
        await asyncio.sleep(0.02)
    last = [(a.symbol, a.metrics["rank"]) for a in alerts if a.ts == "2024-07-16T20:00:00Z"]
    assert last == [("AAA", 1), ("DDD", 2), ("BBB", 3)]
    assert said(alerts) == said(want)
    assert engine.book_counts() == {}
