"""The default `[delivery]` retries outlast a chat service's brief outage, and the time a
receiver's courier may take over one message (which sets the digest's claim) follows them."""

from __future__ import annotations

import random

from monitor.core.backoff import Backoff
from monitor.notify.config import DeliverySection
from monitor.notify.delivery import ChannelUnavailable, Courier
from monitor.notify.render import Message

MSG = Message(title="t", body="b", body_format="markdown")


class Lowest(random.Random):
    """A random source that always draws 0: the shortest waits jitter allows."""

    def random(self) -> float:
        return 0.0


class Down:
    """A sender whose provider never answers (each attempt a transient failure)."""

    takes_attachments = False

    async def send(self, message: Message) -> None:
        raise ChannelUnavailable("json://127.0.0.1/…: connection refused (port 9)")

    async def aclose(self) -> None:
        """Nothing to close."""


def default_courier(waits: list[float]) -> Courier:
    """A courier with the default `[delivery]` settings, its waits recorded, not slept."""
    d = DeliverySection()

    async def sleep(s: float) -> None:
        waits.append(s)

    backoff = Backoff(d.backoff_base_s, d.backoff_cap_s, jitter=d.jitter, rng=Lowest())
    return Courier("chat", Down(), backoff=backoff, max_attempts=d.max_attempts, sleep=sleep)


async def test_the_default_retries_last_at_least_three_minutes() -> None:
    """With the defaults, even at the shortest waits jitter allows, a receiver that does not
    answer is tried for more than three minutes before its alert is dead-lettered: an outage
    of a minute or two delays alerts and loses none (before: 15.5 s to 31 s)."""
    waits: list[float] = []
    outcome = await default_courier(waits).deliver(MSG)
    assert (outcome.ok, outcome.attempts) == (False, DeliverySection().max_attempts)
    assert sum(waits) >= 180
    assert max(waits) <= DeliverySection().backoff_cap_s


def test_the_longest_delivery_covers_every_attempt_and_wait() -> None:
    """`longest_s` (what the digest's claim lasts twice over) is each attempt's three timeouts
    plus the wait after it, for every attempt: with the defaults under 20 minutes."""
    courier = default_courier([])
    d = DeliverySection()
    assert courier.longest_s == d.max_attempts * (3 * 10.0 + d.backoff_cap_s)
    assert courier.longest_s < 20 * 60


class LimitedForADay:
    """A sender whose provider answers 429 with a Retry-After of a day (a proxy's bug), then,
    on the next attempt, takes the message."""

    takes_attachments = False

    def __init__(self) -> None:
        self.attempts = 0

    async def send(self, message: Message) -> None:
        from monitor.notify.delivery import RateLimited

        self.attempts += 1
        if self.attempts == 1:
            raise RateLimited("json://127.0.0.1/…: 429", 86_400.0)

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_a_retry_after_of_a_day_is_waited_an_hour_at_most() -> None:
    """A Retry-After is honoured up to an hour (RETRY_AFTER_CAP_S): a header of a day stops
    the receiver an hour, not a day. Before, the courier slept for whatever the header said
    (100,000 s in the review's test) while the receiver had long recovered."""
    from monitor.notify.delivery import RETRY_AFTER_CAP_S

    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    courier = Courier(
        "chat", LimitedForADay(), backoff=Backoff(1.0, 60.0), max_attempts=12, sleep=sleep
    )
    outcome = await courier.deliver(MSG)
    assert (outcome.ok, outcome.attempts) == (True, 2)
    assert waits == [RETRY_AFTER_CAP_S] and RETRY_AFTER_CAP_S == 3600.0
