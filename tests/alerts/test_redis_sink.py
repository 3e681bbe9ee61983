"""RedisPublisher against real Redis servers: order, trimming, outages, never publishing twice."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import RedisPublisher, mask_url
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import Alert, encode_alert
from tests.alerts.redis_server import RedisServer, free_port

LOCAL_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.integration


def make_alerts(prefix: str, start: int, stop: int) -> list[Alert]:
    return [
        Alert(
            id=f"{prefix}:alert:{i:05d}",
            rule="surge.volume",
            kind="surge",
            symbol=f"S{i % 7}",
            timeframe="1m",
            session="2024-05-03",
            ts="2024-05-03T14:31:00Z",
            severity="warning",
            title=f"S{i % 7}: volume surge",
            text="volume 8x the 20-day average",
            metrics={"ratio": 8.0, "n": i},
            history=None,
        )
        for i in range(start, stop)
    ]


def fast_backoff() -> Backoff:
    return Backoff(base_s=0.02, cap_s=0.1, rng=random.Random(7))


@pytest.fixture
def prefix() -> str:
    """A key and channel prefix no other test uses."""
    return f"test:alerts:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def local(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis on 6379; deletes this test's keys afterwards."""
    client = aioredis.Redis.from_url(LOCAL_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server that survives SIGKILL with its data (AOF, fsync always)."""
    with RedisServer(None, "--appendonly", "yes", "--appendfsync", "always") as srv:
        yield srv


@asynccontextmanager
async def running(publisher: RedisPublisher) -> AsyncIterator[None]:
    """Run the publisher's loop as a named task for the duration of the block."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(publisher.run(stop), name="redis_publisher")
        try:
            yield
        finally:
            stop.set()


async def stream_entries(client: aioredis.Redis, stream: str) -> list[tuple[bytes, bytes]]:
    """The stream's entries as (id field, alert field), oldest first."""
    rows: Any = await client.xrange(stream)
    return [(f[b"id"], f[b"alert"]) for _, f in rows]


def entries(alerts: list[Alert]) -> list[tuple[bytes, bytes]]:
    return [(a.id.encode(), encode_alert(a)) for a in alerts]


async def receive(pubsub: Any, count: int, timeout_s: float = 5.0) -> list[bytes]:
    """`count` messages from a subscribed pubsub, then proof that no further one arrives."""
    got: list[bytes] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                got.append(message["data"])
    extra = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
    assert extra is None
    return got


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll `check` (a plain value such as a counter: there is no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def events(logs: list[MutableMapping[str, Any]], level: str) -> list[str]:
    return [e["event"] for e in logs if e["log_level"] == level]


async def test_alerts_reach_channel_and_stream_in_order(
    tmp_path: Path, local: aioredis.Redis, prefix: str
) -> None:
    """Submitted alerts arrive on the channel and the stream, in order, with `id` and `alert`."""
    channel, stream = f"{prefix}:channel", f"{prefix}:stream"
    alerts = make_alerts(prefix, 0, 450)
    counters = Counters()
    async with local.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        with Outbox(tmp_path / "outbox.db") as outbox:
            async with RedisPublisher(
                LOCAL_URL, channel, stream, outbox, counters=counters, batch_size=200
            ) as pub:
                async with running(pub):
                    assert pub.submit(alerts[:5]) == 5
                    assert pub.submit(alerts[5:]) == 445
                    assert await pub.flush(5.0) is True
                assert outbox.depth() == 0
        assert await receive(pubsub, 450) == [encode_alert(a) for a in alerts]
    assert await stream_entries(local, stream) == entries(alerts)
    assert counters.get("alerts_published") == 450
    assert counters.get("outbox_depth") == 0
    assert counters.get("redis_errors") == 0
    assert counters.get("publish_batches") >= 3


async def test_stream_is_trimmed_to_about_maxlen(
    tmp_path: Path, local: aioredis.Redis, prefix: str
) -> None:
    """With maxlen=10 the stream keeps the newest alerts and at most one extra node of 100."""
    stream = f"{prefix}:stream"
    alerts = make_alerts(prefix, 0, 1000)
    with Outbox(tmp_path / "outbox.db") as outbox:
        async with RedisPublisher(LOCAL_URL, f"{prefix}:channel", stream, outbox, maxlen=10) as pub:
            pub.submit(alerts)
            assert await pub.flush(5.0) is True
    length = await local.xlen(stream)
    assert 10 <= length <= 110, length
    assert await stream_entries(local, stream) == entries(alerts[-length:])


@pytest.mark.chaos
async def test_killed_redis_alerts_wait_then_go_out_in_order_once(
    tmp_path: Path, server: RedisServer, prefix: str
) -> None:
    """Redis SIGKILLed mid-stream: alerts wait in the outbox, then all reach the stream, in order,
    once, with one warning each for the outage and the waiting."""
    channel, stream = f"{prefix}:channel", f"{prefix}:stream"
    alerts = make_alerts(prefix, 0, 300)
    counters = Counters()
    with capture_logs() as logs, Outbox(tmp_path / "outbox.db") as outbox:
        async with (
            RedisPublisher(
                server.url, channel, stream, outbox, counters=counters, backoff=fast_backoff()
            ) as pub,
            running(pub),
        ):
            for alert in alerts[:100]:  # one by one, like a live engine
                pub.submit([alert])
                await asyncio.sleep(0)
            server.kill()
            for i in range(100, 200, 10):
                pub.submit(alerts[i : i + 10])
                await asyncio.sleep(0.01)
            await eventually(lambda: counters.get("redis_errors") >= 3)
            assert outbox.depth() > 0
            assert counters.get("outbox_depth") == outbox.depth()
            server.start()
            pub.submit(alerts[200:])
            assert await pub.flush(5.0) is True
    async with aioredis.Redis.from_url(server.url) as client:
        assert await stream_entries(client, stream) == entries(alerts)
    assert events(logs, "warning") == ["redis_unavailable", "outbox_waiting"]
    assert events(logs, "info").count("redis_recovered") == 1
    # A batch whose reply the kill cut off is resent and found already published (dedupe key):
    # every alert is accounted for exactly once, as published or as already published.
    seen = [e["id"] for e in logs if e["event"] in ("alert_published", "alert_already_published")]
    assert sorted(seen) == [a.id for a in alerts]
    assert counters.get("alerts_published") + counters.get("alerts_deduplicated") == 300


@pytest.mark.chaos
@pytest.mark.parametrize("refusal", ["oom", "readonly"])
async def test_refusing_redis_writes_nothing_then_recovers(
    tmp_path: Path, server: RedisServer, prefix: str, refusal: str
) -> None:
    """While Redis answers OOM or READONLY nothing is written; afterwards all alerts go out once."""
    stream = f"{prefix}:stream"
    alerts = make_alerts(prefix, 0, 20)
    async with aioredis.Redis.from_url(server.url) as admin:
        if refusal == "oom":
            await admin.config_set("maxmemory", 1)
        else:
            await admin.replicaof("127.0.0.1", free_port())
        with capture_logs() as logs, Outbox(tmp_path / "outbox.db") as outbox:
            async with RedisPublisher(
                server.url, f"{prefix}:channel", stream, outbox, backoff=fast_backoff()
            ) as pub:
                pub.submit(alerts)
                assert await pub.flush(0.3) is False
                assert outbox.depth() == 20
                assert await admin.dbsize() == 0
                if refusal == "oom":
                    await admin.config_set("maxmemory", 0)
                else:
                    await admin.replicaof("NO", "ONE")
                assert await pub.flush(5.0) is True
        assert await stream_entries(admin, stream) == entries(alerts)
    assert events(logs, "warning") == ["redis_unavailable", "outbox_waiting"]
    error = next(e["error"] for e in logs if e["event"] == "redis_unavailable")
    assert error.split(":")[0] == {"oom": "OutOfMemoryError", "readonly": "ReadOnlyError"}[refusal]


@pytest.mark.chaos
async def test_an_outage_that_turns_into_a_refusal_is_said_as_it_is_now(
    tmp_path: Path, server: RedisServer, prefix: str
) -> None:
    """Redis killed while alerts wait, then back as a read-only replica: /healthz's reason
    (`why_unavailable`) follows, from the refused connection to READONLY, and a second warning
    says what changed (before, the first cause stayed while Redis was up and refusing)."""
    alerts = make_alerts(prefix, 0, 5)
    with capture_logs() as logs, Outbox(tmp_path / "outbox.db") as outbox:
        async with (
            RedisPublisher(
                server.url, f"{prefix}:channel", f"{prefix}:stream", outbox,
                backoff=fast_backoff(),
            ) as pub,
            running(pub),
        ):  # fmt: skip
            server.kill()
            pub.submit(alerts)
            await eventually(lambda: (pub.why_unavailable or "").startswith("ConnectionError"))
            server.start()
            async with aioredis.Redis.from_url(server.url) as admin:
                await admin.replicaof("127.0.0.1", free_port())
                await eventually(lambda: (pub.why_unavailable or "").startswith("ReadOnlyError"))
                await admin.replicaof("NO", "ONE")
            assert await pub.flush(5.0) is True
    said = [(e["error"].split(":")[0], e.get("was", "").split(":")[0])
            for e in logs if e["event"] == "redis_unavailable"]  # fmt: skip
    assert said == [("ConnectionError", ""), ("ReadOnlyError", "ConnectionError")]


async def test_crash_between_publish_and_mark_publishes_nothing_twice(
    tmp_path: Path, local: aioredis.Redis, prefix: str
) -> None:
    """Alerts that reached Redis but were never marked published (a fresh outbox holding them
    pending) are skipped on resend: each id is on the stream and the channel once."""
    channel, stream = f"{prefix}:channel", f"{prefix}:stream"
    alerts = make_alerts(prefix, 0, 7)
    async with local.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        with Outbox(tmp_path / "before-crash.db") as outbox:
            async with RedisPublisher(LOCAL_URL, channel, stream, outbox) as pub:
                pub.submit(alerts[:5])
                assert await pub.flush(5.0) is True
        counters = Counters()
        with capture_logs() as logs, Outbox(tmp_path / "after-crash.db") as outbox:
            assert outbox.put(alerts) == 7
            async with RedisPublisher(LOCAL_URL, channel, stream, outbox, counters=counters) as pub:
                assert await pub.flush(5.0) is True
            assert [outbox.was_published(a.id) for a in alerts] == [True] * 7
        assert await receive(pubsub, 7) == [encode_alert(a) for a in alerts]
    assert await stream_entries(local, stream) == entries(alerts)
    assert (counters.get("alerts_published"), counters.get("alerts_deduplicated")) == (2, 5)
    skipped = [e["id"] for e in logs if e["event"] == "alert_already_published"]
    assert skipped == [a.id for a in alerts[:5]]


async def test_redis_down_at_start_keeps_alerts_and_flush_times_out(tmp_path: Path) -> None:
    """With nothing listening, flush returns False after its timeout and every alert still waits."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with capture_logs() as logs, Outbox(tmp_path / "outbox.db") as outbox:
        async with RedisPublisher(url, "c", "s", outbox, backoff=fast_backoff()) as pub:
            pub.submit(make_alerts("down", 0, 3))
            assert await pub.flush(0.3) is False
        assert [alert_id for _, alert_id, _ in outbox.pending(10)] == [
            "down:alert:00000",
            "down:alert:00001",
            "down:alert:00002",
        ]
    assert events(logs, "warning") == ["redis_unavailable", "outbox_waiting"]


@pytest.mark.chaos
async def test_password_from_url_or_parameter_and_never_logged(tmp_path: Path) -> None:
    """A password works from the URL or the `password=` parameter and never appears in logs."""
    secret = "s3cret-Pa55"
    with RedisServer(None, "--requirepass", secret) as srv:
        port = srv.port
        with capture_logs() as logs, Outbox(tmp_path / "outbox.db") as outbox:
            url = f"redis://:{secret}@127.0.0.1:{port}/0"
            async with RedisPublisher(url, "c", "s1", outbox) as pub:
                assert pub.url == f"redis://:***@127.0.0.1:{port}/0"
                assert secret not in repr(pub)
                pub.submit(make_alerts("url", 0, 2))
                assert await pub.flush(5.0) is True
            wrong = f"redis://default:wrong@127.0.0.1:{port}/0"
            async with RedisPublisher(wrong, "c", "s2", outbox, password=secret) as pub:
                pub.submit(make_alerts("param", 0, 2))
                assert await pub.flush(5.0) is True
            async with RedisPublisher(wrong, "c", "s3", outbox, backoff=fast_backoff()) as pub:
                pub.submit(make_alerts("wrong", 0, 2))
                assert await pub.flush(0.2) is False
        async with aioredis.Redis(host="127.0.0.1", port=port, password=secret) as client:
            assert (await client.xlen("s1"), await client.xlen("s2")) == (2, 2)
    assert secret not in repr(logs)
    assert events(logs, "warning") == ["redis_unavailable", "outbox_waiting"]
    unavailable = next(e for e in logs if e["event"] == "redis_unavailable")
    assert unavailable["url"] == f"redis://default:***@127.0.0.1:{port}/0"


def test_mask_url_hides_only_the_password() -> None:
    """mask_url replaces the password and keeps scheme, user, host, port and db."""
    assert [
        mask_url("rediss://alerts:p%40ss@redis.example:6380/2"),
        mask_url("redis://:pw@[::1]:6379/0"),
        mask_url("redis://127.0.0.1:6379/0"),
        mask_url("redis://alerts:p#ss@redis.example:6380/2"),  # (no fragment: a password)
    ] == [
        "rediss://alerts:***@redis.example:6380/2",
        "redis://:***@[::1]:6379/0",
        "redis://127.0.0.1:6379/0",
        "redis://alerts:***@redis.example:6380/2",
    ]
