"""A feed down through the close: the session bars of the symbols whose minutes look cut short
are held back (`Engine(hold_cut_short=True)`, the daemon's `[engine] hold_cut_short`), released
when later minutes make them whole (a backfill), and refused when the session is forgotten
first; never for a halted symbol or a thin one. The daemon over MQTT does the same."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import polars as pl
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.clock import SimClock
from monitor.core.bars import BarBook
from monitor.core.engine import Engine
from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, FeedBatch
from monitor.core.rules.spec import RulesFile, parse_rules
from monitor.core.sessions import Sessions
from monitor.service import Daemon
from monitor.store import Store
from tests.test_restart_bars import until
from tests.test_service import daemon_running, write_config

DAY = dt.date(2024, 7, 16)  # regular hours 13:30-20:00 UTC
BEFORE = dt.date(2024, 7, 15)
OPEN = dt.datetime(2024, 7, 16, 13, 30, tzinfo=dt.UTC)
CLOSE = dt.datetime(2024, 7, 16, 20, 0, tzinfo=dt.UTC)
NOON = dt.datetime(2024, 7, 16, 16, 0, tzinfo=dt.UTC)  # (12:00 New York)
AFTER_CLOSE = CLOSE + dt.timedelta(seconds=10)

# +5% on the day: fires on a session closing at noon's +8%, not on the whole day's +2%.
SURGE = parse_rules("""
[[rules]]
id = "surge.1d"
kind = "surge"
universe = true
timeframe = "1d"
window = 1
min_return = 0.05
""")


def minutes(symbol: str, start: dt.datetime, end: dt.datetime, price: float) -> pl.DataFrame:
    """A provider's minute bars of `symbol` for every minute in [start, end), at `price`
    (volume 100 each)."""
    starts = pl.datetime_range(start, end, "1m", closed="left", time_zone="UTC", eager=True)
    n = starts.len()
    return pl.DataFrame(
        {"symbol": [symbol] * n, "start": starts, "open": [price] * n, "high": [price] * n,
         "low": [price] * n, "close": [price] * n, "volume": [100.0] * n},
        schema=MINUTE_SCHEMA,
    )  # fmt: skip


def previous_closes(*symbols: str) -> pl.DataFrame:
    """A session bar of each symbol on BEFORE, closing at 10."""
    n = len(symbols)
    return pl.DataFrame(
        {"symbol": list(symbols), "session": [BEFORE] * n, "open": [10.0] * n,
         "high": [10.0] * n, "low": [10.0] * n, "close": [10.0] * n, "volume": [1e5] * n},
        schema=DAILY_SCHEMA,
    )  # fmt: skip


def engine_with(sessions: Sessions, *, hold: bool, rules: RulesFile | None = None) -> Engine:
    engine = Engine(rules or SURGE, sessions, hold_cut_short=hold)
    engine.ingest_daily(previous_closes("WHOLE", "CUT"))
    engine.advance(sessions.close_of(BEFORE) + dt.timedelta(seconds=10))
    return engine


def step(engine: Engine, bars: pl.DataFrame, now: dt.datetime) -> tuple[pl.DataFrame, list[str]]:
    """`bars` (minute bars) in, the clock to `now`: the session bars and the alerts' symbols."""
    batch = FeedBatch.empty("feed")
    batch.minute_bars = bars
    engine.ingest(batch)
    done = engine.advance(now)
    return done.daily_bars, [a.symbol for a in done.alerts]


def the_day(price_at_noon: float = 10.8) -> pl.DataFrame:
    """WHOLE trades every minute of the day; CUT every minute until noon (at `price_at_noon`),
    then the feed is down through the close."""
    return pl.concat(
        [minutes("WHOLE", OPEN, CLOSE, 10.1), minutes("CUT", OPEN, NOON, price_at_noon)]
    ).sort("start", "symbol")


def the_afternoon() -> pl.DataFrame:
    """CUT's minutes from noon to the close (a REST backfill after the feed reconnects), its
    day ending +2%."""
    return minutes("CUT", NOON, CLOSE, 10.2)


def test_a_session_cut_short_at_the_close_is_held_and_fires_nothing(sessions: Sessions) -> None:
    """Without holding, CUT's session closes at noon's price (+8%) and the surge fires on it;
    held, only WHOLE's bar is built, CUT is held with why, and nothing fires."""
    partial = engine_with(sessions, hold=False)
    bars, fired = step(partial, the_day(), AFTER_CLOSE)
    assert sorted(bars.get_column("symbol")) == ["CUT", "WHOLE"]
    assert fired == ["CUT"]  # (the harm: an alert on a session that closed at noon)

    engine = engine_with(sessions, hold=True)
    bars, fired = step(engine, the_day(), AFTER_CLOSE)
    assert bars.get_column("symbol").to_list() == ["WHOLE"]
    assert fired == []
    held = engine.held()
    assert list(held) == [DAY]
    assert list(held[DAY]) == ["CUT"]
    assert held[DAY]["CUT"].startswith("CUT 2024-07-16: its data ends at 12:00 New York time")
    assert engine.book_counts()["session_held"] == 1
    assert engine.daily.filter(pl.col("session") == DAY).get_column("symbol").to_list() == ["WHOLE"]


def test_the_backfilled_afternoon_releases_the_held_bar_whole(sessions: Sessions) -> None:
    """The afternoon's minutes coming late (a backfill) release CUT's bar: it equals the bar
    of the whole day, is stored, and the session is evaluated again (the day ends +2%: no
    alert). Had the whole day really risen 8%, the late bar would fire then."""
    whole_day = engine_with(sessions, hold=False)
    expected, _ = step(whole_day, pl.concat([the_day(), the_afternoon()]), AFTER_CLOSE)

    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), AFTER_CLOSE)
    bars, fired = step(engine, the_afternoon(), AFTER_CLOSE + dt.timedelta(minutes=5))
    assert bars.equals(expected.filter(pl.col("symbol") == "CUT"))
    assert fired == []
    assert engine.held() == {}
    assert engine.book_counts()["session_released"] == 1
    stored = engine.daily.filter(pl.col("session") == DAY).sort("symbol")
    assert stored.equals(expected.sort("symbol"))

    rising = engine_with(sessions, hold=True)
    step(rising, the_day(), AFTER_CLOSE)
    late = minutes("CUT", NOON, CLOSE, 10.9)  # (the afternoon holds the gain: +9%)
    _, fired = step(rising, late, AFTER_CLOSE + dt.timedelta(minutes=5))
    assert fired == ["CUT"]


def test_a_held_bar_nothing_completes_is_refused_when_the_session_is_forgotten(
    sessions: Sessions,
) -> None:
    """No backfill: when the session after next closes, the book forgets the day and refuses
    CUT's bar (`session_cut_short`, counted, saying why); the day stays missing from CUT's
    history. A few minutes of the afternoon that still leave it cut short keep it held."""
    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), AFTER_CLOSE)
    early = minutes("CUT", NOON, NOON + dt.timedelta(minutes=20), 10.8)
    bars, _ = step(engine, early, AFTER_CLOSE + dt.timedelta(minutes=1))
    assert bars.is_empty()
    assert "12:20 New York time" in engine.held()[DAY]["CUT"]
    refused = []
    for day in (dt.date(2024, 7, 17), dt.date(2024, 7, 18)):
        done = engine.advance(sessions.close_of(day) + dt.timedelta(seconds=10))
        refused += [r for r in done.rejections if r.reason == "session_cut_short"]
    assert [r.symbol for r in refused] == ["CUT"]
    assert "no later minutes made it whole" in refused[0].raw
    assert engine.counts["session_cut_short"] == 1
    assert engine.held() == {}
    assert engine.daily.filter(pl.col("symbol") == "CUT").get_column("session").to_list() == [
        BEFORE
    ]


def test_a_halted_symbol_and_a_thin_one_are_not_held(sessions: Sessions) -> None:
    """A symbol halted at noon through the close has its last print for a close; a thin one
    (ten trades in the day, none after 14:00) is not cut short: both bars are built."""
    engine = engine_with(sessions, hold=True)
    halves = [OPEN + dt.timedelta(minutes=30 * i) for i in range(10)]  # (to 14:00)
    thin = pl.concat([minutes("THIN", t, t + dt.timedelta(minutes=1), 5.0) for t in halves])
    day = pl.concat([the_day(), thin]).sort("start")
    morning = pl.col("start") < NOON
    step(engine, day.filter(morning), NOON + dt.timedelta(minutes=2))
    engine.set_halted("CUT", True)  # (a feed's halt, at noon: it lasts through the close)
    bars, _ = step(engine, day.filter(~morning), AFTER_CLOSE)
    assert sorted(bars.get_column("symbol")) == ["CUT", "THIN", "WHOLE"]
    assert engine.held() == {}


def test_a_held_bar_survives_a_restart(sessions: Sessions, tmp_path: Path) -> None:
    """What is held goes into the book's saved state and the store's file of it, and comes
    back: the restarted book still holds CUT, and the backfill releases it there."""
    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), AFTER_CLOSE)
    store = Store(tmp_path)
    store.save_intraday(engine.book.state())
    saved = store.load_intraday()
    assert saved is not None
    assert saved.held.get_column("symbol").to_list() == ["CUT"]

    restarted = engine_with(sessions, hold=True)
    assert restarted.book.restore(saved, AFTER_CLOSE)
    assert restarted.held() == engine.held()
    bars, _ = step(restarted, the_afternoon(), AFTER_CLOSE + dt.timedelta(minutes=5))
    assert bars.get_column("symbol").to_list() == ["CUT"]
    assert BarBook(sessions).held() == {}


async def healthz(daemon: Daemon) -> dict[str, Any]:
    """GET /healthz of the running daemon."""
    from tests.security.daemon import http_get

    port = int(daemon.counters.get("http_port"))
    body: dict[str, Any] = json.loads(await asyncio.to_thread(http_get, port, "/healthz"))
    return body


@pytest.mark.integration
async def test_the_daemon_holds_a_session_its_feed_missed_the_end_of(tmp_path: Path) -> None:
    """Over MQTT: minute bars of two symbols, one of them only until noon, the clock past the
    close. The daemon stores WHOLE's session bar, holds CUT's (`session_bars_held` logged with
    the symbol, `bar_events{kind="session_held"}`), and stores it once the afternoon's bars
    come (a provider re-sending them)."""
    prefix = f"mm-held-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    topic = f"{prefix}/bars"

    async def publish(bars: pl.DataFrame) -> None:
        wire = [
            {"symbol": s, "timeframe": "1m", "start": int(start.timestamp() * 1000),
             "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for s, start, o, h, lo, c, v in bars.iter_rows()
        ]  # fmt: skip
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            for i in range(0, len(wire), 200):
                await client.publish(topic, json.dumps(wire[i : i + 200]).encode(), qos=1)

    clock = SimClock(OPEN)
    day = the_day()
    try:
        with capture_logs() as logs:
            async with daemon_running(conf, clock=clock) as daemon:
                clock.set(CLOSE - dt.timedelta(seconds=30))
                await publish(day)
                await until(lambda: daemon.counters.total("bars_in") >= day.height)
                clock.set(AFTER_CLOSE)
                # (the step's counts come after it: waited for last)
                await until(lambda: daemon.counters.get("bar_events", kind="session_held") > 0)
                stored = daemon.engine.daily.filter(pl.col("session") == DAY)
                assert stored.get_column("symbol").to_list() == ["WHOLE"]
                assert list(daemon.engine.held()[DAY]) == ["CUT"]
                assert daemon.counters.get("bar_events", kind="session_held") == 1
                said = await healthz(daemon)
                assert said["status"] == "degraded"
                assert "session bars held back as cut short (1 of 2024-07-16)" in said["reasons"][0]
                await publish(the_afternoon())
                clock.set(AFTER_CLOSE + dt.timedelta(minutes=1))
                await until(lambda: daemon.engine.held() == {})
                await until(lambda: daemon.engine.daily.height >= 2)
                stored = daemon.engine.daily.filter(pl.col("session") == DAY).sort("symbol")
                assert stored.get_column("symbol").to_list() == ["CUT", "WHOLE"]
                assert stored.filter(pl.col("symbol") == "CUT").get_column("close").item() == 10.2
                async with asyncio.timeout(10):  # (the loop's summary follows the step)
                    while [r for r in (await healthz(daemon))["reasons"] if "held" in r]:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
        said = [e for e in logs if e["event"] == "session_bars_held"]
        assert [e["symbols"] for e in said] == [["CUT"]]
        assert said[0]["session"] == "2024-07-16"
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


def test_a_crash_after_the_close_keeps_the_held_bar_held(
    sessions: Sessions, tmp_path: Path
) -> None:
    """The state saved before the close, the close (WHOLE's bar stored, CUT's held), then a
    crash before the next save: at the restart the store holds WHOLE's bar of the day, which
    is not emitted again, and CUT's is judged again and held, not built of its morning."""
    from monitor import logs
    from monitor.core.counters import Counters
    from monitor.intraday import Intraday
    from monitor.journal import Journal

    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), CLOSE - dt.timedelta(seconds=30))
    saved = engine.book.state()  # (the last periodic save)
    step(engine, the_day().clear(), AFTER_CLOSE)
    stored = engine.daily.filter(pl.col("session") == DAY)
    assert stored.get_column("symbol").to_list() == ["WHOLE"]
    store = Store(tmp_path / "store")
    store.save_intraday(saved)

    restarted = engine_with(sessions, hold=True)  # (its history: the store's bars)
    restarted.ingest_daily(stored)
    restarted.advance(AFTER_CLOSE)
    now = AFTER_CLOSE + dt.timedelta(seconds=30)
    intraday = Intraday(store, restarted, logs.get("test"), Counters(), Journal(tmp_path / "j"))
    intraday.restore(now)
    done = restarted.advance(now)
    assert done.daily_bars.is_empty()  # (WHOLE's is the store's; CUT's is held)
    assert list(restarted.held()[DAY]) == ["CUT"]
    bars, _ = step(restarted, the_afternoon(), now + dt.timedelta(minutes=1))
    assert bars.get_column("symbol").to_list() == ["CUT"]
    assert bars.get_column("close").item() == 10.2


@pytest.mark.parametrize("next_day", [False, True])
def test_a_held_bar_of_a_session_forgotten_while_the_daemon_was_down_is_refused(
    sessions: Sessions, next_day: bool
) -> None:
    """The state saved with CUT held (at the day's close, or at the next day's, WHOLE's
    minutes of it kept), the daemon back after the session after next closed: the book no
    longer keeps the day, and CUT's bar is refused (said, with why), not dropped without a
    word, whether the rest of the state is stale or taken up."""
    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), AFTER_CLOSE)
    if next_day:
        following = dt.date(2024, 7, 17)
        start, end = sessions.open_of(following), sessions.close_of(following)
        step(engine, minutes("WHOLE", start, end, 10.2), end + dt.timedelta(seconds=10))
        assert list(engine.held()) == [DAY]
    saved = engine.book.state()
    later = sessions.close_of(dt.date(2024, 7, 18)) + dt.timedelta(minutes=5)
    restarted = engine_with(sessions, hold=True)
    assert restarted.book.restore(saved, later) == next_day
    refused = [r for r in restarted.advance(later).rejections if r.reason == "session_cut_short"]
    assert [r.symbol for r in refused] == ["CUT"]
    assert refused[0].raw.startswith("CUT 2024-07-16: its data ends at 12:00 New York time")
    assert restarted.counts["session_cut_short"] == 1


async def test_held_and_refused_bars_are_said_with_the_symbols_and_why(
    sessions: Sessions,
) -> None:
    """The daemon's loop says `session_bars_held` at the close, a line per session, and
    `session_bars_refused` when the session is forgotten, each naming the symbols, with a
    reason not cut short; the refusal is counted as a rejection and not said again in the
    rejections' own line."""
    from monitor.core.counters import Counters
    from tests.test_pipeline import drained

    engine = engine_with(sessions, hold=True)
    batch = FeedBatch.empty("feed")
    batch.minute_bars = the_day()
    engine.ingest(batch)
    counters = Counters()
    said = []
    for now in (AFTER_CLOSE, sessions.close_of(dt.date(2024, 7, 18)) + dt.timedelta(seconds=10)):
        said += await drained(engine, [FeedBatch.empty("idle")], counters, now)
    held = [e for e in said if e["event"] == "session_bars_held"]
    assert [(e["session"], e["symbols"], e["held"]) for e in held] == [("2024-07-16", ["CUT"], 1)]
    refused = [e for e in said if e["event"] == "session_bars_refused"]
    assert [(e["bars"], e["symbols"]) for e in refused] == [(1, ["CUT"])]
    assert refused[0]["example"].endswith(
        "no later minutes made it whole: its session bar is not built"
    )
    assert not [e for e in said if e.get("reason") == "session_cut_short"]
    assert counters.get("rejections", reason="session_cut_short") == 1


def test_a_halt_the_next_day_does_not_keep_the_backfill_out(sessions: Sessions) -> None:
    """CUT held at the close, halted the next morning: the backfill of the held day's
    afternoon is of before the halt, and releases the bar."""
    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), AFTER_CLOSE)
    morning = dt.datetime(2024, 7, 17, 14, 0, tzinfo=dt.UTC)
    engine.advance(morning)
    engine.set_halted("CUT", True, at=morning)
    bars, _ = step(engine, the_afternoon(), morning + dt.timedelta(minutes=1))
    assert bars.select("symbol", "session").rows() == [("CUT", DAY)]
    assert engine.held() == {}


def test_a_providers_session_bar_takes_the_place_of_a_held_one(sessions: Sessions) -> None:
    """A provider's session bar of the held day (its daily bars feed): stored as ever, the
    symbol is no longer listed as held, and nothing is refused for it later."""
    engine = engine_with(sessions, hold=True)
    step(engine, the_day(), AFTER_CLOSE)
    official = FeedBatch.empty("provider")
    official.daily_bars = previous_closes("CUT").with_columns(
        pl.lit(DAY).alias("session"), pl.lit(10.2).alias("close"), pl.lit(10.9).alias("high")
    )
    engine.ingest(official)
    engine.advance(AFTER_CLOSE + dt.timedelta(minutes=1))
    assert engine.held() == {}
    refused = []
    for day in (dt.date(2024, 7, 17), dt.date(2024, 7, 18)):
        done = engine.advance(sessions.close_of(day) + dt.timedelta(seconds=10))
        refused += [r for r in done.rejections if r.reason == "session_cut_short"]
    assert refused == []
    stored = engine.daily.filter((pl.col("symbol") == "CUT") & (pl.col("session") == DAY))
    assert stored.get_column("close").to_list() == [10.2]


async def test_a_step_closing_two_sessions_says_each_sessions_held_bars(
    sessions: Sessions,
) -> None:
    """A catch-up step that closes two sessions, each with a bar held (CUT's on the 16th,
    OTHER's on the 17th): a `session_bars_held` line for each session, naming its symbol."""
    from monitor.core.counters import Counters
    from tests.test_pipeline import drained

    engine = engine_with(sessions, hold=True)
    following = dt.date(2024, 7, 17)
    start = sessions.open_of(following)
    second = pl.concat(
        [
            minutes("WHOLE", start, sessions.close_of(following), 10.1),
            minutes("OTHER", start, start + dt.timedelta(hours=2), 10.1),
        ]
    )
    batch = FeedBatch.empty("feed")
    batch.minute_bars = pl.concat([the_day(), second]).sort("start", "symbol")
    engine.ingest(batch)
    now = sessions.close_of(following) + dt.timedelta(seconds=10)
    logs = await drained(engine, [FeedBatch.empty("idle")], Counters(), now)
    held = [(e["session"], e["symbols"]) for e in logs if e["event"] == "session_bars_held"]
    assert held == [("2024-07-16", ["CUT"]), ("2024-07-17", ["OTHER"])]
