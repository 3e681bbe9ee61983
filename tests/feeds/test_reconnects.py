"""The pause between two connections of a feed: delays growing from one failed attempt to the
next, starting over after a connection that lasted; each pause counted and logged."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.feeds.reconnects import Reconnects
from monitor.feeds.rejections import RejectionLog


async def test_delays_grow_until_a_connection_lasts_then_start_over() -> None:
    counters = Counters()
    log = structlog.get_logger("test").bind(feed="f")
    rejections = RejectionLog(
        log, counters, counter="feed_rejections", interval_s=10.0, clock=lambda: 0.0, feed="f"
    )
    backoff = Backoff(base_s=0.001, cap_s=0.004, factor=2.0, jitter=0.0)
    reconnects = Reconnects("f", backoff, 30.0, counters=counters, log=log, rejections=rejections)
    counters.set("feed_connected", 1, feed="f")
    with capture_logs() as logs:
        await reconnects.pause("refused", None)  # could not connect
        await reconnects.pause("refused", None)
        await reconnects.pause("dropped", 5.0)  # up for 5 s: not stable, keeps backing off
        await reconnects.pause("refused", None)
        await reconnects.pause("dropped", 30.0)  # up for 30 s: starts over
    lines = [(e["event"], e["error"], e["attempt"], e["delay_s"]) for e in logs]
    assert lines == [
        ("feed_reconnecting", "refused", 1, 0.001),
        ("feed_reconnecting", "refused", 2, 0.002),
        ("feed_reconnecting", "dropped", 3, 0.004),
        ("feed_reconnecting", "refused", 4, 0.004),  # (the cap)
        ("feed_reconnecting", "dropped", 1, 0.001),
    ]
    assert counters.get("feed_reconnects", feed="f") == 5
    assert counters.get("feed_connected", feed="f") == 0


def test_trades_rejected_for_their_conditions_are_logged_at_info() -> None:
    """`trade_condition` rejections (the market's normal traffic: average-price, contingent
    trades...) are counted and logged at info; a bad price is still a warning."""
    from structlog.testing import capture_logs

    from monitor import logs
    from monitor.core.counters import Counters
    from monitor.core.model import Rejection
    from monitor.feeds.rejections import RejectionLog

    counters = Counters()
    log = RejectionLog(
        logs.get("feed.websocket"), counters, counter="feed_rejections", interval_s=10,
        clock=lambda: 0.0,
    )  # fmt: skip
    with capture_logs() as logged:
        log.record([Rejection("trade_condition", "X", "{}"), Rejection("bad_price", "X", "{}")])
    levels = {e["reason"]: e["log_level"] for e in logged if e["event"] == "tick_rejected"}
    assert levels == {"trade_condition": "info", "bad_price": "warning"}
    assert counters.get("feed_rejections", reason="trade_condition") == 1


async def test_a_feeds_burst_of_rejections_is_said_by_its_next_batch_once_due() -> None:
    """A feed's decoder rejects 1 frame, then 5 more within the log interval (counted, not
    logged yet), then hands on good batches: the first of them past the interval logs the 5.
    Before, they waited for the next rejection of their reason, or a reconnect or the stop."""
    import asyncio

    from monitor.core.model import FeedBatch
    from monitor.feeds.generic import decode_generic
    from monitor.feeds.wire import hand_on

    now = [0.0]
    counters = Counters()
    log = structlog.get_logger("test").bind(feed="ws")
    rejections = RejectionLog(
        log, counters, counter="feed_rejections", interval_s=10.0, clock=lambda: now[0], feed="ws"
    )
    queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
    with capture_logs() as logs:
        for _ in range(6):
            await hand_on(
                decode_generic(b"{not json", feed="ws"), queue, counters, rejections, "ws"
            )
        now[0] = 5.0
        await hand_on(FeedBatch.empty("ws"), queue, counters, rejections, "ws")
        now[0] = 10.5
        await hand_on(FeedBatch.empty("ws"), queue, counters, rejections, "ws")
    said = [(e["reason"], e["count"]) for e in logs if e["event"] == "tick_rejected"]
    assert said == [("malformed_json", 1), ("malformed_json", 5)]
    assert counters.get("feed_rejections", feed="ws", reason="malformed_json") == 6
