"""Stopping (SIGTERM) while a delivery is in flight: the notifier lets it finish, records it and
acknowledges it before it exits, within a bound; one that takes longer is cut off and logged."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.model import encode_alert
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


async def test_a_peer_does_not_take_over_a_delivery_finishing_at_stop(stream: str) -> None:
    """Two notifiers in one group (claiming entries idle for 0.5 s): A reads an alert, and is
    stopped while its receiver takes 3 s to answer; B runs meanwhile. A keeps the entry
    claimed while it finishes, so B does not take it over and send it a second time."""
    async with WebhookServer() as hooks:
        hooks.slow("/chat", 3.0)
        receivers = [{"name": "chat", "url": hooks.url("/chat")}]
        a = Notifier(make_config(stream, receivers, redis={"consumer": "a"}))
        b = Notifier(make_config(stream, receivers, redis={"consumer": "b"}))
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        async with a, b:
            task_a = asyncio.create_task(a.run(stop_a), name="stopping")
            await publish(stream, [alert(1)])
            await until(lambda: len(hooks.received) == 1)  # (A sends: B is not reading yet)
            task_b = asyncio.create_task(b.run(stop_b), name="peer")
            try:
                stop_a.set()
                await asyncio.wait_for(task_a, 30)
                await asyncio.sleep(1.0)  # (B's claimer has looked several times meanwhile)
            finally:
                stop_b.set()
                await asyncio.wait_for(task_b, 30)
    assert len(hooks.received) == 1, hooks.received
    assert await pending(stream) == 0


@pytest.mark.chaos
async def test_a_send_whose_record_redis_refuses_is_said_to_be_sent_again() -> None:
    """Stopped while the delivery log cannot be written (Redis refusing writes: too few
    replicas) after the receiver took the alert: the cut-off is logged as sent and not
    recorded, to be sent again after the restart, not as still sending."""
    from tests.alerts.redis_server import RedisServer

    stream = "mm-notify-unrecorded"
    with RedisServer() as server:
        async with WebhookServer() as hooks:
            hooks.slow("/chat", 1.0)
            receivers = [{"name": "chat", "url": hooks.url("/chat")}]
            config = make_config(stream, receivers, redis={"url": server.url})
            notifier = Notifier(config, delivery_grace_s=2.0)
            client = aioredis.Redis.from_url(server.url)
            stop = asyncio.Event()
            with capture_logs() as logs:
                async with notifier:
                    task = asyncio.create_task(notifier.run(stop), name="notifier_under_test")
                    await client.xadd(stream, {"id": alert(1).id, "alert": encode_alert(alert(1))})
                    await until(lambda: len(hooks.received) == 1)
                    await client.config_set("min-replicas-to-write", "1")
                    stop.set()
                    await asyncio.wait_for(task, 30)
            await client.config_set("min-replicas-to-write", "0")
            await client.aclose()
    reasons = [e["reason"] for e in logs if e["event"] == "delivery_abandoned"]
    assert reasons == ["sent, not recorded (Redis refusing or away): it will be sent again"]
