"""One feed's failure stops no other feed and no alert: a feed whose credentials are refused
stops alone (logged, on /healthz), and a feed that crashes is started again."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.errors import ConfigError
from monitor.feed_wiring import supervised
from tests.conftest import RUT
from tests.feeds.fake_providers import FakeStream
from tests.test_daemon_faults import publish, rut_bars, stream_alerts
from tests.test_service import daemon_running, replay_alerts, write_config

pytestmark = pytest.mark.integration


async def test_a_feed_whose_key_is_refused_stops_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Alpaca feed with a wrong secret (its keys as the daemon reads them: `Secret`s from
    the environment) beside an MQTT feed: the Alpaca feed stops (`feed_given_up`), /healthz
    says why, and the MQTT feed's bars still give replay's alerts on Redis. The daemon used
    to exit 78 and take the MQTT feed and the alerts with it."""
    from monitor.cli import main

    prefix = f"mm-sup-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MM_TEST_ALPACA_KEY", "KEY")
    monkeypatch.setenv("MM_TEST_ALPACA_SECRET", "WRONG")
    async with FakeStream("alpaca") as fake:
        conf = write_config(tmp_path, prefix)
        conf.write_text(
            conf.read_text()
            + f'\n[[feeds]]\nkind = "websocket"\nname = "alpaca"\nprovider = "alpaca"\n'
            f'url = "{fake.url}"\nsymbols = ["IWM"]\nkey_env = "MM_TEST_ALPACA_KEY"\n'
            'secret_env = "MM_TEST_ALPACA_SECRET"\n'
        )
        to = ["--to", "2024-07-09"]
        assert main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", *to]) == 0
        expected = replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
        with capture_logs() as logs:
            async with daemon_running(conf) as daemon:
                async with asyncio.timeout(10):
                    while "alpaca" not in daemon.failed_feeds:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                await publish(f"{prefix}/bars", rut_bars("2024-07-10", "2024-07-16"))
                got = await stream_alerts("redis://127.0.0.1:6379/0", f"{prefix}:alerts", 3)
                health = daemon.health(*_health_parts(daemon))
    assert fake.received[0] == {"action": "auth", "key": "KEY", "secret": "WRONG"}
    assert got == expected
    assert health["status"] == "degraded"
    assert any(r.startswith("feed alpaca stopped: ") and "402" in r for r in health["reasons"])
    given_up = [e for e in logs if e["event"] == "feed_given_up"]
    assert len(given_up) == 1 and given_up[0]["log_level"] == "error"
    assert given_up[0]["feed"] == "alpaca" and "402" in given_up[0]["error"]
    client = aioredis.Redis()
    await client.delete(f"{prefix}:alerts")
    await client.aclose()


async def test_a_crashing_feed_is_started_again_and_a_refused_one_left_stopped() -> None:
    """`supervised` over fake feeds: a feed that raises twice is started a third time (the
    crashes logged with their traceback and counted); one that raises ConfigError is not."""
    daemon = types.SimpleNamespace(
        stop=asyncio.Event(), counters=Counters(), failed_feeds={}, crashed_feeds={}, log=_Log()
    )
    fast = Backoff(base_s=0.01, cap_s=0.02, jitter=0)
    crashy = _Feed("crashy", [RuntimeError("bug"), RuntimeError("bug"), None])
    await asyncio.wait_for(supervised(crashy, daemon, fast), 5)  # type: ignore[arg-type]
    assert crashy.runs == 3
    assert daemon.counters.get("feed_crashes", feed="crashy") == 2
    assert [e for e, _ in daemon.log.events] == ["feed_crashed", "feed_crashed"]
    assert daemon.crashed_feeds["crashy"][1] == "RuntimeError: bug"  # (/healthz: below)
    refused = _Feed("refused", [ConfigError("feeds.refused: auth failed"), None])
    await asyncio.wait_for(supervised(refused, daemon, fast), 5)  # type: ignore[arg-type]
    assert refused.runs == 1
    assert daemon.failed_feeds == {"refused": "feeds.refused: auth failed"}
    assert daemon.counters.get("feed_failed", feed="refused") == 1


def _health_parts(daemon: Any) -> tuple[Any, Any]:
    """The publisher and pipeline `Daemon.health` reads: here, ones that say all is well."""
    publisher = types.SimpleNamespace(is_available=True)
    pipeline = types.SimpleNamespace(last_step_at=float("inf"), held={})  # (stepping)
    return publisher, pipeline


class _Feed:
    """A feed whose runs raise the given exceptions in turn (None: return)."""

    def __init__(self, name: str, outcomes: list[BaseException | None]) -> None:
        self.name = name
        self._outcomes = outcomes
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        outcome = self._outcomes[self.runs]
        self.runs += 1
        if outcome is not None:
            raise outcome


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    def exception(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


def test_the_alpaca_backfill_asks_for_the_data_feed_its_stream_names() -> None:
    from monitor.feed_wiring import alpaca_feed

    assert alpaca_feed("wss://stream.data.alpaca.markets/v2/iex") == "iex"
    assert alpaca_feed("wss://stream.data.alpaca.markets/v2/sip/") == "sip"
    assert alpaca_feed("ws://127.0.0.1:9/stream") is None


async def test_a_replay_feeds_day_that_is_no_session_is_rejected_not_a_crash_loop(
    tmp_path: Path,
) -> None:
    """A replay feed's file with a bar on Good Friday 2024 (no session): the engine rejects it
    as `not_a_session`, as `replay` does, and the feed streams on (it raised KeyError at each
    start, a crash loop /healthz called healthy). A crash is a /healthz reason for a while."""
    from monitor.calendar import nyse_sessions
    from monitor.clock import SimClock
    from monitor.core.model import FeedBatch
    from monitor.datafiles import DataSpec, read_many
    from monitor.feeds.replay import ReplayFeed
    from monitor.service import Daemon

    data = tmp_path / "zzz.csv"
    data.write_text("date,close\n2024-03-28,10\n2024-03-29,11\n2024-04-01,12\n")
    bars = read_many([DataSpec(str(data), "ZZZ")]).bars
    sessions = nyse_sessions(dt.date(2024, 1, 1))
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    clock = SimClock(dt.datetime(2024, 3, 28, 12, tzinfo=dt.UTC))
    feed = ReplayFeed(
        "history", bars, sessions=sessions, clock=clock, queue=queue, counters=Counters(),
        speed=1e9,
    )  # fmt: skip
    await asyncio.wait_for(feed.run(asyncio.Event()), 10)
    days = [queue.get_nowait().daily_bars["session"].to_list() for _ in range(queue.qsize())]
    assert days == [[dt.date(2024, 3, 28)], [dt.date(2024, 3, 29)], [dt.date(2024, 4, 1)]]
    health = Daemon.health  # (the reasons of a daemon whose feed crashed a minute ago)
    crash = (time.monotonic() - 60, "KeyError: datetime.date(2024, 3, 29)")
    daemon = types.SimpleNamespace(
        feeds=[feed], crashed_feeds={"history": crash}, counters=Counters(), failed_feeds={},
        started=time.monotonic(), queue=queue,
        intraday=types.SimpleNamespace(journal_error=None, unwritten=0),
    )  # fmt: skip
    daemon.counters.inc("feed_crashes", 3, feed="history")
    publisher, pipeline = _health_parts(daemon)
    said = health(daemon, publisher, pipeline)  # type: ignore[arg-type]
    assert said["status"] == "degraded"
    assert said["reasons"] == [
        "feed history crashed (3 times), last: KeyError: datetime.date(2024, 3, 29)"
    ]
