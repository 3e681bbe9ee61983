"""Alpaca's trade cancels ("x") and corrections ("c") through the daemon: a local server
speaking Alpaca's stream protocol, the daemon on a simulated clock, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
import redis.asyncio as aioredis

from monitor.clock import SimClock
from monitor.feeds.alpaca import decode_alpaca
from tests.feeds.fake_providers import FakeStream
from tests.test_service import daemon_running, read_stream

pytestmark = pytest.mark.integration

UTC = dt.UTC
RULES = (
    '[[rules]]\nid = "spike"\nkind = "surge"\nsymbols = ["AAA", "BBB"]\ntimeframe = "1m"\n'
    "window = 1\nmin_return = 0.05\n"
)


def at(hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    """An instant of Tuesday 2024-07-16 (regular hours 13:30-20:00 UTC)."""
    return dt.datetime(2024, 7, 16, hour, minute, tzinfo=UTC) + dt.timedelta(seconds=second)


def trade(symbol: str, trade_id: int, ts: dt.datetime, price: float) -> dict[str, Any]:
    """An Alpaca trade message reported by exchange V."""
    stamp = ts.isoformat().replace("+00:00", "Z")
    return {"T": "t", "S": symbol, "i": trade_id, "x": "V", "p": price, "s": 100, "t": stamp,
            "c": ["@"], "z": "C"}  # fmt: skip


def write_config(tmp: Path, prefix: str, url: str) -> Path:
    """The daemon on the Alpaca stream at `url` alone, a 1m surge rule (5% in a minute)."""
    rules = tmp / "rules.toml"
    rules.write_text(RULES)
    path = tmp / "monitor.toml"
    path.write_text(
        f'[store]\npath = "{tmp / "store"}"\n'
        f'[[feeds]]\nname = "alpaca"\nkind = "websocket"\nprovider = "alpaca"\nurl = "{url}"\n'
        'symbols = ["AAA", "BBB"]\nkey_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{prefix}:alerts"\n'
        f'[rules]\nfile = "{rules}"\n[http]\nport = 0\n'
        "[engine]\nbatch_max_age_ms = 20\nhold_cut_short = false\n"
    )
    path.chmod(0o600)
    return path


@contextlib.asynccontextmanager
async def alerts_key() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; its alert stream deleted after."""
    prefix = f"mm-cancels-{uuid.uuid4().hex[:8]}"
    try:
        yield prefix
    finally:
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


@contextlib.asynccontextmanager
async def alpaca_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str, start: dt.datetime
) -> AsyncIterator[tuple[FakeStream, Any, SimClock]]:
    """A daemon on a local Alpaca stream, its clock at `start` and its keys under `prefix`,
    once it has subscribed: the stream, the daemon and its clock."""
    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    clock = SimClock(start)
    async with FakeStream("alpaca") as fake:
        conf = write_config(tmp_path, prefix, fake.url)
        async with daemon_running(conf, clock=clock) as daemon:
            await asyncio.wait_for(fake.subscribed.wait(), 10)
            yield fake, daemon, clock


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_busted_print_cancelled_before_its_minute_closes_fires_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AAA and BBB trade at 10 in 19:50 and 19:51, then print 11 (+10%) as 19:51's last
    trade; Alpaca cancels AAA's before the minute closes. BBB's minute fires the 1m surge
    rule, AAA's does not, and AAA's session bar has a high of 10, BBB's 11. (Before, the
    cancel was only counted as ignored: AAA fired too, and its day's high was the bad print.)"""
    async with alerts_key() as prefix:
        async with alpaca_daemon(tmp_path, monkeypatch, prefix, at(19, 49, 50)) as run:
            fake, daemon, clock = run
            assert daemon.engine.book.keeps_trades
            clock.set(at(19, 50, 30))
            await fake.push([trade(s * 3, i, at(19, 50, 10), 10.0) for i, s in enumerate("AB")])
            await until(lambda: daemon.counters.get("ticks_in") == 2)
            clock.set(at(19, 51, 30))
            await fake.push(
                [trade(s * 3, 10 + i, at(19, 51, 5), 10.0) for i, s in enumerate("AB")]
                + [trade(s * 3, 20 + i, at(19, 51, 20), 11.0) for i, s in enumerate("AB")]
            )
            await until(lambda: daemon.counters.get("ticks_in") == 6)
            bust = {"T": "x", "S": "AAA", "i": 20, "x": "V", "p": 11.0, "s": 100, "a": "C",
                    "t": "2024-07-16T19:51:25Z", "z": "C"}  # fmt: skip
            await fake.push([bust])
            taken = (
                ("cancels_in", {}),
                ("feed_ignored", {"feed": "alpaca"}),
            )  # (before: ignored)
            await until(lambda: sum(daemon.counters.get(n, **k) for n, k in taken) == 1)
            clock.set(at(19, 52, 10))
            await until(lambda: daemon.counters.get("alerts_fired", rule="spike") >= 1)
            clock.set(at(20, 0, 10))
            await until(lambda: daemon.counters.get("bars_closed", timeframe="1d") >= 2)
            daily = daemon.engine.daily.sort("symbol").select("symbol", "high").rows()
            assert daily == [("AAA", 10.0), ("BBB", 11.0)]
            assert daemon.counters.get("bar_events", kind="trade_cancelled") == 1
        alerts = await read_stream(f"{prefix}:alerts", 1, timeout_s=5)
        assert [(a.rule, a.symbol) for a in alerts] == [("spike", "BBB")]


def test_a_correction_decodes_to_the_trade_it_replaces_and_the_new_one() -> None:
    """Alpaca's "c" names the trade taken back as its tick's id ("V:20") and the corrected
    one ("V:21" at 10.5 for 300); one whose new conditions keep it out of bars is a cancel; a
    cancel "x" (or error) names the trade alone."""
    frame = (
        '[{"T":"c","S":"AAA","x":"V","oi":20,"op":11.0,"os":100,"oc":["@"],"ci":21,"cp":10.5,'
        '"cs":300,"cc":["@"],"t":"2024-07-16T19:51:30Z","z":"C"},'
        '{"T":"c","S":"AAA","x":"V","oi":22,"op":11.0,"os":100,"oc":["@"],"ci":23,"cp":10.5,'
        '"cs":300,"cc":["@","Z"],"t":"2024-07-16T19:51:30Z","z":"C"},'
        '{"T":"x","S":"AAA","i":24,"x":"V","p":11.0,"s":100,"a":"E","t":"2024-07-16T19:51:31Z"}]'
    )
    decoded = decode_alpaca(frame, feed="a")
    got = decoded.batch.cancels.select("id", "new_id", "new_price", "new_size").rows()
    assert got == [
        ("V:20", "V:21", 10.5, 300.0),
        ("V:22", None, None, None),
        ("V:24", None, None, None),
    ]
    assert (decoded.ignored, decoded.batch.rejections, decoded.elements()) == (0, [], 3)
    assert decoded.batch.cancels.get_column("ts").to_list()[2] == at(19, 51, 31)
    assert pl.Series(decoded.batch.cancels.get_column("symbol")).to_list() == ["AAA"] * 3


async def test_without_a_feed_that_sends_cancels_no_trade_is_kept(tmp_path: Path) -> None:
    """A daemon of MQTT feeds alone (no provider of them takes a trade back) keeps no ticks
    for cancels, whatever `[engine] cancel_window_s` says: memory and saves stay as they were."""
    from tests.test_service import write_config as mqtt_config

    conf = mqtt_config(tmp_path, f"mm-cancels-{uuid.uuid4().hex[:8]}")
    async with daemon_running(conf) as daemon:
        assert not daemon.engine.book.keeps_trades


async def test_a_cancel_of_a_trade_waiting_for_the_clock_leaves_the_bars_of_the_clean_tape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock jumps from 19:50:30 to 19:53:30 (a stalled step, a suspended host) and the
    next frame brings 19:53's trades, more than a minute past the book's clock (its last
    advance): they wait for the step's advance. AAA's spike to 11 (+10%) is cancelled in
    the same frame; BBB trades the same tape without it. AAA's minutes and alerts are BBB's:
    none fires (before, the cancel was `cancel_unknown_trade`, the spike closed AAA's 19:53
    and fired the 1m surge rule). (An idle step between the jump and the frame would take
    the trades at once; the cancel applies then too.)"""
    async with alerts_key() as prefix:
        async with alpaca_daemon(tmp_path, monkeypatch, prefix, at(19, 49, 50)) as run:
            fake, daemon, clock = run
            clock.set(at(19, 50, 30))
            await fake.push([trade(s * 3, i, at(19, 50, 10), 10.0) for i, s in enumerate("AB")])
            await until(lambda: daemon.counters.get("ticks_in") == 2)
            clock.set(at(19, 53, 30))
            bust = {"T": "x", "S": "AAA", "i": 20, "x": "V", "p": 11.0, "s": 100, "a": "C",
                    "t": "2024-07-16T19:53:25Z", "z": "C"}  # fmt: skip
            await fake.push(
                [trade(s * 3, 10 + i, at(19, 53, 5), 10.0) for i, s in enumerate("AB")]
                + [trade("AAA", 20, at(19, 53, 20), 11.0), bust]
            )
            await until(lambda: daemon.counters.get("cancels_in") == 1)
            clock.set(at(19, 54, 10))
            await until(lambda: daemon.counters.get("bars_closed", timeframe="1m") >= 4)
            minutes = daemon.engine.minutes.sort("symbol", "start")
            got = {
                s: minutes.filter(pl.col("symbol") == s).drop("symbol").rows()
                for s in ("AAA", "BBB")
            }
            assert got["AAA"] == got["BBB"]
            highs = [(start, high) for start, _, high, *_ in got["AAA"]]
            assert highs == [(at(19, 50), 10.0), (at(19, 53), 10.0)]
            assert daemon.counters.get("bar_events", kind="trade_cancelled") == 1
            assert daemon.counters.get("rejections", reason="cancel_unknown_trade") == 0
            assert daemon.counters.get("alerts_fired", rule="spike") == 0
        assert await read_stream(f"{prefix}:alerts", 1, timeout_s=1) == []


async def test_a_correction_of_a_trade_its_conditions_kept_out_places_it_at_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AAA's 19:51:20 print at 10.6 comes sold out of sequence (condition Z: kept out of bars,
    `trade_condition`); once 19:51 has closed (at 10), Alpaca corrects it to a regular trade
    (`cc` ["@"]), the message stamped 19:52:15. BBB trades the same tape with the corrected
    trade from the start. The corrected trade goes into AAA's 19:51 (emitted again, evaluated
    again as the last minute): AAA's minutes and alerts are BBB's, the 1m surge (+6%) on
    both (before: `cancel_unknown_trade`, AAA's 19:51 closed at 10 and fired nothing)."""
    async with alerts_key() as prefix:
        async with alpaca_daemon(tmp_path, monkeypatch, prefix, at(19, 49, 50)) as run:
            fake, daemon, clock = run
            clock.set(at(19, 50, 30))
            await fake.push([trade(s * 3, i, at(19, 50, 10), 10.0) for i, s in enumerate("AB")])
            await until(lambda: daemon.counters.get("ticks_in") == 2)
            clock.set(at(19, 51, 30))
            out_of_sequence = {**trade("AAA", 20, at(19, 51, 20), 10.6), "c": ["@", "Z"]}
            await fake.push(
                [trade(s * 3, 10 + i, at(19, 51, 5), 10.0) for i, s in enumerate("AB")]
                + [out_of_sequence, trade("BBB", 21, at(19, 51, 20), 10.6)]
            )
            await until(lambda: daemon.counters.get("ticks_in") == 5)
            assert daemon.counters.get("rejections", reason="trade_condition") == 1
            clock.set(at(19, 52, 10))
            await until(lambda: daemon.counters.get("alerts_fired", rule="spike") == 1)
            correction = {"T": "c", "S": "AAA", "x": "V", "oi": 20, "op": 10.6, "os": 100,
                          "oc": ["@", "Z"], "ci": 22, "cp": 10.6, "cs": 100, "cc": ["@"],
                          "t": "2024-07-16T19:52:15Z", "z": "C"}  # fmt: skip
            await fake.push([correction])
            await until(lambda: daemon.counters.get("cancels_in") == 1)
            clock.set(at(19, 52, 20))
            await until(lambda: daemon.counters.get("alerts_fired", rule="spike") == 2)
            minutes = daemon.engine.minutes.sort("symbol", "start")
            got = {
                s: minutes.filter(pl.col("symbol") == s).drop("symbol").rows()
                for s in ("AAA", "BBB")
            }
            assert got["AAA"] == got["BBB"]
            assert got["AAA"][-1] == (at(19, 51), 10.0, 10.6, 10.0, 10.6, 200.0)
            kind = {"kind": "rejected_trade_corrected"}
            assert daemon.counters.get("bar_events", **kind) == 1
            assert daemon.counters.get("rejections", reason="cancel_unknown_trade") == 0
        alerts = await read_stream(f"{prefix}:alerts", 2, timeout_s=5)
        assert sorted((a.rule, a.symbol, a.ts) for a in alerts) == [
            ("spike", "AAA", "2024-07-16T19:52:00Z"),
            ("spike", "BBB", "2024-07-16T19:52:00Z"),
        ]


@pytest.mark.parametrize(
    "extra",
    [[], [{"T": "q", "S": "AAA"}], [{"T": "s", "S": "AAA", "sc": "H"}]],
    ids=["trades-only", "typed", "element-by-element"],
)
def test_trades_kept_out_by_their_conditions_are_noted_for_their_corrections(
    extra: list[dict[str, Any]],
) -> None:
    """A trade whose conditions keep it out of bars is rejected as `trade_condition` and
    noted in the batch's `excluded` (symbol, time, the id its correction names), however the
    frame is decoded: a correction that makes it a regular trade needs its time."""
    kept_out = {**trade("AAA", 20, at(19, 51, 20), 10.6), "c": ["@", "Z"]}
    frame = msgspec.json.encode([trade("AAA", 19, at(19, 51, 5), 10.0), kept_out, *extra])
    batch = decode_alpaca(frame, feed="a").batch
    assert [r.reason for r in batch.rejections] == ["trade_condition"]
    assert batch.excluded.rows() == [("AAA", at(19, 51, 20), "V:20")]
    assert batch.ticks.get_column("id").to_list() == ["V:19"]


async def test_a_cancelled_closing_print_leaves_the_session_the_providers_last_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alpaca's bar of 19:59 for AAA and BBB, and AAA's closing print at 11 (20:00:00.5, merged
    into that bar: Alpaca files it under 20:00), cancelled after the close. AAA's session
    bar, corrected, is BBB's (the same bar, no closing print): the cancel is applied
    (before: `cancel_provider_bar`, and AAA's session closed at the busted 11)."""
    async with (
        alerts_key() as prefix,
        alpaca_daemon(tmp_path, monkeypatch, prefix, at(19, 59, 30)) as run,
    ):
        fake, daemon, clock = run
        clock.set(at(20, 0, 1))
        bars = [{"T": "b", "S": s * 3, "o": 10.0, "h": 10.1, "l": 9.9, "c": 10.0,
                 "v": 1000, "t": "2024-07-16T19:59:00Z"} for s in "AB"]  # fmt: skip
        await fake.push([*bars, trade("AAA", 30, at(20, 0, 0.5), 11.0)])
        await until(lambda: daemon.counters.get("ticks_in") == 1)
        clock.set(at(20, 0, 11))  # (the session's bars: [engine] session_close_delay_s)
        await until(lambda: daemon.counters.get("bars_closed", timeframe="1d") >= 2)
        assert daemon.engine.daily.filter(pl.col("symbol") == "AAA")["close"][0] == 11.0
        bust = {"T": "x", "S": "AAA", "i": 30, "x": "V", "p": 11.0, "s": 100, "a": "C",
                "t": "2024-07-16T20:00:12Z", "z": "C"}  # fmt: skip
        await fake.push([bust])
        outcomes = (
            ("bar_events", {"kind": "trade_cancelled"}),
            ("rejections", {"reason": "cancel_provider_bar"}),
        )
        await until(lambda: sum(daemon.counters.get(n, **k) for n, k in outcomes) == 1)
        assert daemon.counters.get("rejections", reason="cancel_provider_bar") == 0
        clock.set(at(20, 0, 14))
        await until(lambda: daemon.counters.get("bars_closed", timeframe="1d") >= 3)
        daily = daemon.engine.daily.sort("symbol").drop("symbol").rows()
        assert daily[0] == daily[1] == (dt.date(2024, 7, 16), 10.0, 10.1, 9.9, 10.0, 1000.0)
        assert daemon.counters.get("bar_events", kind="trade_cancelled") == 1
