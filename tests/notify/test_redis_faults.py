"""The running notifier against Redis faults: an outage while a delivery gives up, and the
stream or the consumer group deleted under a blocked read. It keeps running and loses nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.model import decode_alert, encode_alert
from monitor.errors import ConfigError
from monitor.notify.inbox import read_retry_s
from monitor.notify.service import Notifier
from tests.alerts.redis_server import RedisServer
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration


@pytest.mark.chaos
async def test_dead_letter_waits_for_redis_and_the_entry_stays_pending_until_written() -> None:
    """Redis is killed while a broken receiver's retries run: when they run out the dead letter
    waits for Redis (the notifier keeps running), is written once Redis is back, and only then
    is the entry acknowledged."""
    stream = f"mm-notify-fault-{uuid.uuid4().hex[:8]}"
    # AOF, fsynced at every write: the restarted server has the stream, the group and the
    # pending entry, as a production Redis would.
    with RedisServer(None, "--appendonly", "yes", "--appendfsync", "always") as server:
        async with WebhookServer() as hooks:
            hooks.always("/down", 500)
            config = make_config(
                stream, [{"name": "down", "url": hooks.url("/down")}], redis={"url": server.url}
            )
            broken = alert(1)
            client = aioredis.Redis.from_url(server.url)
            await client.xadd(stream, {"id": broken.id, "alert": encode_alert(broken)})
            await client.aclose()
            stop = asyncio.Event()
            async with Notifier(config) as notifier:
                task = asyncio.create_task(notifier.run(stop), name="notifier_under_test")
                try:
                    await until(lambda: len(hooks.received) == 2, 10)
                    server.kill()  # the third and last attempt fails while Redis is down
                    await until(lambda: len(hooks.received) == 3, 10)
                    await asyncio.sleep(0.5)  # the dead letter is refused at least once
                    assert not task.done()
                    server.start()
                    await until(lambda: notifier.counters.total("notify_acked") == 1, 15)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 10)  # raises if the notifier crashed
        client = aioredis.Redis.from_url(server.url)  # the first one's connection died
        dead = await client.xrange(f"{stream}:dead")
        pending = await client.xpending(stream, "notifier")
        await client.aclose()
    assert [(f[b"receiver"], f[b"attempts"], decode_alert(f[b"alert"])) for _, f in dead] == [
        (b"down", b"3", broken)
    ]
    assert pending["pending"] == 0
    assert notifier.counters.get("notify_dead_lettered", receiver="down") == 1


@pytest.mark.parametrize("deleted", ["stream", "group"])
async def test_a_deleted_stream_or_group_is_created_again_and_reading_goes_on(
    stream: str, deleted: str
) -> None:
    """Deleting the stream (DEL) or the consumer group (XGROUP DESTROY) under a blocked read
    logs one warning, the group is created again, and the next alert is delivered; the one
    delivered before is not sent again."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        client = aioredis.Redis()
        first = await client.xadd(stream, {"id": alert(1).id, "alert": encode_alert(alert(1))})
        with capture_logs() as logs:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 1)
                await asyncio.sleep(0.05)  # the reader is blocked in XREADGROUP again
                if deleted == "stream":
                    await client.delete(stream)
                else:
                    await client.xgroup_destroy(stream, "notifier")
                await until(lambda: any(e["event"] == "notify_group_recreated" for e in logs))
                await publish(stream, [alert(2)])
                await until(lambda: notifier.counters.total("notify_acked") == 2)
        await client.aclose()
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(1).title, alert(2).title]
    assert notifier.counters.get("notify_already_sent", receiver="chat") == 0
    recreated = [e for e in logs if e["event"] == "notify_group_recreated"]
    # A new stream is read from its start; a stream that stayed, after the last entry read.
    assert [(e["log_level"], e["start"]) for e in recreated] == [
        ("warning", "0" if deleted == "stream" else first.decode())
    ]
    assert recreated[0]["reason"].startswith(("UNBLOCKED", "NOGROUP"))


async def test_a_stream_key_replaced_by_another_type_is_waited_out_and_reading_goes_on(
    stream: str,
) -> None:
    """The stream key deleted and SET to a string under a blocked read: the notifier keeps
    running (it used to stop with a traceback), logs an error naming the key, its type and
    what to do, and /healthz says down; once the key is deleted, the group is created again
    and the next alert is delivered."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        client = aioredis.Redis()
        await client.xadd(stream, {"id": alert(1).id, "alert": encode_alert(alert(1))})
        with capture_logs() as logs:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 1)
                await asyncio.sleep(0.05)  # the reader is blocked in XREADGROUP again
                await client.delete(stream)
                await client.set(stream, "oops")
                await until(lambda: any(e["event"] == "notify_stream_wrong_type" for e in logs))
                health = notifier.health.document()
                assert health["status"] == "down"
                assert f"alert stream unreadable: the key {stream!r} holds a string, not a " in (
                    " ".join(health["reasons"])
                )
                await client.delete(stream)
                await until(lambda: notifier.health.document()["status"] == "healthy")
                await publish(stream, [alert(2)])
                await until(lambda: notifier.counters.total("notify_acked") == 2)
        await client.aclose()
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(1).title, alert(2).title]
    wrong = next(e for e in logs if e["event"] == "notify_stream_wrong_type")
    assert (wrong["log_level"], wrong["stream"], wrong["type"]) == ("error", stream, "string")
    assert wrong["error"].startswith("WRONGTYPE") and "DEL" in wrong["hint"]


async def test_a_stream_key_of_another_type_at_start_is_a_config_error_naming_it(
    stream: str,
) -> None:
    """At start, a stream key that holds a string is a config error (exit 78) that names the
    key, its type and what to do; it used to say only WRONGTYPE."""
    client = aioredis.Redis()
    await client.set(stream, "oops")
    await client.aclose()
    config = make_config(stream, [{"name": "chat", "url": "json://127.0.0.1:9/x"}])
    with pytest.raises(ConfigError) as caught:
        async with Notifier(config):
            pass
    said = str(caught.value)
    assert f"[redis] stream: the key {stream!r} holds a string, not a stream" in said
    assert "DEL" in said and "redis://127.0.0.1:6379/0" in said


async def consumers(stream: str) -> dict[str, int]:
    """The group's consumers and the entries each holds pending."""
    client = aioredis.Redis()
    found = await client.xinfo_consumers(stream, "notifier")
    await client.aclose()
    return {c["name"].decode(): int(c["pending"]) for c in found}


async def test_a_clean_stop_deletes_the_consumer_only_when_it_holds_nothing(
    stream: str,
) -> None:
    """With the default `hostname-pid` consumer name, a notifier that delivered everything
    leaves no consumer behind when it stops (they used to pile up in XINFO CONSUMERS, one per
    restart); one that stops holding an entry (waiting `group_wait_s`) keeps its consumer and
    the entry pending, for another notifier to claim."""
    async with WebhookServer() as hooks:
        receivers = [{"name": "chat", "url": hooks.url("/chat")}]
        config = make_config(stream, receivers, redis={"consumer": ""})
        await publish(stream, [alert(1)])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 1)
            assert list(await consumers(stream)) == [notifier.consumer]
        assert await consumers(stream) == {}

        held = make_config(stream, receivers, redis={"consumer": ""}, route={"group_wait_s": 60})
        await publish(stream, [alert(2)])
        async with running(held) as notifier:
            await until(lambda: notifier.router.waiting() > 0)
        assert await consumers(stream) == {notifier.consumer: 1}


def test_the_read_retry_wait_stays_capped_however_long_an_outage_lasts() -> None:
    """A read failing for hours (Redis away, the stream key of another type all night) waits
    1 s, 2 s, ... then 30 s each time: the 1,100th failure in a row waits 30 s as the 6th does,
    instead of an OverflowError stopping the notifier after eight and a half hours."""
    waits = [read_retry_s(n) for n in (1, 2, 3, 5, 6, 1_024, 1_100, 100_000)]
    assert waits == [1.0, 2.0, 4.0, 16.0, 30.0, 30.0, 30.0, 30.0]
