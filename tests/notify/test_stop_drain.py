"""Stopping (SIGTERM) while a delivery is in flight: the notifier lets it finish, records it and
acknowledges it before it exits, within a bound; one that takes longer is cut off and logged."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.notify.service import Notifier
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, pending, until

pytestmark = pytest.mark.integration


async def stopped_mid_send(notifier: Notifier, stream: str, hooks: WebhookServer) -> None:
    """Run `notifier`, publish one alert, and stop it as soon as the receiver has the request."""
    stop = asyncio.Event()
    async with notifier:
        task = asyncio.create_task(notifier.run(stop), name="notifier_under_test")
        await publish(stream, [alert(1)])
        await until(lambda: len(hooks.received) == 1)
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_delivery_in_flight_at_stop_is_finished_recorded_and_acked(stream: str) -> None:
    """Stopped while the receiver takes 3 s to answer (longer than the reader's stop grace),
    the notifier waits for the answer, writes the delivery log and acknowledges the entry, so
    nothing is sent again after a restart."""
    async with WebhookServer() as hooks:
        hooks.slow("/chat", 3.0)
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        notifier = Notifier(config)
        await stopped_mid_send(notifier, stream, hooks)
    client = aioredis.Redis()
    logged = await client.exists(f"{stream}:notify:sent:chat:{alert(1).id}")
    await client.aclose()
    assert (
        logged,
        await pending(stream),
        notifier.counters.get("notify_sent", receiver="chat"),
    ) == (
        1,
        0,
        1,
    )


async def test_a_delivery_longer_than_the_grace_is_cut_off_and_logged(stream: str) -> None:
    """A delivery still in flight when the stop grace ends is cancelled and logged as
    `delivery_abandoned` with its alert ids; its entry stays pending for the next start."""
    async with WebhookServer() as hooks:
        hooks.slow("/chat", 5.0)
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        notifier = Notifier(config, delivery_grace_s=0.5)
        with capture_logs() as logs:
            await stopped_mid_send(notifier, stream, hooks)
    abandoned = [
        (e["log_level"], e["receiver"], e["ids"])
        for e in logs
        if e["event"] == "delivery_abandoned"
    ]
    assert abandoned == [("warning", "chat", [alert(1).id])]
    assert await pending(stream) == 1
