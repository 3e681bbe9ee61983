"""RestBackfill's paging guards against a fake bars REST API: pages in a loop, pages without end."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.credentials import Secret
from monitor.feeds.rest import RestBackfill
from monitor.feeds.websocket import WebSocketFeed
from tests.feeds.fake_providers import FakeRest

UTC = dt.UTC
START = dt.datetime(2024, 7, 11, 14, 29, tzinfo=UTC)
END = START + dt.timedelta(minutes=5)


def asked(api: FakeRest) -> list[str]:
    """The symbols of each request the fake served, in order."""
    return [q.get("symbols") or path.split("/")[4] for path, q, _ in api.requests]


async def test_an_alpaca_page_token_given_again_fails_its_group_at_once() -> None:
    """Alpaca answers the group AAPL,SPY with next_page_token "1" page after page: the second
    page's token, the same, fails the group at once (two requests, not a thousand), with
    why; QQQ's group is not held up."""
    async with (
        FakeRest() as api,
        RestBackfill(
            "alpaca", api.url, key=Secret("KEY"), secret=Secret("SECRET"), symbols_per_request=2
        ) as rest,
    ):
        api.looping.add("AAPL")
        fetched = await rest.fetch(["AAPL", "SPY", "QQQ"], START, END, feed="t")
    assert asked(api) == ["AAPL,SPY", "AAPL,SPY", "QQQ"]
    why = "alpaca REST: the page token '1' came again (pages in a loop)"
    assert fetched.failed == {"AAPL": why, "SPY": why}
    assert fetched.batch.minute_bars.get_column("symbol").unique().to_list() == ["QQQ"]


async def test_a_polygon_next_url_given_again_fails_its_symbol_at_once() -> None:
    """Polygon sends AAPL the same next_url again: AAPL fails at its second page, named with
    the URL (the key masked), and SPY's five bars come."""
    async with FakeRest() as api, RestBackfill("polygon", api.url, key=Secret("PKEY")) as rest:
        api.looping.add("AAPL")
        fetched = await rest.fetch(["AAPL", "SPY"], START, END, feed="t")
    assert sorted(asked(api)) == ["AAPL", "AAPL", "SPY", "SPY"]
    url = f"{api.url}/v2/aggs/ticker/AAPL/range/1/minute/1720708140000/1720708439999?cursor=3"
    why = f"polygon REST (AAPL): the next_url {url!r} came again (pages in a loop)"
    assert fetched.failed == {"AAPL": why}
    assert fetched.batch.minute_bars.get_column("symbol").to_list() == ["SPY"] * 5
    assert not any("PKEY" in reason for reason in fetched.failed.values())


async def test_pages_without_end_fail_once_they_hold_more_bars_than_the_window() -> None:
    """Polygon pages AAPL without end, a new next_url each time with the same three bars: the
    fetch stops once AAPL's rows pass one a minute of the five-minute window (its second
    page), not after a thousand pages held in memory."""
    async with FakeRest() as api, RestBackfill("polygon", api.url, key=Secret("PKEY")) as rest:
        api.endless.add("AAPL")
        fetched = await rest.fetch(["AAPL"], START, END, feed="t")
    assert asked(api) == ["AAPL", "AAPL"]
    assert fetched.failed == {
        "AAPL": "polygon REST (AAPL): 6 bars, more than one a minute for each symbol asked (5):"
        " paging stopped"
    }
    assert fetched.batch.minute_bars.is_empty()


@pytest.mark.parametrize("provider", ["alpaca", "polygon"])
async def test_a_backfill_whose_pages_loop_fails_for_those_symbols_with_why(
    provider: str,
) -> None:
    """The feed's backfill of a window whose pages loop for AAPL ends in `backfill_failed`
    naming AAPL and the loop, counted in backfill_failures and said on /healthz."""
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    counters = Counters()
    async with (
        FakeRest() as api,
        RestBackfill(
            provider,  # type: ignore[arg-type]
            api.url,
            key=Secret("KEY"),
            secret=Secret("SECRET"),
            symbols_per_request=1,
        ) as rest,
    ):
        api.looping.add("AAPL")
        feed = WebSocketFeed(
            "test", "ws://127.0.0.1:9", provider, ["AAPL"], key=Secret("KEY"),  # type: ignore[arg-type]
            secret=Secret("SECRET"), queue=queue, counters=counters,
            backoff=Backoff(base_s=0.01, cap_s=0.02, jitter=0), stale_after_s=60,
            is_regular_hours=lambda _now: True, clock=lambda: END, rest=rest,
            backfill_attempts=1,
        )  # fmt: skip
        with capture_logs() as logs:
            await feed._backfill(START, END)
    [failed] = [e for e in logs if e["event"] == "backfill_failed"]
    assert failed["symbols"] == "AAPL" and "came again (pages in a loop)" in failed["error"]
    assert counters.get("backfill_failures", feed="test") == 1.0
    assert feed.backfill_error is not None and "came again" in feed.backfill_error
