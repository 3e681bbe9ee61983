"""A delayed stream (Alpaca's delayed_sip, 15 minutes behind the clock) after a kill -9: its gap
starts where its own data ended, not at the daemon's newest data (a real-time feed's beside it,
or the clock of the last save of the sessions under way); against local Alpaca-like streams
and REST API, the daemon on a simulated clock, real Redis. The kill -9 is the store as it is
left while the daemon runs (copied, as tests/test_restart_bars.py does), a second daemon
started on it."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis.asyncio as aioredis

from monitor.clock import SimClock
from monitor.store import Store
from tests.feeds.fake_providers import FakeRest, FakeStream, Trade, tape_bar
from tests.feeds.test_backfill_tail import until
from tests.test_service import daemon_running

pytestmark = pytest.mark.integration

UTC = dt.UTC


def at(minute: int, second: float = 0.0) -> dt.datetime:
    """14:`minute`:`second` of Tuesday 2024-07-16 (regular hours), UTC."""
    return dt.datetime(2024, 7, 16, 14, minute, tzinfo=UTC) + dt.timedelta(seconds=second)


# DDD's tape (the delayed stream's symbol): the stream sends the first two before the crash
# (15 minutes after they happened), the next two never (back after the restart, it goes on
# from 15 minutes before the clock, 14:18:20); the last only the REST API has as yet.
SENT: list[Trade] = [(at(15, 10), 20.0, 100.0), (at(16, 20), 20.2, 100.0)]
LOST: list[Trade] = [(at(16, 50), 20.6, 300.0), (at(17, 30), 19.8, 200.0)]
LATER: Trade = (at(32, 10), 20.1, 100.0)
LIVE: list[Trade] = [(at(30, 20), 10.0, 100.0), (at(31, 20), 10.1, 100.0)]  # AAA's, real time


def message(symbol: str, n: int, trade: Trade) -> dict[str, Any]:
    """Alpaca's stream message of `symbol`'s trade number `n`."""
    ts, price, size = trade
    stamp = ts.isoformat().replace("+00:00", "Z")
    return {"T": "t", "S": symbol, "i": n, "x": "V", "p": price, "s": size, "t": stamp,
            "c": ["@"], "z": "C"}  # fmt: skip


def write_config(folder: Path, prefix: str, feeds: dict[str, tuple[str, str]], rest: str) -> Path:
    """The daemon on `feeds` (name -> its stream's URL and its symbol), Alpaca's, each with its
    REST backfill at `rest`; the sessions under way saved only when a test says so."""
    folder.mkdir()
    rules = folder / "rules.toml"
    rules.write_text(
        '[[rules]]\nid = "spike"\nkind = "surge"\nsymbols = ["AAA"]\ntimeframe = "1m"\n'
        "window = 1\nmin_return = 0.5\n"
    )
    text = f'[store]\npath = "{folder / "store"}"\nintraday_interval_s = 3600\n'
    for name, (url, symbol) in feeds.items():
        text += (
            f'[[feeds]]\nname = "{name}"\nkind = "websocket"\nprovider = "alpaca"\n'
            f'url = "{url}"\nrest_url = "{rest}"\nsymbols = ["{symbol}"]\n'
            'key_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'
        )
    text += (
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{prefix}:alerts"\n'
        f'[rules]\nfile = "{rules}"\n[http]\nport = 0\n'
        "[engine]\nbatch_max_age_ms = 20\nhold_cut_short = false\n"
    )
    path = folder / "monitor.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def a_step_later(daemon: Any, clock: SimClock) -> None:
    """Once a step the engine loop began after this call is done, and so the steps before it
    with their acks: the clock a second on, until a step has seen it (its feed lag)."""
    lag = daemon.counters.get("feed_lag_seconds")
    clock.set(clock.now() + dt.timedelta(seconds=1))
    await until(lambda: daemon.counters.get("feed_lag_seconds") > lag)


def bars_of(minutes: pl.DataFrame, symbol: str) -> dict[dt.datetime, dict[str, float]]:
    """`symbol`'s closed minute bars among `minutes` (the engine's), by start."""
    rows = minutes.filter(pl.col("symbol") == symbol).sort("start")
    keys = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
    return {r["start"]: {k: r[c] for k, c in keys.items()} for r in rows.iter_rows(named=True)}


@pytest.mark.parametrize("beside", ["a real-time feed", "nothing, after a save"])
async def test_a_delayed_feed_killed_fetches_the_minutes_it_had_not_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beside: str
) -> None:
    """A delayed stream (`late`, DDD) has delivered DDD's trades up to 14:16:20 by 14:31:30,
    beside a real-time one (`live`, AAA, up to 14:31:20), or alone with the sessions under way
    saved at 14:31:30; the daemon is killed (kill -9) and started again at 14:33:20. The
    delayed feed fetches DDD from 14:15 (the minute before its data ended), and DDD's bars of
    14:16 and 14:17, with the trades the stream never sent, are the REST API's true ones; the
    real-time feed fetches from 14:30. Both used to fetch from 14:30 (the newest data the
    daemon took in, or its clock at the save): DDD's 14:16 short of two trades, its 14:17
    missing, for good. (Stopped gracefully instead, the daemon owes DDD from 14:16:20.)"""
    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    prefix = f"mm-delayed-{uuid.uuid4().hex[:8]}"
    alone = beside != "a real-time feed"
    clock = SimClock(at(30))
    try:
        async with FakeStream("alpaca") as live, FakeStream("alpaca") as late, FakeRest() as api:
            api.tape = {"AAA": LIVE, "DDD": [*SENT, *LOST, LATER]}
            feeds = {"late": (late.url.replace("/stream", "/v2/delayed_sip"), "DDD")}
            if not alone:
                feeds["live"] = (live.url.replace("/stream", "/v2/iex"), "AAA")
            conf = write_config(tmp_path / "a", prefix, feeds, api.url)
            conf_b = write_config(tmp_path / "b", prefix, feeds, api.url)
            async with daemon_running(conf, clock=clock) as daemon:
                counters = daemon.counters
                await until(lambda: counters.total("feed_subscribes") == len(feeds))
                for i, sent in enumerate(SENT):
                    clock.set(at(30 + i, 30))
                    await late.push([message("DDD", i, sent)])
                    if not alone:
                        await live.push([message("AAA", i, LIVE[i])])
                    ticks = len(feeds) * (i + 1)
                    await until(lambda n=ticks: counters.get("ticks_in") == n)
                if alone:
                    daemon.intraday.save_later()
                    await until(lambda: counters.get("intraday_saves") == 1)
                await a_step_later(daemon, clock)
                shutil.copytree(
                    tmp_path / "a" / "store",
                    tmp_path / "b" / "store",
                    ignore=shutil.ignore_patterns(".*"),
                )  # (the store as a kill -9 now leaves it)
            left = Store(tmp_path / "b" / "store").load_owed_backfills()
            api.requests.clear()
            clock = SimClock(at(33, 20))
            async with daemon_running(conf_b, clock=clock) as daemon:
                counters = daemon.counters
                await until(lambda: counters.total("feed_subscribes") == len(feeds))
                await until(lambda: counters.total("backfill_bars") >= 1 + 2 * (not alone))
                await a_step_later(daemon, clock)
                got = bars_of(daemon.engine.minutes, "DDD")
        asked = sorted((q["feed"], q["symbols"], q["start"], q["end"]) for _, q, _ in api.requests)
        expected = [("delayed_sip", "DDD", "2024-07-16T14:15:00Z", "2024-07-16T14:32:59Z")]
        if not alone:
            expected.append(("iex", "AAA", "2024-07-16T14:30:00Z", "2024-07-16T14:32:59Z"))
        assert asked == expected
        tape = [*SENT, *LOST]
        assert {m: got.get(m) for m in (at(15), at(16), at(17))} == {
            at(m): tape_bar([t for t in tape if t[0].minute == m]) for m in (15, 16, 17)
        }
        assert got[at(16)] == {"o": 20.2, "h": 20.6, "l": 20.2, "c": 20.6, "v": 400.0}
        # (killed, the store owed DDD from the minute its data ends in, the real-time feed
        # nothing; stopped gracefully, from where its data ends, as it always did)
        assert left == {"late": "2024-07-16T14:16:00+00:00"}
        owed = Store(tmp_path / "a" / "store").load_owed_backfills()
        assert owed == {"late": "2024-07-16T14:16:20+00:00"}
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()
