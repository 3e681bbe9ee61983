"""What feeds put on the engine loop's queue: raw wire messages (decoded there in micro-batches)
or decoded batches (`hand_on`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.feeds.rejections import RejectionLog


class Wire(NamedTuple):
    """Messages as received, in order: which feed, their bytes, and what to call once the engine
    has processed them (acknowledge QoS 1 MQTT messages: the broker redelivers what a crash left
    unacknowledged; and let the feed read more: its backlog of unprocessed messages is bounded)."""

    feed: str
    payloads: list[bytes]
    ack: Callable[[], object] | None = None


async def hand_on(
    batch: FeedBatch,
    queue: asyncio.Queue[FeedBatch | Wire] | asyncio.Queue[FeedBatch],
    counters: Counters,
    rejections: RejectionLog,
    feed: str,
) -> None:
    """Count a decoded batch (feed_ticks, feed_bars, its rejections) and put it on the engine's
    queue, waiting when the queue is full (counted in feed_queue_full_waits)."""
    if batch.ticks.height:
        counters.inc("feed_ticks", batch.ticks.height, feed=feed)
    bars = batch.minute_bars.height + batch.daily_bars.height
    if bars:
        counters.inc("feed_bars", bars, feed=feed)
    if batch.rejections:
        rejections.record(batch.rejections)
    try:
        queue.put_nowait(batch)
    except asyncio.QueueFull:
        counters.inc("feed_queue_full_waits", feed=feed)
        await queue.put(batch)
