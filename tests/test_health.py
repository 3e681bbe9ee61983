"""The daemon's health follows Redis itself, not the fate of the last alert it published."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import glob
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor import config as cfg
from monitor.clock import Clock
from monitor.feeds.websocket import FeedEvent
from monitor.service import Daemon, run
from monitor.status import status
from tests.alerts.redis_server import RedisServer
from tests.security.daemon import http_get, write_config

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

WITHIN_S = 6.0  # three PINGs apart (the publisher checks every 2 s)


@contextlib.asynccontextmanager
async def daemon_of(conf: Path, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """The daemon of `conf` (no feeds) running in this loop (on `clock`, when given); it must
    exit 0 when stopped."""
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, clock=clock, install_signals=False, on_ready=ready.append)
    )
    try:
        async with asyncio.timeout(30):
            while not ready:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield ready[0]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


async def health(daemon: Daemon) -> dict[str, Any]:
    """GET /healthz of the running daemon."""
    port = int(daemon.counters.get("http_port"))
    body: dict[str, Any] = json.loads(await asyncio.to_thread(http_get, port, "/healthz"))
    return body


async def metrics(port: int) -> str:
    """GET /metrics of the daemon listening on `port`."""
    return await asyncio.to_thread(http_get, port, "/metrics")


async def health_becomes(daemon: Daemon, wanted: Callable[[dict[str, Any]], bool]) -> float:
    """Seconds until /healthz answers what `wanted` accepts (AssertionError past WITHIN_S)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not wanted(last := await health(daemon)):
        assert loop.time() - started < WITHIN_S, f"/healthz still says {last}"
        await asyncio.sleep(0.1)
    return loop.time() - started


async def status_of(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """`market-monitor status` against the daemon: exit code and its report's lines."""
    port = int(daemon.counters.get("http_port"))
    capsys.readouterr()
    code = await asyncio.to_thread(
        status, argparse.Namespace(url=f"http://127.0.0.1:{port}", config=None)
    )
    lines = capsys.readouterr().out.splitlines()
    return code, [line for line in lines if line.startswith(("market-monitor at ", "  reason"))]


async def test_health_turns_degraded_within_seconds_of_redis_going_and_back_when_it_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No alert fires: Redis stopped, /healthz and `status` say "redis unavailable" within
    seconds; Redis started again, healthy within seconds."""
    with RedisServer() as server:
        prefix = f"mm-health-{uuid.uuid4().hex[:8]}"
        conf = write_config(tmp_path, feeds=[], redis={"url": server.url, "stream": prefix})
        async with daemon_of(conf) as daemon:
            await health_becomes(daemon, lambda h: h["status"] == "healthy")
            assert (await status_of(daemon, capsys))[0] == 0
            server.stop()
            await health_becomes(daemon, lambda h: h["status"] == "degraded")
            # (with the cause: the server closed the connection, or refused the next)
            (reason,) = (await health(daemon))["reasons"]
            assert re.fullmatch(
                r"redis unavailable \((ConnectionError|TimeoutError): .+\), 0 alerts waiting in"
                r" the outbox",
                reason,
            ), reason
            code, report = await status_of(daemon, capsys)
            assert code == 1 and len(report) == 2
            assert report[1].startswith("  reason: redis unavailable (")
            assert daemon.counters.get("redis_available") == 0
            server.start()
            await health_becomes(daemon, lambda h: h["status"] == "healthy")
            assert (await health(daemon))["reasons"] == []
            assert daemon.counters.get("redis_available") == 1
            assert daemon.counters.get("alerts_published") == 0  # no alert told it


async def test_a_short_check_interval_makes_health_follow_redis_within_a_fraction_of_a_second(
    tmp_path: Path,
) -> None:
    """With `[redis] check_interval_s = 0.2` the daemon PINGs five times a second: a stopped
    Redis turns /healthz degraded well under a second later, and the PINGs go on at that pace."""
    with RedisServer() as server:
        prefix = f"mm-health-{uuid.uuid4().hex[:8]}"
        redis = {"url": server.url, "stream": prefix, "check_interval_s": 0.2}
        conf = write_config(tmp_path, feeds=[], redis=redis)
        async with daemon_of(conf) as daemon:
            await health_becomes(daemon, lambda h: h["status"] == "healthy")
            server.stop()
            assert await health_becomes(daemon, lambda h: h["status"] == "degraded") < 1.0
            failures = daemon.counters.get("redis_check_failures")
            await asyncio.sleep(1.0)  # five PINGs at 0.2 s; one at most at the default 2 s
            assert daemon.counters.get("redis_check_failures") - failures >= 3


async def test_a_wrong_redis_password_is_logged_at_start_and_alerts_wait_in_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refusing the configured password: the daemon logs `redis_auth_failed` (an error
    saying what to fix, without the password) at start, is degraded, runs on, and an alert
    waits in the outbox; once the password is right (set in Redis), it goes out."""
    wrong, right = secrets.token_hex(12), secrets.token_hex(12)
    monkeypatch.setenv("MM_HEALTH_REDIS_PASSWORD", wrong)
    stream = f"mm-health-{uuid.uuid4().hex[:8]}"
    with RedisServer(None, "--requirepass", right) as server, capture_logs() as logs:
        redis = {"url": server.url, "stream": stream, "password_env": "MM_HEALTH_REDIS_PASSWORD"}
        conf = write_config(tmp_path, feeds=[], redis=redis)
        async with daemon_of(conf) as daemon:
            await health_becomes(daemon, lambda h: h["status"] == "degraded")
            failed = [e for e in logs if e["event"] == "redis_auth_failed"]
            assert len(failed) == 1
            assert failed[0]["log_level"] == "error"
            assert failed[0]["error"].startswith("AuthenticationError: ")
            assert "password" in failed[0]["fix"]
            # (/healthz says why, as the journal does: it said "redis unavailable" alone)
            (reason,) = (await health(daemon))["reasons"]
            assert reason.startswith("redis unavailable (refused the login (check [redis]")
            assert wrong not in reason and right not in reason
            at = dt.datetime(2024, 7, 16, 15, tzinfo=dt.UTC)
            daemon.on_feed_event(FeedEvent(feed="probe", kind="feed_stale", at=at, gap_s=60.0))
            async with asyncio.timeout(WITHIN_S):
                while daemon.counters.get("outbox_depth") < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert daemon.counters.get("outbox_depth") == 1  # waiting, not lost
            assert daemon.counters.get("alerts_published") == 0
            admin = server.url.replace("redis://", f"redis://:{right}@")
            from redis.asyncio import Redis

            async with Redis.from_url(admin) as client:
                await client.config_set("requirepass", wrong)
            await health_becomes(daemon, lambda h: h["status"] == "healthy")
            async with asyncio.timeout(WITHIN_S):
                while daemon.counters.get("outbox_depth") > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
    assert [e["event"] for e in logs if e["event"] == "redis_auth_failed"] == ["redis_auth_failed"]
    assert wrong not in repr(logs) and right not in repr(logs)


async def test_a_journal_that_cannot_be_written_makes_health_degraded_until_it_can(
    tmp_path: Path,
) -> None:
    """A step's record the journal cannot write (a full disk: here folders stand where its
    segments go): /healthz is degraded, saying why and that messages wait unacknowledged;
    healthy again once a write gets through. Before, it said healthy while the journal failed."""
    from tests.test_journal import batch, full_disk

    with RedisServer() as server:
        prefix = f"mm-health-{uuid.uuid4().hex[:8]}"
        conf = write_config(tmp_path, feeds=[], redis={"url": server.url, "stream": prefix})
        async with daemon_of(conf) as daemon:
            await health_becomes(daemon, lambda h: h["status"] == "healthy")
            with full_disk(daemon.intraday.journal, 5):
                assert daemon.intraday.append(batch(2)) is False
                await health_becomes(daemon, lambda h: h["status"] == "degraded")
                (reason,) = (await health(daemon))["reasons"]
                assert reason.startswith("journal not written (") and reason.endswith(
                    ": 1 step waiting, their messages not acknowledged"
                ), reason
            assert daemon.intraday.append(batch(0)) is True  # (what an idle step does)
            await health_becomes(daemon, lambda h: h["status"] == "healthy")


async def test_a_failed_backfill_makes_health_degraded_until_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WebSocket feed's connection lost and back; the REST API refuses AAPL's bars (and so
    its request's, of both symbols: Alpaca is asked 100 symbols at a time): /healthz
    is degraded, saying the backfill failed and when it is asked for again; once the next
    reconnect's backfill (the failed window too) goes through, healthy again."""
    from tests.feeds.fake_providers import FakeRest, FakeStream
    from tests.feeds.test_websocket import ALPACA_TRADES

    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    with RedisServer() as server:
        async with FakeStream("alpaca") as fake, FakeRest() as api:
            api.fail_symbols["AAPL"] = -1
            conf = alpaca_config(tmp_path, server.url, fake.url, api.url)
            async with daemon_of(conf) as daemon:
                await asyncio.wait_for(fake.subscribed.wait(), 10)
                await fake.push(ALPACA_TRADES)
                await fake.drop()
                await fake.wait_connections(2)

                def failed(h: dict[str, Any]) -> bool:
                    return any("backfill failed" in r for r in h["reasons"])

                await health_becomes(daemon, failed)
                (reason,) = [r for r in (await health(daemon))["reasons"] if "backfill" in r]
                assert re.fullmatch(
                    r"feed alpaca backfill failed \(from \S+ \S+Z, 2 symbols \(AAPL, SPY\): "
                    r".*HTTP 500.*\): asked for again while it stays connected \(after a minute,"
                    r" then longer\), and at its next reconnect or start",
                    reason,
                ), reason
                api.fail_symbols.clear()
                await fake.drop()
                await fake.wait_connections(3)
                await health_becomes(daemon, lambda h: not failed(h))


async def test_a_symbol_the_provider_refuses_is_given_up_not_degraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WebSocket feed's connection lost and back (Tuesday 16 July, 19:51, on a simulated
    clock); the REST API answers 404 for AAPL, a ticker it does not know, and bars for SPY:
    SPY's bars come, AAPL's window is given up at once (`backfill_given_up{reason="refused"}`
    on /metrics), /healthz has no backfill reason and `backfills_owed.json` owes nothing. It
    used to be degraded ("backfill failed") until the window aged out, two sessions later."""
    from monitor.clock import SimClock
    from tests.feeds.fake_providers import FakeRest, FakeStream

    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    clock = SimClock(dt.datetime(2024, 7, 16, 19, 49, 30, tzinfo=dt.UTC))
    trade = {"T": "t", "S": "SPY", "i": 1, "x": "V", "p": 550.0, "s": 100,
             "t": "2024-07-16T19:49:30Z", "c": ["@"], "z": "C"}  # fmt: skip
    with RedisServer() as server:
        async with FakeStream("alpaca") as fake, FakeRest() as api:
            api.unknown_symbols["AAPL"] = 404
            conf = alpaca_config(tmp_path, server.url, fake.url, api.url)
            async with daemon_of(conf, clock) as daemon:
                await asyncio.wait_for(fake.subscribed.wait(), 10)
                await fake.push([trade])
                async with asyncio.timeout(10):  # (taken in at 19:49:30: not a delayed stream)
                    while not daemon.counters.total("ticks_in"):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                # (back at a minute's start: the gap's backfill is all, no minute to finish)
                clock.set(dt.datetime(2024, 7, 16, 19, 51, tzinfo=dt.UTC))
                await fake.drop()
                await fake.wait_connections(2)
                port = int(daemon.counters.get("http_port"))
                given_up = 'backfill_given_up{feed="alpaca",reason="refused"} 1'
                async with asyncio.timeout(10):
                    while given_up not in await metrics(port):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    while daemon.store.load_owed_backfills() != {}:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)  # (settled once SPY's bars are on disk)
                reasons = (await health(daemon))["reasons"]
                assert not [r for r in reasons if "backfill" in r], reasons
                assert daemon.counters.get("backfill_bars", feed="alpaca") == 3  # (19:48 to 19:50)
    asked = [q["symbols"] for _, q, _ in api.requests]
    assert asked == ["AAPL,SPY", "AAPL", "SPY"]


async def test_a_backfill_owed_from_before_the_engine_keeps_is_given_up_not_degraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store owes AAPL's failed backfill window of 30 days ago (a daemon stopped then):
    at the feed's first subscription the window is given up, as the engine keeps no minutes
    that old (`backfill_given_up{reason="older_than_kept"}` on /metrics), never asked of the
    REST API, no backfill reason on /healthz, and `backfills_owed.json` owes it no more."""
    from monitor.store import Store
    from tests.feeds.fake_providers import FakeRest, FakeStream

    monkeypatch.setenv("MM_TEST_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_SECRET", "SECRET")
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).replace(second=0, microsecond=0)
    window = {
        "start": start.isoformat(),
        "end": (start + dt.timedelta(minutes=10)).isoformat(),
        "symbols": ["AAPL"],
    }
    with RedisServer() as server:
        async with FakeStream("alpaca") as fake, FakeRest() as api:
            conf = alpaca_config(tmp_path, server.url, fake.url, api.url)
            store = Store(tmp_path / "store")
            store.save_owed_backfills({"alpaca": {"windows": [window]}})
            async with daemon_of(conf) as daemon:
                await asyncio.wait_for(fake.subscribed.wait(), 10)
                port = int(daemon.counters.get("http_port"))
                given_up = 'backfill_given_up{feed="alpaca",reason="older_than_kept"} 1'
                async with asyncio.timeout(10):  # (the first subscription's backfill)
                    while given_up not in await metrics(port):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                reasons = (await health(daemon))["reasons"]
                assert not [r for r in reasons if "backfill" in r], reasons
                assert store.load_owed_backfills() == {}
    assert api.requests == []  # (nothing else owed: a new store, no gap to fill)


def dynamic_security_plugin() -> str:
    """Where the mosquitto package put its dynamic security plugin: /usr/lib/<arch triplet>/
    (Debian, Ubuntu: x86_64-linux-gnu, aarch64-linux-gnu, ...) or /usr/lib/."""
    name = "mosquitto_dynamic_security.so"
    found = sorted(glob.glob(f"/usr/lib/*/{name}")) + sorted(glob.glob(f"/usr/lib/{name}"))
    assert found, f"mosquitto's {name} is not installed under /usr/lib"
    return found[0]


async def test_a_subscription_the_broker_refuses_makes_health_degraded(tmp_path: Path) -> None:
    """A broker that takes the connection and refuses the subscription (Mosquitto's dynamic
    security, which lets no one subscribe without a role): /healthz is degraded, naming the
    topic and the broker's code (not the broker's drop count on $SYS, which is no data and
    often private to the broker's admins). Before, it said healthy while the feed got nothing, for
    ever, the connection being up."""
    from tests.feeds.mosquitto_server import MosquittoServer

    acl = tmp_path / "dynsec.json"
    access = {"publishClientSend": False, "publishClientReceive": True, "subscribe": False}
    acl.write_text(json.dumps({"defaultACLAccess": {**access, "unsubscribe": True}}))
    broker = MosquittoServer(tmp_path / "broker")
    broker.config.write_text(
        broker.config.read_text()
        + f"plugin {dynamic_security_plugin()}\n"
        + f"plugin_opt_config_file {acl}\n"
    )
    with RedisServer() as server, broker:
        prefix = f"mm-health-{uuid.uuid4().hex[:8]}"
        feed = {"url": f"mqtt://127.0.0.1:{broker.port}", "topics": [f"{prefix}/ticks"]}
        conf = write_config(tmp_path, feeds=[feed], redis={"url": server.url, "stream": prefix})
        async with daemon_of(conf) as daemon:
            subscribes = daemon.counters.get
            await health_becomes(daemon, lambda _: subscribes("feed_subscribes", feed="mqtt0") > 0)
            assert (await health(daemon))["reasons"] == [
                f"feed mqtt0 gets nothing on {prefix}/ticks (Unspecified error): the broker"
                " refused the subscription (not authorised to read it?); asked again at its next"
                " connect"
            ]


def test_status_says_why_bars_came_in_and_no_alert_fired() -> None:
    """`status` of a daemon whose bars were of sessions evaluated already (a feed-replay of past
    sessions into a live daemon) and some of whose messages the broker dropped says both, the
    first answers of the "no alerts although bars arrive" question: before, it said 1,568
    bars in, no rejections and no alerts, and nothing of why."""
    from monitor.status import parse_metrics, summary

    page = "\n".join(
        [
            'market_monitor_bars_in{timeframe="1d"} 1568',
            'market_monitor_bar_events{kind="daily_bar_corrected"} 1552',
            'market_monitor_bar_events{kind="late_tick_corrected"} 3',
            'market_monitor_broker_messages_dropped{feed="broker"} 85',
        ]
    )
    report = summary("http://127.0.0.1:9108", {"status": "healthy"}, parse_metrics(page))
    assert report.splitlines()[3:7] == [
        "  bars in: 1,568 (1d=1,568)",
        "  rejections: 0",
        "  session bars stored as corrections: 1,552 (of periods evaluated already: they fire"
        " nothing)",
        "  dropped by the broker (its queue full, all its clients): broker=85",
    ]
    quiet = summary("http://127.0.0.1:9108", {"status": "healthy"}, parse_metrics(""))
    assert "corrections" not in quiet and "dropped" not in quiet


def alpaca_config(tmp_path: Path, redis_url: str, stream_url: str, rest_url: str) -> Path:
    """A daemon config with one Alpaca WebSocket feed (AAPL, SPY) and its REST backfill, its
    alerts under a key prefix of its own on the Redis at `redis_url`."""
    prefix = f"mm-health-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, feeds=[], redis={"url": redis_url, "stream": prefix})
    conf.write_text(
        conf.read_text()
        + f'\n[[feeds]]\nname = "alpaca"\nkind = "websocket"\nprovider = "alpaca"\n'
        f'url = "{stream_url}"\nrest_url = "{rest_url}"\nsymbols = ["AAPL", "SPY"]\n'
        'key_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'
    )
    return conf
