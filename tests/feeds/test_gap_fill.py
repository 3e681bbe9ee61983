"""GapFill on its own: what a backfill that keeps failing asks for, however long it fails."""

from __future__ import annotations

import asyncio
import datetime as dt

from structlog.testing import capture_logs

from monitor import logs
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.credentials import Secret
from monitor.feeds.gap_fill import MAX_REFILL_S, GapFill
from monitor.feeds.rest import RestBackfill
from monitor.feeds.wire import Wire
from tests.feeds.fake_providers import FakeRest

UTC = dt.UTC
START = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)


async def test_a_backfill_failing_for_weeks_still_waits_the_longest_refill_delay() -> None:
    """A symbol the REST API refuses for good fails every round, each doubling the wait
    before the next, up to MAX_REFILL_S: the 1,030th round in a row (three weeks of rounds
    half an hour apart) waits MAX_REFILL_S too, instead of an OverflowError stopping the
    feed once the doubling passed 2**1024."""
    queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue()
    counters = Counters()

    async def deliver(batch: FeedBatch) -> None:
        await queue.put(batch)

    async with (
        FakeRest() as api,
        RestBackfill("alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET")) as rest,
    ):
        api.fail_symbols["^RUT"] = -1
        gaps = GapFill(
            "test", ["^RUT"], rest, queue=queue, deliver=deliver, is_subscribed=lambda: True,
            clock=lambda: START, counters=counters, backoff=Backoff(), log=logs.get("test"),
            max_s=3600, attempts=1, retry_s=60.0, keeps_from=None, owe=None, settle=None,
        )  # fmt: skip
        rounds = 1_030
        with capture_logs() as captured:
            for _ in range(rounds):  # (not bound to a task group: no round asks again itself)
                await gaps.fetch(START, START + dt.timedelta(minutes=4))
    waits = [e["asked_again_in_s"] for e in captured if e["event"] == "backfill_failed"]
    assert len(waits) == rounds
    assert waits[:6] == [60.0, 120.0, 240.0, 480.0, 960.0, MAX_REFILL_S]
    assert set(waits[5:]) == {MAX_REFILL_S}
    assert counters.get("backfill_failures", feed="test") == rounds
