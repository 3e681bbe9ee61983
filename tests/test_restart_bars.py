"""A graceful restart mid-session keeps the session's minute bars, open bars and duplicate keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import polars as pl
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor import config as cfg
from monitor import logs
from monitor.calendar import nyse_sessions
from monitor.clock import SimClock
from monitor.core.bar_state import BookState
from monitor.core.bars import BarBook
from monitor.core.counters import Counters
from monitor.core.engine import Engine
from monitor.core.model import MINUTE_SCHEMA, Bar, FeedBatch, Tick, bars_frame, ticks_frame
from monitor.core.rules.spec import RulesFile
from monitor.core.step import Step
from monitor.intraday import Intraday
from monitor.journal import JOURNAL, Journal
from monitor.service import Daemon
from monitor.store import INTRADAY, Store
from tests.test_daemon_faults import publish
from tests.test_service import daemon_running, write_config

pytestmark = pytest.mark.integration

SESSION = dt.date(2024, 7, 16)  # regular hours 13:30-20:00 UTC
SYMBOLS = ("AAA", "BBB", "CCC")
# The session's trades span half an hour of it: built as they come, not held back as cut short
# (what `hold_cut_short` does is tests/test_held_sessions.py's).
AS_THEY_COME = "hold_cut_short = false"


def at(hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    """A UTC instant on SESSION."""
    base = dt.datetime(2024, 7, 16, hour, minute, tzinfo=dt.UTC)
    return base + dt.timedelta(seconds=second)


def session_ticks() -> list[Tick]:
    """Trades of three symbols from 14:00 to 14:30 UTC, in time order, whole milliseconds, each
    with an id; 800,000 shares in all."""
    rng = random.Random(3)
    ticks = [
        Tick(sym, at(14, 0) + dt.timedelta(milliseconds=rng.randrange(1_800_000)),
             round(rng.uniform(10, 11), 2), 0.0, f"{sym}-{i}")
        for sym in SYMBOLS for i in range(400)
    ]  # fmt: skip
    ticks.sort(key=lambda t: t.ts)
    sizes = [rng.randrange(100, 1_200) for _ in ticks]
    sizes[-1] += 800_000 - sum(sizes)
    return [
        Tick(t.symbol, t.ts, t.price, float(size), t.id)
        for t, size in zip(ticks, sizes, strict=True)
    ]


def messages(ticks: list[Tick]) -> list[bytes]:
    """Generic MQTT tick messages, 50 ticks each."""
    wire = [
        {"symbol": t.symbol, "ts": int(t.ts.timestamp() * 1000), "price": t.price,
         "size": t.size, "id": t.id}
        for t in ticks
    ]  # fmt: skip
    return [json.dumps(wire[i : i + 50]).encode() for i in range(0, len(wire), 50)]


def uninterrupted(ticks: list[Tick], now: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The minute bars and session bars an engine that never stopped builds from the ticks."""
    engine = Engine(RulesFile(), nyse_sessions(dt.date(2024, 1, 1)))
    batch = FeedBatch.empty("oracle")
    batch.ticks = ticks_frame(ticks)
    engine.ingest(batch)
    step = engine.advance(now)
    return step.minute_bars.sort("symbol", "start"), step.daily_bars.sort("symbol")


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait until `condition()` holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def send(daemon: Daemon, topic: str, ticks: list[Tick]) -> None:
    """Publish `ticks` (in time order) as a live feed would: each message once the daemon's
    clock has reached its last trade (a tick ahead of the clock is from the future)."""
    assert isinstance(daemon.clock, SimClock)
    async with aiomqtt.Client("127.0.0.1", 1883) as client:
        for i, message in enumerate(messages(ticks)):
            daemon.clock.set(ticks[min(len(ticks), (i + 1) * 50) - 1].ts)
            await client.publish(topic, message, qos=1)


async def feed(
    daemon: Daemon, topic: str, delivered: list[Tick], stop: dt.datetime, minutes: pl.DataFrame
) -> None:
    """Publish the ticks as a live feed would (each message once the clock has reached its last
    trade: a tick ahead of the clock is from the future), wait until the daemon has them, then
    move its clock past `stop`, wait until the minute before the one of `stop` (still open) has
    closed, and check every minute bar closed so far against the uninterrupted run's."""
    await send(daemon, topic, delivered)
    await until(lambda: daemon.counters.total("ticks_in") >= len(delivered))
    assert isinstance(daemon.clock, SimClock)
    daemon.clock.set(stop + dt.timedelta(seconds=10))
    minute = stop.replace(second=0)
    last = minute - dt.timedelta(minutes=1)
    await until(lambda: daemon.engine.minutes.filter(pl.col("start") == last).height == 3)
    got = daemon.engine.minutes.sort("symbol", "start")
    assert got.equals(minutes.filter(pl.col("start") < minute).select(got.columns))


async def test_a_graceful_restart_mid_session_keeps_the_sessions_bars(tmp_path: Path) -> None:
    """Ticks of one session over MQTT, the daemon stopped gracefully and started twice during
    it (each time with a minute bar open, and the last 30 trades before the stop delivered
    again after the start): its minute bars of the session and the stored session bar (volume
    800,000) equal those of one uninterrupted run, and each redelivered trade is a duplicate."""
    prefix = f"mm-intraday-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix, engine=AS_THEY_COME)
    ticks = session_ticks()
    after_close = at(20, 0, 10)
    minutes, daily = uninterrupted(ticks, after_close)
    assert daily.get_column("volume").to_list() == [
        sum(t.size for t in ticks if t.symbol == s) for s in SYMBOLS
    ]
    assert daily.get_column("volume").sum() == 800_000
    stops = [at(14, 10, 20), at(14, 20, 20), at(14, 30, 1)]
    runs: list[tuple[list[Tick], dt.datetime, dt.datetime]] = []
    previous: list[Tick] = []
    for i, stop in enumerate(stops):
        start = stops[i - 1] if i else at(14, 0)
        part = [t for t in ticks if start <= t.ts < stop]
        runs.append((previous[-30:] + part, start + dt.timedelta(seconds=20), stop))
        previous = part
    topic = f"{prefix}/ticks"
    store = Store(tmp_path / "store")
    try:
        for i, (delivered, started, stopped) in enumerate(runs):
            clock = SimClock(started)
            async with daemon_running(conf, clock=clock) as daemon:
                assert store.intraday_path.exists() == bool(i)  # (kept until saved again)
                await feed(daemon, topic, delivered, stopped, minutes)
                assert daemon.counters.get("rejections", reason="duplicate") == (30 if i else 0)
                if i == len(runs) - 1:
                    clock.set(after_close)
                    await until(lambda: daemon.counters.get("bars_closed", timeframe="1d") >= 3)
                    got = daemon.engine.minutes.sort("symbol", "start")
                    assert got.equals(minutes.select(got.columns))
        assert (tmp_path / "store" / INTRADAY).exists()  # saved at the last stop
        stored = store.load_bars().filter(pl.col("session") == SESSION).sort("symbol")
        assert stored.equals(daily.select(stored.columns))
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


def crash_stores(tmp_path: Path, prefix: str, intraday_interval_s: float) -> tuple[Path, Path]:
    """The config of a daemon whose store is `a/store` (the sessions under way saved every
    `intraday_interval_s`), and that of a second daemon on `b/store`, where a test puts what a
    crash of the first leaves."""
    (tmp_path / "a").mkdir()
    conf = write_config(tmp_path / "a", prefix, engine=AS_THEY_COME)
    every = f"[store]\nintraday_interval_s = {intraday_interval_s}\n"
    conf.write_text(conf.read_text().replace("[store]\n", every))
    (tmp_path / "b" / "store").mkdir(parents=True)
    conf_b = tmp_path / "b" / "monitor.toml"
    conf_b.write_text(conf.read_text().replace(str(tmp_path / "a"), str(tmp_path / "b")))
    return conf, conf_b


async def close_the_session(daemon: Daemon, clock: SimClock, minutes: pl.DataFrame) -> None:
    """Move the clock past the close: the daemon's minute bars equal the uninterrupted run's
    `minutes` once its session bars have closed."""
    clock.set(at(20, 0, 10))
    await until(lambda: daemon.counters.get("bars_closed", timeframe="1d") >= 3)
    got = daemon.engine.minutes.sort("symbol", "start")
    assert got.equals(minutes.select(got.columns))


def assert_stored(store: Path, daily: pl.DataFrame) -> None:
    """The session bars in `store` (after the daemon's stop) are `daily`."""
    stored = Store(store).load_bars().filter(pl.col("session") == SESSION).sort("symbol")
    assert stored.equals(daily.select(stored.columns))


async def test_a_crash_mid_session_loses_no_bar_saved_before_it(tmp_path: Path) -> None:
    """The sessions under way are saved every `intraday_interval_s` while the daemon runs: the
    store as a kill -9 leaves it (its bars_intraday.parquet copied while the daemon runs, after
    a save) starts a daemon that continues the session. With the last 30 trades before the
    crash delivered again (duplicates) and the rest of the session, its minute bars and
    session bar equal those of one uninterrupted run."""
    prefix = f"mm-crash-{uuid.uuid4().hex[:8]}"
    conf, conf_b = crash_stores(tmp_path, prefix, 0.2)
    ticks = session_ticks()
    minutes, daily = uninterrupted(ticks, at(20, 0, 10))
    crash = at(14, 15, 20)
    before, after = [t for t in ticks if t.ts < crash], [t for t in ticks if t.ts >= crash]
    topic = f"{prefix}/ticks"
    try:
        async with daemon_running(conf, clock=SimClock(at(14, 0, 20))) as daemon:
            await feed(daemon, topic, before, crash, minutes)
            saves = daemon.counters.get("intraday_saves")
            await until(lambda: daemon.counters.get("intraday_saves") >= saves + 2)
            shutil.copy(tmp_path / "a" / "store" / INTRADAY, tmp_path / "b" / "store" / INTRADAY)
        clock = SimClock(crash + dt.timedelta(seconds=30))
        async with daemon_running(conf_b, clock=clock) as daemon:
            closed = minutes.filter(pl.col("start") < crash.replace(second=0))
            got = daemon.engine.minutes.sort("symbol", "start")
            assert got.equals(closed.select(got.columns))  # restored, before any tick
            await send(daemon, topic, before[-30:] + after)
            await until(lambda: daemon.counters.total("ticks_in") >= 30 + len(after))
            assert daemon.counters.get("rejections", reason="duplicate") == 30
            await close_the_session(daemon, clock, minutes)
        assert_stored(tmp_path / "b" / "store", daily)
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


async def continue_after_the_crash(
    conf: Path, crash: dt.datetime, topic: str, after: list[Tick], minutes: pl.DataFrame
) -> None:
    """Start a daemon on what a crash at `crash` left (`conf`): its minute bars equal the
    uninterrupted run's `minutes` up to the crash before any tick is sent again; then, with
    only the ticks `after` it sent, up to the close, and none of them is a duplicate."""
    clock = SimClock(crash + dt.timedelta(seconds=30))
    async with daemon_running(conf, clock=clock) as daemon:
        last = crash.replace(second=0) - dt.timedelta(minutes=1)
        await until(lambda: daemon.engine.minutes.filter(pl.col("start") == last).height == 3)
        closed = minutes.filter(pl.col("start") <= last)
        got = daemon.engine.minutes.sort("symbol", "start")
        assert got.equals(closed.select(got.columns))
        await send(daemon, topic, after)
        await until(lambda: daemon.counters.total("ticks_in") >= len(after))
        await close_the_session(daemon, clock, minutes)
        assert daemon.counters.get("rejections", reason="duplicate") == 0


async def test_a_crash_after_the_last_save_loses_no_tick_accepted_since(tmp_path: Path) -> None:
    """Ticks accepted after the last save of the sessions under way are in the journal: the
    store as a kill -9 leaves it (the saved bars and the journal, copied while the daemon runs)
    starts a daemon whose minute bars equal an uninterrupted run's before any tick is sent
    again; with only the rest of the session sent, its minute bars and session bar equal that
    run's, with no duplicate. A graceful stop leaves no journal behind."""
    prefix = f"mm-journal-{uuid.uuid4().hex[:8]}"
    conf, conf_b = crash_stores(tmp_path, prefix, 3600)
    ticks = session_ticks()
    minutes, daily = uninterrupted(ticks, at(20, 0, 10))
    saved, crash = at(14, 8, 20), at(14, 15, 20)
    first = [t for t in ticks if t.ts < saved]
    then = [t for t in ticks if saved <= t.ts < crash]
    after = [t for t in ticks if t.ts >= crash]
    topic = f"{prefix}/ticks"
    store_a, left = tmp_path / "a" / "store", tmp_path / "b" / "store"
    try:
        async with daemon_running(conf, clock=SimClock(at(14, 0, 20))) as daemon:
            await feed(daemon, topic, first, saved, minutes)
            daemon.intraday.save_later()
            await until(lambda: daemon.counters.get("intraday_saves") >= 1)
            await send(daemon, topic, then)
            await until(lambda: daemon.counters.total("ticks_in") >= len(first) + len(then))
            shutil.copy(store_a / INTRADAY, left / INTRADAY)
            shutil.copytree(store_a / "journal", left / "journal")
        assert not any((store_a / "journal").iterdir())  # (taken into the saved bars)
        await continue_after_the_crash(conf_b, crash, topic, after, minutes)
        assert_stored(left, daily)
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


async def test_a_crash_soon_after_a_restart_loses_no_tick_accepted_since_the_restart(
    tmp_path: Path,
) -> None:
    """A graceful stop saves the sessions under way and deletes the journal's segments that
    save covers; the next start appends after them, not from 0 again (a segment numbered at or
    below the covered one would be skipped as covered by the start after a crash). The store
    as a kill -9 leaves it before that run's first save starts a daemon whose minute bars equal
    an uninterrupted run's; with the rest of the session sent, so does its session bar."""
    prefix = f"mm-renumber-{uuid.uuid4().hex[:8]}"
    conf, conf_b = crash_stores(tmp_path, prefix, 0.2)
    ticks = session_ticks()
    minutes, daily = uninterrupted(ticks, at(20, 0, 10))
    restart, crash = at(14, 8, 20), at(14, 15, 20)
    first = [t for t in ticks if t.ts < restart]
    then = [t for t in ticks if restart <= t.ts < crash]
    after = [t for t in ticks if t.ts >= crash]
    topic = f"{prefix}/ticks"
    store_a, left = tmp_path / "a" / "store", tmp_path / "b" / "store"
    try:
        async with daemon_running(conf, clock=SimClock(at(14, 0, 20))) as daemon:
            await feed(daemon, topic, first, restart, minutes)
            saves = daemon.counters.get("intraday_saves")
            await until(lambda: daemon.counters.get("intraday_saves") >= saves + 3)
        assert Store(store_a).intraday_journal() not in (None, 0)  # (segments 0.. were used)
        # The second run saves only once an hour: the crash comes before its first save.
        hourly = conf.read_text().replace("intraday_interval_s = 0.2", "intraday_interval_s = 3600")
        conf.write_text(hourly)
        again = SimClock(restart + dt.timedelta(seconds=5))
        async with daemon_running(conf, clock=again) as daemon:
            await send(daemon, topic, then)
            await until(lambda: daemon.counters.total("ticks_in") >= len(then))
            shutil.copy(store_a / INTRADAY, left / INTRADAY)
            shutil.copytree(store_a / "journal", left / "journal")
        await continue_after_the_crash(conf_b, crash, topic, after, minutes)
        assert_stored(left, daily)
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


def book_state(ticks: list[Tick], now: dt.datetime) -> BookState:
    """The state of a bar builder fed `ticks` and advanced to `now`."""
    book = BarBook(nyse_sessions(dt.date(2024, 1, 1)))
    book.ingest_ticks(ticks_frame(ticks))
    book.advance(now)
    return book.state()


def test_the_sessions_bars_round_trip_through_the_store(tmp_path: Path) -> None:
    """Closed bars, open bars, duplicate keys, emitted sessions and the clocks of a bar builder
    (its close clock held behind its clock too), the keys of a provider's session bars, its
    closing prints and the provider bars waiting for their minute, read back from
    bars_intraday.parquet as they were saved."""
    ticks = session_ticks()
    saved = book_state(ticks, at(14, 15, 30))
    assert (saved.closed.height, saved.open.height) == (45, 45)  # closed to 14:14, open from 14:15
    # keys of the 10 s buckets from an hour (dedup_window_s) before the last closed minute's
    # cutoff (14:14:28): every tick of this session so far
    assert saved.seen.height == len([t for t in ticks if t.ts >= at(13, 14, 20)]) == len(ticks)
    official = pl.DataFrame({"symbol": ["X"], "session": [dt.date(2024, 7, 2)]})
    closing = saved.open.head(1)  # (partial bars of the last minute: the shape of the open ones)
    waiting = saved.open.tail(1)
    saved = msgspec.structs.replace(
        saved, official=official, closing=closing, waiting=waiting, closes_at=at(14, 10, 5)
    )
    store = Store(tmp_path)
    store.save_intraday(saved)
    loaded = store.load_intraday()
    assert loaded is not None
    assert (loaded.now, loaded.closes_at, loaded.keep_from, loaded.done, loaded.hashed_by) == (
        saved.now, at(14, 10, 5), saved.keep_from, saved.done, saved.hashed_by,
    )  # fmt: skip
    for name in ("closed", "open", "seen", "official", "closing", "waiting"):
        assert getattr(loaded, name).equals(getattr(saved, name)), name
    store.discard_intraday()
    assert store.load_intraday() is None


async def test_stale_or_unreadable_saved_bars_are_logged_and_left_out(tmp_path: Path) -> None:
    """Bars saved on 2024-07-16 and read on 2024-07-19 (two sessions after the last closed one)
    are stale: logged, not restored; an unreadable file is logged as such, and the daemon
    starts without it."""
    conf = write_config(tmp_path, "mm-intraday-stale")
    config = cfg.load(conf)
    store = Store(tmp_path / "store")
    store.save_intraday(book_state(session_ticks(), at(14, 15, 30)))
    later = dt.datetime(2024, 7, 19, 15, tzinfo=dt.UTC)
    with capture_logs() as logs:
        daemon = Daemon(config, clock=SimClock(later))
    stale = [e for e in logs if e["event"] == "intraday_bars_stale"]
    assert [e["sessions"] for e in stale] == [["2024-07-16"]]
    assert daemon.engine.minutes.height == 0
    store.intraday_path.write_bytes(b"PAR1 not parquet")
    with capture_logs() as logs:
        daemon = Daemon(config, clock=SimClock(later))
    unreadable = [e for e in logs if e["event"] == "intraday_bars_unreadable"]
    assert len(unreadable) == 1 and str(store.intraday_path) in unreadable[0]["error"]
    assert unreadable[0]["log_level"] == "warning"


def test_a_save_with_no_session_under_way_removes_the_saved_bars(tmp_path: Path) -> None:
    """Bars saved during a session that is over (stale at the next start) are removed by the
    next save, periodic or at the stop, when the daemon has no session under way: a start
    after it never reads them."""
    conf = write_config(tmp_path, "mm-intraday-none")
    config = cfg.load(conf)
    store = Store(tmp_path / "store")
    later = dt.datetime(2024, 7, 19, 15, tzinfo=dt.UTC)
    for final in (False, True):
        store.save_intraday(book_state(session_ticks(), at(14, 15, 30)))
        daemon = Daemon(config, clock=SimClock(later))
        if final:
            daemon.intraday.save_now()
        else:
            daemon.intraday.save_later()
            daemon.intraday.save_now()  # (waits for the periodic one)
        assert not store.intraday_path.exists()


@pytest.mark.parametrize("stop", ["graceful", "kill -9"])
async def test_a_session_bar_taken_before_its_close_survives_a_restart(
    tmp_path: Path, stop: str
) -> None:
    """A provider's session bar that comes during its session (^RUT's of 2024-07-16, at
    10:00 New York) waits for the close; the daemon stopped before it (gracefully, or killed:
    its store as a kill -9 leaves it) and started again after it still has the bar and sends
    replay's alerts of that session. Before, the bar was acknowledged and then lost: neither
    the snapshot nor the journal held a bar waiting for its close."""
    from tests.cli_here import cli_here
    from tests.conftest import RUT
    from tests.test_daemon_faults import rut_bars, stream_alerts
    from tests.test_service import replay_alerts

    prefix = f"mm-waiting-{uuid.uuid4().hex[:8]}"
    conf, conf_b = crash_stores(tmp_path, prefix, 3600)
    for c in (conf, conf_b):
        res = cli_here(
            "backfill", "--config", str(c), "--data", f"^RUT={RUT}", "--to", "2024-07-15"
        )
        assert res.returncode == 0, res.stderr
    store_a, left = tmp_path / "a" / "store", tmp_path / "b" / "store"
    topic = f"{prefix}/bars"
    mid_session = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)  # 10:00 New York
    try:
        async with daemon_running(conf, clock=SimClock(mid_session)) as daemon:
            await publish(topic, rut_bars("2024-07-16", "2024-07-16"))
            await until(lambda: daemon.counters.total("bars_in") >= 1)
            if stop == "kill -9":
                for name in ("bars_daily.parquet", "engine_state.json", "journal"):
                    if (store_a / name).is_dir():
                        shutil.copytree(store_a / name, left / name, dirs_exist_ok=True)
                    elif (store_a / name).exists():
                        shutil.copy(store_a / name, left / name)
        after_close = dt.datetime(2024, 7, 16, 20, 10, tzinfo=dt.UTC)
        async with daemon_running(
            conf if stop == "graceful" else conf_b, clock=SimClock(after_close)
        ):
            got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", 3)
        assert got == replay_alerts(SESSION, SESSION)
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


async def test_a_tick_rejected_as_late_before_a_crash_stays_rejected(tmp_path: Path) -> None:
    """With `late_ticks = "reject"`, a trade for 10:00 that comes at 10:10 is rejected; a daemon
    started from the store a kill -9 leaves (the bars saved at 10:00:50 and the journal since)
    builds the 10:00 bar without it. The journal used to hold the rejected tick too, and the
    restored book, its clock back at 10:00:50, took it as on time."""
    prefix = f"mm-late-{uuid.uuid4().hex[:8]}"
    conf, conf_b = crash_stores(tmp_path, prefix, 3600)
    for c in (conf, conf_b):
        c.write_text(c.read_text().replace("[engine]\n", '[engine]\nlate_ticks = "reject"\n'))
    store_a, left = tmp_path / "a" / "store", tmp_path / "b" / "store"
    topic = f"{prefix}/ticks"
    on_time = [Tick("AAA", at(14, 0, 5), 10.0, 100, "a"), Tick("AAA", at(14, 0, 6), 10.5, 100, "b")]
    late = [Tick("AAA", at(14, 0, 30), 30.0, 5000, "late")]
    bar = ("AAA", at(14, 0), 10.0, 10.5, 10.0, 10.5, 200.0)
    try:
        clock = SimClock(at(14, 0, 10))
        async with daemon_running(conf, clock=clock) as daemon:
            await publish(topic, messages(on_time))
            await until(lambda: daemon.counters.total("ticks_in") >= 2)
            clock.set(at(14, 0, 50))
            daemon.intraday.save_later()
            await until(lambda: daemon.counters.get("intraday_saves") >= 1)
            clock.set(at(14, 10))
            await until(lambda: daemon.engine.minutes.height == 1)  # (the 10:00 bar closed)
            await publish(topic, messages(late))
            await until(lambda: daemon.counters.get("rejections", reason="late_tick") == 1)
            assert daemon.engine.minutes.rows()[:1] == [bar]
            shutil.copy(store_a / INTRADAY, left / INTRADAY)
            shutil.copytree(store_a / "journal", left / "journal")
        async with daemon_running(conf_b, clock=SimClock(at(14, 10, 30))) as daemon:
            await until(lambda: daemon.engine.minutes.height == 1)
            assert daemon.engine.minutes.rows() == [bar]
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


def started(
    store: Store,
    now: dt.datetime,
    rules: RulesFile | None = None,
    bar_options: dict[str, Any] | None = None,
) -> tuple[Engine, Intraday]:
    """An engine (of `rules`, none by default; its BarBook's `bar_options`) and its Intraday
    on `store`, started at `now` as the daemon starts: the engine's snapshot restored, then
    what was saved and journaled there taken up."""
    sessions = nyse_sessions(dt.date(2024, 1, 1))
    engine = Engine(rules or RulesFile(), sessions, bar_options=bar_options)
    engine.ingest_daily(store.load_bars())  # (the history, evaluated before the restore)
    engine.warm(now)
    state = store.load_state()
    if state is not None:
        engine.restore(state)
    journal = Journal(store.path / JOURNAL, sync=False)
    intraday = Intraday(store, engine, logs.get("test"), Counters(), journal)
    intraday.restore(now)
    return engine, intraday


def stepped(engine: Engine, intraday: Intraday, now: dt.datetime, batch: FeedBatch) -> Step:
    """A daemon's step: `batch` in, the clock to `now`, what was taken in and the ids of the
    alerts emitted journaled, and the session bars stored when some closed (the snapshot)."""
    engine.ingest(batch)
    step = engine.advance(now)
    intraday.append(engine.take_accepted(), step.lines.get_column("id").to_list())
    if step.daily_bars.height:
        intraday.store.save_bars(engine.daily)
    return step


def trades(*ticks: Tick) -> FeedBatch:
    batch = FeedBatch.empty("t")
    batch.ticks = ticks_frame(list(ticks))
    return batch


def test_a_provider_bar_and_a_late_tick_into_it_come_back_from_the_journal(
    tmp_path: Path,
) -> None:
    """A provider's bar of 10:05 taken at 10:06:05 and a late trade of 10:05 merged into it,
    both after the last save (10:01): the journal holds them, and a start from what a kill -9
    leaves builds the same bar (volume 1,500). The restored book's clock is the save's: the
    bar used to wait for it as a bar from the future, and the trade, put in an open bar of
    10:05 meanwhile, was dropped when the bar was taken."""
    store = Store(tmp_path)
    provider = FeedBatch.empty("t")
    provider.minute_bars = pl.DataFrame(
        [("AAA", at(14, 5), 10.0, 10.5, 9.5, 10.2, 1000.0)], schema=MINUTE_SCHEMA, orient="row"
    )
    bar = ("AAA", at(14, 5), 10.0, 10.5, 9.5, 10.2, 1500.0)
    engine, intraday = started(store, at(14, 0))
    stepped(engine, intraday, at(14, 1), trades(Tick("AAA", at(14, 0, 30), 10.0, 100.0, "t0")))
    intraday.save_later()
    intraday.wait()
    stepped(engine, intraday, at(14, 6, 5), provider)
    late = trades(Tick("AAA", at(14, 5, 50), 10.1, 500.0, "late"))
    stepped(engine, intraday, at(14, 6, 30), late)
    assert engine.minutes.filter(pl.col("start") == at(14, 5)).rows() == [bar]
    engine, intraday = started(store, at(14, 7))  # (after a kill -9: nothing saved since 10:01)
    engine.advance(at(14, 7))
    assert engine.minutes.filter(pl.col("start") == at(14, 5)).rows() == [bar]
    assert engine.take_accepted().size() == 0  # (taken up: not journaled again)


def test_a_trade_delivered_again_after_a_long_outage_is_a_duplicate(tmp_path: Path) -> None:
    """A trade of 14:59 journaled, its message not acknowledged when the daemon dies; the
    daemon starts again at 16:30, past the hour duplicate keys are kept, and the broker
    delivers the message again after a first idle step: a duplicate, the session bar as it
    was (600). The keys taken up were forgotten at that first step, and the trade was taken
    a second time as a late correction."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(18, 0))
    stepped(engine, intraday, at(18, 58), trades(Tick("AAA", at(18, 57), 10.0, 100.0, "a")))
    intraday.save_later()
    intraday.wait()
    again = Tick("AAA", at(18, 59), 10.0, 500.0, "b")
    stepped(engine, intraday, at(18, 59, 30), trades(again))  # (then kill -9, before the ack)
    engine, intraday = started(store, at(20, 30))
    step = stepped(engine, intraday, at(20, 30), FeedBatch.empty("t"))
    assert step.daily_bars.select("volume").rows() == [(600.0,)]
    assert [r.reason for r in engine.ingest(trades(again))] == ["duplicate"]
    assert engine.advance(at(20, 30, 1)).daily_bars.is_empty()  # (no correction)


def test_a_minute_alert_is_not_emitted_again_after_a_crash(tmp_path: Path) -> None:
    """Minute alerts of a surge rule, one emitted after the engine's last snapshot (14:02) but
    before the last save of the sessions under way, one after that save: a start from what a
    kill -9 leaves evaluates the minutes it takes up again and emits neither a second time
    (the first is below the minute watermark saved with the sessions, the second's id is in
    the journal), and the next new one as it comes."""
    from monitor.core.rules.spec import parse_rules

    rules = parse_rules(
        b'[[rules]]\nid = "m"\nkind = "surge"\nsymbols = ["AAA"]\ntimeframe = "1m"\n'
        b"window = 1\nmin_return = 0.05\n"
    )
    store = Store(tmp_path)
    prices = [10.0, 10.0, 10.0, 10.0, 11.0, 11.0, 12.0, 12.0]  # (up 10% at 14:04 and 14:06)
    engine, intraday = started(store, at(14, 0), rules)
    emitted = []
    for k, price in enumerate(prices):
        tick = Tick("AAA", at(14, k, 10), price, 100.0, f"t{k}")
        step = stepped(engine, intraday, at(14, k, 30), trades(tick))
        emitted += [at(14, k, 30)] * step.lines.height
        if k == 2:
            store.save_state(engine.state())  # (the snapshot, every 300 s)
        if k == 5:
            intraday.save_later()  # (the sessions under way, every 60 s)
            intraday.wait()
    assert emitted == [at(14, 5, 30), at(14, 7, 30)]  # (14:04's and 14:06's minutes closed)
    engine, intraday = started(store, at(14, 8, 5), rules)  # (after a kill -9)
    again = stepped(engine, intraday, at(14, 8, 30), FeedBatch.empty("t"))
    assert engine.minutes.height == 8 and again.lines.is_empty()
    step = stepped(
        engine, intraday, at(14, 9, 30), trades(Tick("AAA", at(14, 8, 10), 13.5, 100.0, "t8"))
    )
    assert step.lines.height == 1  # (14:08, up 12.5%: new)


def test_a_providers_session_bar_after_the_close_stays_after_a_crash(tmp_path: Path) -> None:
    """The book's session bar emitted at the close and stored, then the provider's official
    bar of the session, stored over it; the daemon dies before the next save of the sessions
    under way (it still holds the session, not emitted). A start from what it leaves keeps
    the official bar: the session's bar is not emitted again over it (the book's bar, built
    again from the minutes taken up, used to replace it in the store)."""
    from monitor.core.model import DAILY_SCHEMA

    store = Store(tmp_path)
    official = pl.DataFrame(
        [("AAA", SESSION, 10.0, 12.0, 9.0, 11.0, 5_000_000.0)], schema=DAILY_SCHEMA, orient="row"
    )
    provider = FeedBatch.empty("t")
    provider.daily_bars = official
    engine, intraday = started(store, at(19, 58))
    stepped(engine, intraday, at(19, 58), trades(Tick("AAA", at(19, 57, 30), 10.0, 100.0, "a")))
    intraday.save_later()
    intraday.wait()
    stepped(engine, intraday, at(19, 59, 30), trades(Tick("AAA", at(19, 59, 1), 10.5, 100.0, "b")))
    built = stepped(engine, intraday, at(20, 0, 3), FeedBatch.empty("t")).daily_bars
    assert built.select("close", "volume").rows() == [(10.5, 200.0)]
    stepped(engine, intraday, at(20, 0, 30), provider)
    assert store.load_bars().equals(official)
    engine, intraday = started(store, at(20, 1))  # (after a kill -9 at 16:00:40)
    step = stepped(engine, intraday, at(20, 1), FeedBatch.empty("t"))
    # (the journal's official bar, as stored already, is no new bar: and the book's is none)
    assert step.daily_bars.is_empty()
    assert engine.daily.equals(official) and store.load_bars().equals(official)
    assert engine.minutes.height == 2  # (the session's minutes taken up all the same)


async def test_the_sessions_under_way_are_saved_after_the_snapshot_of_a_close(
    tmp_path: Path,
) -> None:
    """A step that closes session bars returns the snapshot to await; a save of the sessions
    under way that is due waits for a later step, so it can never mark a session done (and drop
    the journal holding its bars) before the session's bars are in the stored history."""
    from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, empty
    from monitor.core.payload import LINE_SCHEMA
    from monitor.core.step import Step

    conf = write_config(tmp_path, f"mm-order-{uuid.uuid4().hex[:8]}")
    daemon = Daemon(cfg.load(conf), clock=SimClock(at(20, 5)))
    daily = pl.DataFrame(
        {"symbol": ["AAA"], "session": [SESSION], "open": [1.0], "high": [1.0], "low": [1.0],
         "close": [1.0], "volume": [1.0]},
        schema=DAILY_SCHEMA,
    )  # fmt: skip
    daemon.intraday_due = True
    closing = Step(empty(LINE_SCHEMA), empty(MINUTE_SCHEMA), daily, [])
    saving = daemon.on_step(closing)
    assert saving is not None and daemon.intraday_due
    await saving
    assert daemon.counters.get("snapshots") == 1
    idle = Step(empty(LINE_SCHEMA), empty(MINUTE_SCHEMA), empty(DAILY_SCHEMA), [])
    assert daemon.on_step(idle) is None
    assert not daemon.intraday_due


def test_a_minutes_bars_on_both_sides_of_a_restart_all_fire(tmp_path: Path) -> None:
    """Provider minute bars of 14:04 come symbol by symbol: AAA's before a graceful stop (its
    surge fires), BBB's after the start. BBB's surge of that minute fires too, as it does
    without the restart. The minute evaluated last was not restored: BBB's bar was taken for
    a correction of an earlier minute, and its alert was lost."""
    from monitor.core.rules.spec import parse_rules

    rules = parse_rules(
        b'[[rules]]\nid = "m"\nkind = "surge"\nsymbols = ["AAA", "BBB"]\ntimeframe = "1m"\n'
        b"window = 1\nmin_return = 0.05\n"
    )

    def minute(symbol: str, start: dt.datetime, close: float) -> FeedBatch:
        batch = FeedBatch.empty("t")
        batch.minute_bars = bars_frame(
            [Bar(symbol, "1m", close, close, close, close, 100.0, start=start)], "1m"
        )
        return batch

    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0), rules)
    for k in range(4):
        for symbol in ("AAA", "BBB"):
            stepped(engine, intraday, at(14, k + 1, 5), minute(symbol, at(14, k), 10.0))
    first = stepped(engine, intraday, at(14, 5, 5), minute("AAA", at(14, 4), 11.0))
    assert [a.symbol for a in first.alerts] == ["AAA"]
    store.save_state(engine.state())  # (a graceful stop: the snapshot and the sessions saved)
    intraday.save_later()
    intraday.wait()
    engine, intraday = started(store, at(14, 5, 10), rules)
    late = stepped(engine, intraday, at(14, 5, 15), minute("BBB", at(14, 4), 11.0))
    assert [(a.symbol, a.ts) for a in late.alerts] == [("BBB", "2024-07-16T14:05:00Z")]


def test_session_bars_taken_up_from_the_journal_are_no_corrections(tmp_path: Path) -> None:
    """A provider's session bars of 07-15 and of 07-16, each come after its close, evaluated
    and stored, then a kill -9 before the next save: the start takes them up from the journal
    as they were, and counts no `daily_bar_corrected` (07-15's were counted: an operator was
    warned of corrections that were none); a bar of 07-15 that does differ still is one."""
    from monitor.core.rules.spec import parse_rules

    rules = parse_rules(  # (a daily rule: sessions are evaluated, so corrections are counted)
        b'[[rules]]\nid = "d"\nkind = "streak"\nsymbols = ["AAA"]\ntimeframe = "1d"\n'
        b"count = 3\nmin_return = 0.01\n"
    )
    store = Store(tmp_path)
    monday = dt.date(2024, 7, 15)

    def session_bars(day: dt.date, close: float, symbols: tuple[str, ...]) -> FeedBatch:
        batch = FeedBatch.empty("t")
        batch.daily_bars = bars_frame(
            [Bar(s, "1d", 10.0, 11.0, 9.0, close, 1e6, session=day) for s in symbols], "1d"
        )
        return batch

    engine, intraday = started(store, at(20, 0, 30) - dt.timedelta(days=1), rules)
    both = ("AAA", "BBB")
    stepped(engine, intraday, at(20, 1) - dt.timedelta(days=1), session_bars(monday, 10.5, both))
    stepped(engine, intraday, at(20, 1), session_bars(SESSION, 10.8, both))
    assert store.load_bars().height == 4
    engine, intraday = started(store, at(20, 2), rules)  # (a kill -9: nothing saved since)
    stepped(engine, intraday, at(20, 2, 5), FeedBatch.empty("t"))
    assert "daily_bar_corrected" not in engine.book_counts()
    stepped(engine, intraday, at(20, 3), session_bars(monday, 10.6, ("AAA",)))
    assert engine.book_counts().get("daily_bar_corrected") == 1


def test_late_minutes_taken_after_a_crash_correct_the_stored_session_bar(tmp_path: Path) -> None:
    """The session's bar emitted at the close of the trades so far (close 10.0, 100 shares) and
    stored, then a kill -9 before the next save; the broker's backlog after the start brings a
    later trade of the session (10.5, 400 shares) in the first batch: the stored bar is built
    again (close 10.5, 500 shares) and stored, as a late correction is. It was left out as
    stored at the first close, and the store kept the bar cut short for good."""
    from monitor.core.model import DAILY_SCHEMA

    store = Store(tmp_path)
    engine, intraday = started(store, at(19, 50))
    stepped(engine, intraday, at(19, 51), trades(Tick("AAA", at(19, 50, 30), 10.0, 100.0, "a")))
    intraday.save_later()
    intraday.wait()
    first = stepped(engine, intraday, at(20, 0, 3), FeedBatch.empty("t")).daily_bars
    assert first.select("close", "volume").rows() == [(10.0, 100.0)]
    engine, intraday = started(store, at(20, 1))  # (after a kill -9)
    late = trades(Tick("AAA", at(19, 59, 10), 10.5, 400.0, "b"))
    step = stepped(engine, intraday, at(20, 1, 5), late)
    bar = pl.DataFrame(
        [("AAA", SESSION, 10.0, 10.5, 10.0, 10.5, 500.0)], schema=DAILY_SCHEMA, orient="row"
    )
    assert step.daily_bars.equals(bar)
    assert store.load_bars().equals(bar)


def test_a_stored_session_bar_its_minutes_left_unchanged_is_not_emitted_again(
    tmp_path: Path,
) -> None:
    """The same crash after the close, and a start whose first batch is a trade of the next
    session only: the stored bar, which the minutes taken up still make, is not emitted again
    (no correction counted)."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(19, 50))
    stepped(engine, intraday, at(19, 51), trades(Tick("AAA", at(19, 50, 30), 10.0, 100.0, "a")))
    stepped(engine, intraday, at(19, 52), trades(Tick("AAA", at(19, 51, 30), 10.1, 100.0, "b")))
    intraday.save_later()
    intraday.wait()
    stepped(engine, intraday, at(20, 0, 3), FeedBatch.empty("t"))
    engine, intraday = started(store, at(20, 1))  # (after a kill -9; "b" journaled)
    step = stepped(engine, intraday, at(20, 1, 5), FeedBatch.empty("t"))
    assert step.daily_bars.is_empty()


def test_old_trades_journaled_then_sent_again_after_a_crash_are_duplicates(
    tmp_path: Path,
) -> None:
    """A fresh daemon's first batch holds trades two hours old; it dies (kill -9) before any
    save, and after the start the broker sends them again in the first batch: every one is a
    duplicate and the session bar's volume counts them once (500). The keys taken up from the
    journal were moved under the start's bucket, where the first batch's copies were not
    looked for."""
    store = Store(tmp_path)
    old = trades(*[Tick("AAA", at(15, k, 5), 10.0, 100.0, f"t{k}") for k in range(5)])
    engine, intraday = started(store, at(17, 0))
    stepped(engine, intraday, at(17, 0, 5), old)
    engine, intraday = started(store, at(17, 1))  # (after a kill -9: only the journal)
    assert [r.reason for r in engine.ingest(old)] == ["duplicate"] * 5
    step = stepped(engine, intraday, at(20, 1), FeedBatch.empty("t"))
    assert step.daily_bars.select("volume").rows() == [(500.0,)]


def test_a_start_after_a_kill_9_before_any_save_closes_from_where_the_journal_ends(
    tmp_path: Path,
) -> None:
    """A backlog being taken in (the close clock held at its data, 14:20:30, at 14:40) when a
    kill -9 comes before the first save: the start continues the close clock from where the
    journal's data end, so the minute of 14:20 stays open through the idle steps before the
    broker delivers the rest of the backlog, and its next trade is no late tick. (With no
    saved clock the first step closed every minute to the wall clock: the rest of the backlog
    came late.)"""
    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0))
    engine.ingest(trades(Tick("AAA", at(14, 19, 50), 10.0, 100.0, "a")))
    engine.ingest(trades(Tick("AAA", at(14, 20, 30), 10.1, 100.0, "b")))
    engine.advance(at(14, 40), close_at=at(14, 20, 30))  # (held: the backlog coming in)
    intraday.append(engine.take_accepted())  # (then kill -9)
    engine, intraday = started(store, at(14, 41))
    assert engine.book.closes_at == at(14, 20, 30)
    engine.advance(at(14, 41), close_at=engine.book.closes_at)  # (an idle step: held)
    engine.ingest(trades(Tick("AAA", at(14, 20, 50), 10.2, 100.0, "c")))
    closed = engine.advance(at(14, 42)).minute_bars  # (the backlog in: caught up)
    assert engine.book_counts() == {}
    assert closed.filter(pl.col("start") == at(14, 20)).select("volume").rows() == [(200.0,)]
