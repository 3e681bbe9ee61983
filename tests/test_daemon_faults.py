"""The daemon under faults: Redis dying, SIGTERM under load, restarts mid-streak, bad input."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import time
import uuid
from pathlib import Path

import aiomqtt
import pytest
import redis.asyncio as aioredis

from monitor import config as cfg
from monitor.cli import main
from monitor.clock import SimClock
from monitor.core.model import Alert, FeedBatch, decode_alert
from monitor.datafiles import DataSpec, read_daily
from monitor.feed_replay import bar_messages
from monitor.service import Daemon, run
from tests.alerts.redis_server import RedisServer
from tests.conftest import RUT
from tests.daemon_process import DaemonProcess
from tests.feeds.mosquitto_server import MosquittoServer
from tests.test_service import daemon_running, replay_alerts, subscribed, write_config

pytestmark = pytest.mark.integration


def rut_bars(first: str, last: str) -> list[bytes]:
    """^RUT daily bars between two sessions as generic MQTT bar messages."""
    bars = read_daily(
        DataSpec(path=str(RUT), symbol="^RUT"),
        start=dt.date.fromisoformat(first),
        end=dt.date.fromisoformat(last),
    ).bars
    return bar_messages(bars)


async def publish(topic: str, messages: list[bytes], qos: int = 1) -> None:
    """Publish messages in order on the real broker."""
    async with aiomqtt.Client("127.0.0.1", 1883) as client:
        for m in messages:
            await client.publish(topic, m, qos=qos)


async def publish_paced(
    topic: str, messages: list[bytes], daemon: Daemon, chunk: int = 200, timeout_s: float = 30.0
) -> None:
    """Publish in chunks, each once the daemon has taken the previous one in. The machine's
    Mosquitto queues at most 1000 QoS 1 messages per subscriber (its default) and drops the
    rest; a burst of more than that to a daemon that acknowledges after processing would lose
    bars to the broker's policy (the daemon counts those drops from $SYS), not to the daemon."""
    loop = asyncio.get_running_loop()
    start = daemon.counters.total("bars_in")
    for i in range(0, len(messages), chunk):
        part = messages[i : i + chunk]
        await publish(topic, part)
        deadline = loop.time() + timeout_s
        while daemon.counters.total("bars_in") < start + i + len(part):
            assert loop.time() < deadline, "the daemon did not take the bars in"
            await asyncio.sleep(0.05)


async def stream_alerts(url: str, stream: str, want: int, timeout_s: float = 20.0) -> list[Alert]:
    """The stream's alerts once there are `want` (or what is there at the timeout)."""
    client = aioredis.Redis.from_url(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            try:
                entries = await client.xrange(stream)
            except OSError:
                entries = []
            if len(entries) >= want or loop.time() > deadline:
                return [decode_alert(f[b"alert"]) for _, f in entries]
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def test_alerts_wait_in_the_outbox_while_redis_is_down(tmp_path: Path) -> None:
    """Redis killed mid-stream: alerts wait in the outbox and reach the stream in order once it
    is back; none is published twice."""
    prefix = f"mm-redis-{uuid.uuid4().hex[:8]}"
    with RedisServer() as server:
        conf = write_config(tmp_path, prefix)
        text = conf.read_text().replace("redis://127.0.0.1:6379/0", server.url)
        conf.write_text(text)
        assert (
            main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-09"])
            == 0
        )
        first = replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
        second = replay_alerts(dt.date(2024, 7, 17), dt.date(2024, 11, 15))
        assert len(first) == 3 and len(second) == 3
        async with daemon_running(conf) as daemon:
            await publish(f"{prefix}/bars", rut_bars("2024-07-10", "2024-07-16"))
            assert await stream_alerts(server.url, f"{prefix}:alerts", 3) == first
            server.kill()
            await publish(f"{prefix}/bars", rut_bars("2024-07-17", "2024-11-15"))
            async with asyncio.timeout(20):
                while daemon.counters.get("outbox_depth") < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            server.start()
            got = await stream_alerts(server.url, f"{prefix}:alerts", 3)
            assert got == second
            await asyncio.sleep(1.0)  # nothing more arrives: no duplicates
            assert await stream_alerts(server.url, f"{prefix}:alerts", 3) == second


async def test_sigterm_under_load_exits_zero_within_the_grace_period(tmp_path: Path) -> None:
    """SIGTERM while ticks pour in: the daemon drains, flushes and exits 0 within grace."""
    prefix = f"mm-term-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    daemon = DaemonProcess(conf)
    try:
        await asyncio.to_thread(daemon.wait_for, "service_ready")
        await asyncio.to_thread(daemon.wait_for, "feed_subscribed")
        ticks = [
            json.dumps(
                [
                    {
                        "symbol": f"S{j}",
                        "ts": 1721138400000 + i * 10 + j,
                        "price": 10 + j,
                        "size": 1,
                    }
                    for j in range(50)
                ]
            ).encode()
            for i in range(400)
        ]
        flood = asyncio.create_task(publish(f"{prefix}/ticks", ticks * 5, qos=0))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = await asyncio.to_thread(daemon.wait, 20)
        took = time.monotonic() - started
        flood.cancel()
        assert code == 0
        assert took < 10.0  # grace_s default
    finally:
        daemon.close()


async def test_a_restart_mid_streak_continues_it_without_repeating(tmp_path: Path) -> None:
    """Stopped after three of five up sessions, restarted: the streak fires on the fifth session,
    once, and a restart with the same bars published again fires nothing new."""
    prefix = f"mm-restart-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    assert (
        main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-09"])
        == 0
    )
    stream = f"{prefix}:alerts"

    async def session(messages: list[bytes], want: int) -> list[Alert]:
        async with daemon_running(conf) as daemon:
            await publish(f"{prefix}/bars", messages)
            async with asyncio.timeout(20):
                while daemon.counters.total("bars_closed") < len(messages):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            return await stream_alerts("redis://127.0.0.1:6379/0", stream, want, timeout_s=3)

    try:
        assert await session(rut_bars("2024-07-10", "2024-07-12"), 0) == []
        after = await session(rut_bars("2024-07-15", "2024-07-16"), 3)
        assert [(a.rule, a.session) for a in after] == [
            ("drawdown.high", "2024-07-16"),
            ("streak.daily", "2024-07-16"),
            ("surge.5d", "2024-07-16"),
        ]
        assert after == replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
        again = await session(rut_bars("2024-07-16", "2024-07-16"), 4)
        assert again == after
    finally:
        client = aioredis.Redis()
        await client.delete(stream)
        await client.aclose()


def tick(
    symbol: str, ts_ms: int, price: float | str, size: float = 100, id: str | None = None
) -> dict[str, object]:
    """A generic tick message element."""
    out: dict[str, object] = {"symbol": symbol, "ts": ts_ms, "price": price, "size": size}
    if id is not None:
        out["id"] = id
    return out


async def test_bad_messages_are_counted_by_reason_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """Malformed JSON, wrong types, NaN, negative and zero prices, unknown symbols, late ticks,
    duplicate trade ids, a 100x bad print and a tick two hours ahead of the clock are each
    counted under their reason; good ticks around them still make bars."""
    prefix = f"mm-bad-{uuid.uuid4().hex[:8]}"
    engine = 'universe = ["AAA", "BBB"]\nlate_ticks = "reject"\nmax_jump = 10.0'
    conf = write_config(tmp_path, prefix, engine=engine)
    t0 = int(dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC).timestamp() * 1000)
    # The clock stands at 14:01:10: the 14:00 minute is closed, 14:01 still open.
    clock = SimClock(dt.datetime(2024, 7, 16, 14, 1, 10, tzinfo=dt.UTC))
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append)
    )
    topic = f"{prefix}/ticks"
    try:
        daemon = await subscribed(ready)
        good = [tick("AAA", t0 + 1000, 10.0, id="a1"), tick("BBB", t0 + 2000, 20.0, id="b1")]
        await publish(topic, [json.dumps(good).encode()])
        async with asyncio.timeout(10):
            while daemon.counters.total("bars_closed") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        t1 = t0 + 60_000
        bad = [
            b"{not json",
            json.dumps(tick("AAA", t1, "ten")).encode(),
            b'{"symbol": "AAA", "ts": %d, "price": NaN, "size": 1}' % t1,
            json.dumps(tick("AAA", t1, -5.0)).encode(),
            json.dumps(tick("AAA", t1, 0.0)).encode(),
            json.dumps(tick("ZZZ", t1, 5.0)).encode(),
            json.dumps(tick("AAA", t0 + 5000, 10.1, id="late")).encode(),
            json.dumps(
                [tick("BBB", t1 + 1, 20.1, id="b2"), tick("BBB", t1 + 2, 20.1, id="b2")]
            ).encode(),
            json.dumps(tick("AAA", t1 + 3, 1000.0, id="print")).encode(),
            json.dumps(tick("AAA", t1 + 4, 10.2, id="a2")).encode(),
            json.dumps(tick("BBB", t0 + 7_200_000, 20.2, id="two-hours-ahead")).encode(),
        ]
        await publish(topic, bad)
        want = {
            "malformed_json": 1,
            "bad_message": 1,
            "bad_price": 3,
            "unknown_symbol": 1,
            "late_tick": 1,
            "duplicate": 1,
            "bad_print": 1,
            "future_tick": 1,
        }
        async with asyncio.timeout(10):
            while daemon.counters.total("rejections") < sum(want.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # and nothing more is rejected
        got = {reason: int(daemon.counters.get("rejections", reason=reason)) for reason in want}
        assert got == want
        clock.set(dt.datetime(2024, 7, 16, 14, 3, tzinfo=dt.UTC))
        async with asyncio.timeout(10):
            while daemon.counters.total("bars_closed") < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        minutes = daemon.engine.minutes.filter(
            daemon.engine.minutes["start"] == dt.datetime(2024, 7, 16, 14, 1, tzinfo=dt.UTC)
        ).sort("symbol")
        assert minutes.select("symbol", "open", "close", "volume").rows() == [
            ("AAA", 10.2, 10.2, 100.0),
            ("BBB", 20.1, 20.1, 100.0),
        ]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


def poison(t_ms: int) -> dict[str, tuple[bytes, dict[str, int]]]:
    """Messages that once killed the daemon (the decoder raised, the engine could not hold a
    timestamp), each with a good AAA tick beside the bad element where it can have one, and
    the rejections each should make instead."""
    good = json.dumps(tick("AAA", t_ms, 10.0)).encode()
    return {
        "a price of 401 digits": (
            b'[%s,{"symbol":"BBB","ts":%d,"price":1%s}]' % (good, t_ms, b"0" * 400),
            {"bad_price": 1},
        ),
        "a lone surrogate for a symbol": (
            b'[%s,{"symbol":"\\ud800","ts":%d,"price":5}]' % (good, t_ms),
            {"bad_message": 1},
        ),
        "a timestamp in year -1199": (
            json.dumps([tick("AAA", t_ms, 10.0), tick("BBB", -100_000_000_000_000, 5.0)]).encode(),
            {"bad_timestamp": 1},
        ),
        "5,000 nested arrays": (b"[" * 5000 + b"]" * 5000, {"malformed_json": 1}),
    }


@pytest.mark.parametrize("kind", list(poison(0)))
async def test_a_message_that_once_killed_the_daemon_is_a_rejection(
    tmp_path: Path, kind: str
) -> None:
    """Each message is counted under its reason, the good tick beside it taken, and the
    daemon goes on; the message is acknowledged, so a restart does not get it again (it
    used to crash the daemon at every start: the broker delivered it again each time)."""
    prefix = f"mm-poison-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix, engine='universe = ["AAA", "BBB"]')
    t0 = int(dt.datetime(2024, 7, 16, 14, 0, 1, tzinfo=dt.UTC).timestamp() * 1000)
    message, want = poison(t0)[kind]
    clock = SimClock(dt.datetime(2024, 7, 16, 14, 0, 30, tzinfo=dt.UTC))
    async with daemon_running(conf, clock=clock) as daemon:
        await publish(f"{prefix}/ticks", [message])
        async with asyncio.timeout(10):
            while daemon.counters.total("rejections") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # (and nothing more)
        got = {r: int(daemon.counters.get("rejections", reason=r)) for r in want}
        assert (got, daemon.counters.total("rejections")) == (want, sum(want.values()))
        assert daemon.counters.total("ticks_in") == (0 if kind == "5,000 nested arrays" else 1)
    async with daemon_running(conf, clock=clock) as daemon:
        await asyncio.sleep(1.0)  # (a message delivered again would come now)
        assert daemon.counters.total("rejections") == 0


async def test_a_decoder_that_raises_rejects_its_messages_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    """Should a feed's decoder raise after all (a message nobody foresaw), its messages are
    counted as `decode_error` and logged (`decode_failed`), and the next ones are taken."""
    prefix = f"mm-raise-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    t0 = int(dt.datetime(2024, 7, 16, 14, 0, 1, tzinfo=dt.UTC).timestamp() * 1000)
    clock = SimClock(dt.datetime(2024, 7, 16, 14, 0, 30, tzinfo=dt.UTC))
    async with daemon_running(conf, clock=clock) as daemon:
        [name] = daemon.decoders
        decode = daemon.decoders[name]

        def fragile(payloads: list[bytes]) -> FeedBatch:
            if any(b"boom" in p for p in payloads):
                raise RuntimeError("a decoder bug")
            return decode(payloads)

        daemon.decoders[name] = fragile
        await publish(f"{prefix}/ticks", [b'{"boom": 1}'])
        async with asyncio.timeout(10):
            while daemon.counters.get("rejections", reason="decode_error") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await publish(f"{prefix}/ticks", [json.dumps(tick("AAA", t0, 10.0)).encode()])
        async with asyncio.timeout(10):
            while daemon.counters.total("ticks_in") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_a_broker_restart_mid_stream_loses_no_bar(tmp_path: Path) -> None:
    """The daemon's own broker is restarted between sessions; with QoS 1 and a persistent
    session, the bars published right after it comes back still arrive, and the streak of
    2024-07-16 fires as in replay."""
    prefix = f"mm-broker-{uuid.uuid4().hex[:8]}"
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        conf = write_config(tmp_path, prefix)
        conf.write_text(conf.read_text().replace("127.0.0.1:1883", f"127.0.0.1:{broker.port}"))
        assert (
            main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-09"])
            == 0
        )
        stop = asyncio.Event()
        ready: list[Daemon] = []
        task = asyncio.create_task(
            run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
        )
        topic = f"{prefix}/bars"
        try:
            daemon = await subscribed(ready)
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                for m in rut_bars("2024-07-10", "2024-07-12"):
                    await client.publish(topic, m, qos=1)
            async with asyncio.timeout(10):
                while daemon.counters.total("bars_closed") < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            broker.restart()
            async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                for m in rut_bars("2024-07-15", "2024-07-16"):
                    await client.publish(topic, m, qos=1)
            got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", 3)
            assert got == replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
            assert daemon.counters.get("feed_reconnects", feed="broker") >= 1
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0
            client = aioredis.Redis()
            await client.delete(f"{prefix}:alerts")
            await client.aclose()


async def test_a_session_bar_from_the_future_is_refused_and_prints_go_on(tmp_path: Path) -> None:
    """A daemon at 10:00 New York on 2024-07-16, AAA trading at 500: a session bar of
    2027-01-04 at 5 is refused as `future_bar`, and AAA's next print at 500 is taken. Before,
    the bar was taken and every print after it was a bad print against its close of 5."""
    prefix = f"mm-ahead-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix, engine='universe = ["AAA"]')
    t0 = int(dt.datetime(2024, 7, 16, 14, 0, 1, tzinfo=dt.UTC).timestamp() * 1000)
    clock = SimClock(dt.datetime(2024, 7, 16, 14, 0, 30, tzinfo=dt.UTC))
    bar = {"symbol": "AAA", "timeframe": "1d", "session": "2027-01-04", "open": 5, "high": 5,
           "low": 5, "close": 5, "volume": 1}  # fmt: skip
    async with daemon_running(conf, clock=clock) as daemon:
        await publish(f"{prefix}/ticks", [json.dumps(tick("AAA", t0, 500.0, id="a")).encode()])
        await publish(f"{prefix}/bars", [json.dumps(bar).encode()])
        await publish(f"{prefix}/ticks", [json.dumps(tick("AAA", t0 + 9, 500.0, id="b")).encode()])
        async with asyncio.timeout(10):
            while daemon.counters.total("ticks_in") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # (and nothing more)
        assert daemon.counters.get("rejections", reason="future_bar") == 1
        assert daemon.counters.total("rejections") == 1
        clock.set(dt.datetime(2024, 7, 16, 14, 2, tzinfo=dt.UTC))
        async with asyncio.timeout(10):
            while daemon.counters.total("bars_closed") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert daemon.engine.minutes.select("symbol", "close", "volume").rows() == [
            ("AAA", 500.0, 200.0)
        ]


async def test_a_stop_while_the_journal_cannot_be_written_is_bounded_and_acks_nothing(
    tmp_path: Path,
) -> None:
    """The journal refuses every write (a full disk) while ticks come over MQTT, then the stop:
    the daemon stops within the grace period and a few seconds more, failing with an error
    naming the journal (exit 74), and acknowledges none of the messages, which the broker
    delivers to the next start. Before, the stop waited for the acks the journal held back
    until the next snapshot failed (up to 300 s)."""
    from monitor.store import StoreError
    from tests.test_journal import full_disk

    prefix = f"mm-fulldisk-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix, engine='universe = ["AAA"]')
    conf.write_text(conf.read_text() + "[shutdown]\ngrace_s = 1.0\n")
    t0 = int(dt.datetime(2024, 7, 16, 14, 0, 1, tzinfo=dt.UTC).timestamp() * 1000)
    clock = SimClock(dt.datetime(2024, 7, 16, 14, 0, 30, tzinfo=dt.UTC))
    messages = [json.dumps(tick("AAA", t0 + k, 10.0, id=f"t{k}")).encode() for k in range(5)]
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append)
    )
    daemon = await subscribed(ready)
    with full_disk(daemon.intraday.journal, segments=5000):  # (a write fails each step)
        await publish(f"{prefix}/ticks", messages)
        async with asyncio.timeout(10):
            while daemon.counters.total("ticks_in") < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        started = time.monotonic()
        stop.set()
        with pytest.raises(StoreError, match=r"the journal .*journal cannot be written"):
            await asyncio.wait_for(task, 20)
        assert time.monotonic() - started < 1.0 + 5.0 + 3.0
    async with daemon_running(conf, clock=clock) as again:
        async with asyncio.timeout(10):
            while again.counters.total("ticks_in") < 5:  # noqa: ASYNC110 (delivered again)
                await asyncio.sleep(0.05)
