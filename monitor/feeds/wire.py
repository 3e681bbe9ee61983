"""What feeds put on the engine loop's queue: raw wire messages (decoded there in micro-batches)
or decoded batches (`hand_on`); and `Handoff`, a feed's account of the Wires it handed on, so
that it can wait for their acknowledgements before it disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.feeds.rejections import RejectionLog

# How long a stop waits, after its grace period, for the acks of Wires the engine has claimed
# (a step under way: milliseconds, or seconds of rules over the history after a reload).
CLAIMED_WAIT_S = 5.0


class Wire(NamedTuple):
    """Messages as received, in order: which feed, their bytes, and what to call once the engine
    has processed them (acknowledge QoS 1 MQTT messages: the broker redelivers what a crash left
    unacknowledged; and let the feed read more: its backlog of unprocessed messages is bounded).
    `claim`, if given, is called before processing: False when the feed has withdrawn the Wire
    (see `Handoff`), which is then neither processed nor acknowledged."""

    feed: str
    payloads: list[bytes]
    ack: Callable[[], object] | None = None
    claim: Callable[[], bool] | None = None


class Settled(NamedTuple):
    """How a `Handoff` settled, in messages: `withdrawn` (never claimed by the engine, left
    unacknowledged) and `unacknowledged` (still out when the connection was lost, or claimed
    and not done within the wait after the grace at a stop: the engine may process them, but
    their acks can go nowhere, or are not sent)."""

    withdrawn: int
    unacknowledged: int


class Handoff:
    """The Wires a feed has put on the engine's queue and not yet seen acknowledged.

    At shutdown the feed takes in no more, then `settle`s before it disconnects: the engine
    processes what was handed on and the acks go out on the connection that received the
    messages (an ack after the disconnect is lost, and the broker would deliver again what was
    processed already). What the engine has not claimed when the grace period ends is
    withdrawn: left unacknowledged, the broker delivers it to the next session, once. If the
    connection is lost meanwhile, no ack can reach the broker any more: settling ends at once.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[int, Callable[[], object]]] = {}  # n: messages, release
        self._claimed: dict[int, int] = {}  # n: messages
        self._numbers = itertools.count()
        self._waiter: asyncio.Future[None] | None = None

    async def put(
        self,
        queue: asyncio.Queue[FeedBatch | Wire],
        feed: str,
        payloads: list[bytes],
        *,
        ack: Callable[[], object],
        release: Callable[[], object],
        on_full: Callable[[], object],
    ) -> None:
        """Put a Wire of `payloads` on `queue`, waiting while it is full (`on_full` called
        first). `ack` runs once the engine has processed it, `release` if it is withdrawn
        instead; it counts as handed on only once on the queue (not when cancelled waiting)."""
        n = next(self._numbers)
        wire = Wire(
            feed,
            payloads,
            functools.partial(self._ack, n, ack),
            functools.partial(self._claim, n),
        )
        await put(queue, wire, on_full)
        self._waiting[n] = (len(payloads), release)

    async def settle(self, grace_s: float, lost: asyncio.Future[None]) -> Settled:
        """Wait up to `grace_s` for every Wire handed on to be acknowledged; then withdraw those
        not claimed yet and wait for the claimed ones (an engine step under way) up to
        `min(grace_s, CLAIMED_WAIT_S)` more: a claimed Wire whose ack the engine holds back
        (its step's journal record not on disk: a full disk) is given up then, its ack never
        sent, so the stop stays bounded and nothing is acknowledged that is not journaled.
        Once `lost` is done (the connection is gone) stop waiting, withdrawing nothing more:
        the engine may still process what is out (the broker delivers it again, as it never
        gets the acks)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._until_settled(lost)
        withdrawn = 0
        if not lost.done():
            left = list(self._waiting.values())
            self._waiting.clear()
            for messages, release in left:
                withdrawn += messages
                release()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(grace_s, CLAIMED_WAIT_S)):
                    await self._until_settled(lost)
        unacknowledged = sum(m for m, _ in self._waiting.values()) + sum(self._claimed.values())
        if not lost.done():  # (given up: an ack that comes later is not sent)
            self._claimed.clear()
        return Settled(withdrawn, unacknowledged)

    async def _until_settled(self, lost: asyncio.Future[None]) -> None:
        """Until no Wire is out (waiting or claimed), or `lost` is done."""
        while (self._waiting or self._claimed) and not lost.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            lost.add_done_callback(self._wake)
            try:
                await waiter
            finally:
                lost.remove_done_callback(self._wake)
                self._waiter = None

    def _claim(self, n: int) -> bool:
        if n in self._waiting:
            self._claimed[n] = self._waiting.pop(n)[0]
        return n in self._claimed

    def _ack(self, n: int, ack: Callable[[], object]) -> None:
        if self._waiting.pop(n, None) is None and self._claimed.pop(n, None) is None:
            return  # withdrawn: the broker delivers it again, unacknowledged
        ack()
        if not self._waiting and not self._claimed:
            self._wake()

    def _wake(self, _: object = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def put(
    queue: asyncio.Queue[FeedBatch | Wire], item: FeedBatch | Wire, on_full: Callable[[], object]
) -> None:
    """Put `item` on `queue`, waiting while it is full (`on_full` called first)."""
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        on_full()
        await queue.put(item)


async def hand_on(
    batch: FeedBatch,
    queue: asyncio.Queue[FeedBatch | Wire] | asyncio.Queue[FeedBatch],
    counters: Counters,
    rejections: RejectionLog,
    feed: str,
) -> None:
    """Count a decoded batch (feed_ticks, feed_bars, its rejections) and put it on the engine's
    queue, waiting when the queue is full (counted in feed_queue_full_waits). The rejections of
    an earlier burst not logged yet are logged once their interval has passed: a feed's next
    batch says them (they waited for the next rejection of their reason, or a reconnect)."""
    if batch.ticks.height:
        counters.inc("feed_ticks", batch.ticks.height, feed=feed)
    bars = batch.minute_bars.height + batch.daily_bars.height
    if bars:
        counters.inc("feed_bars", bars, feed=feed)
    if batch.rejections:
        rejections.record(batch.rejections)
        batch.rejections_logged = True
    rejections.flush_due()  # (the rest of an earlier burst, once its interval has passed)
    try:
        queue.put_nowait(batch)
    except asyncio.QueueFull:
        counters.inc("feed_queue_full_waits", feed=feed)
        await queue.put(batch)
