"""Alerts trimmed from the stream before the notifier's group read them: counted and logged,
once, against a real Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError
from structlog.testing import capture_logs

from monitor.core.counters import Counters
from monitor.core.model import encode_alert
from monitor.notify.trimming import TrimWatch
from tests.alerts.redis_server import RedisServer
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration


async def trim_to(stream: str, n: int, keep: int) -> None:
    """`n` more alerts, each XADD trimming the stream to its last `keep` (the daemon's MAXLEN)."""
    client = aioredis.Redis()
    for i in range(n):
        a = alert(100 + i)
        await client.xadd(
            stream, {"id": a.id, "alert": encode_alert(a)}, maxlen=keep, approximate=False
        )
    await client.aclose()


def trimmed(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "alerts_trimmed_unread"]


async def test_alerts_trimmed_while_the_notifier_was_down_are_counted_once(stream: str) -> None:
    """Two alerts delivered; the notifier stops; ten more come with the stream trimmed to its
    last three. The next notifier delivers those three and says the other seven are gone: one
    warning, `notify_trimmed_unread` 7, not counted again at later checks."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        await publish(stream, [alert(1), alert(2)])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 2)
        await trim_to(stream, 10, keep=3)
        counters = Counters()
        with capture_logs() as logs:
            async with running(config, counters) as notifier:
                await until(lambda: counters.total("notify_acked") == 3)
                assert len(hooks.bodies("/chat")) == 5
                for _ in range(3):  # (and the claim loop checks every 0.1 s)
                    assert await notifier.inbox.trims.check() == 0  # (it has read on)
        assert counters.total("notify_trimmed_unread") == 7
        [warning] = trimmed(logs)
        assert warning["count"] == 7 and warning["log_level"] == "warning"
        assert "maxlen" in warning["hint"]


async def test_a_notifier_that_kept_up_reports_nothing(stream: str) -> None:
    """Trimming only what the group has read loses nothing: no warning, no count."""
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        await publish(stream, [alert(i) for i in range(6)])
        with capture_logs() as logs:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 6)
                await trim_to(stream, 1, keep=2)  # (drops five read ones)
                await until(lambda: notifier.counters.total("notify_acked") == 7)
                assert await notifier.inbox.trims.check() == 0
        assert notifier.counters.total("notify_trimmed_unread") == 0
        assert trimmed(logs) == []


async def test_a_group_trimmed_empty_before_its_first_read_counts_all_it_lost(
    stream: str,
) -> None:
    """A group created at the start of the stream, trimmed past before it read anything
    (Redis has no read count for it yet): everything not left in the stream is lost."""
    client = aioredis.Redis()
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    await trim_to(stream, 8, keep=3)
    counters, log = Counters(), _Log()
    watch = TrimWatch(client, stream, "g", counters, log)
    assert await watch.check() == 5
    assert await watch.check() == 5  # (still lost, not counted again)
    await client.aclose()
    assert counters.total("notify_trimmed_unread") == 5
    assert [(e, f["count"]) for e, f in log.events] == [("alerts_trimmed_unread", 5)]


async def test_a_group_set_past_a_stream_trimmed_empty_has_lost_nothing(stream: str) -> None:
    """A group created again at the last entry it read (after a Redis restart, say) over a
    stream since trimmed to nothing: Redis has no read count for it, but nothing deleted came
    after that entry, so nothing was lost (it said the count was unknown, and warned)."""
    client = aioredis.Redis()
    await trim_to(stream, 4, keep=4)
    last = (await client.xrevrange(stream, count=1))[0][0]
    await client.xgroup_create(stream, "g", id=last)
    await client.xtrim(stream, maxlen=0, approximate=False)
    counters, log = Counters(), _Log()
    try:
        assert await TrimWatch(client, stream, "g", counters, log).check() == 0
    finally:
        await client.aclose()
    assert counters.total("notify_trimmed_unread") == 0
    assert log.events == []


async def test_notifiers_sharing_a_group_report_a_loss_once(stream: str) -> None:
    """Three notifiers of one group look at the same trimmed stream: the loss is counted and
    logged by the first to look, not three times (a Prometheus sum over them stays right);
    more lost at the same position later is counted once too, by whoever sees it."""
    client = aioredis.Redis()
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    await trim_to(stream, 8, keep=3)
    watches = [TrimWatch(client, stream, "g", Counters(), _Log()) for _ in range(3)]
    for watch in watches:
        assert await watch.check() == 5
    await trim_to(stream, 2, keep=3)
    for watch in reversed(watches):
        assert await watch.check() == 7
    await client.aclose()
    assert sum(w._counters.total("notify_trimmed_unread") for w in watches) == 7
    counts = [f["count"] for w in watches for _, f in w._log.events]  # type: ignore[attr-defined]
    assert sorted(counts) == [2, 5]


class _Log:
    """A logger that keeps structlog-style events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


async def test_without_xinfo_in_its_acl_the_notifier_says_so_once_and_delivers() -> None:
    """A notifier user the ACL denies XINFO: one `trim_check_refused` warning naming what to
    grant, no further attempt, and alerts are delivered as before."""
    stream = f"mm-trim-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with RedisServer() as server:
        admin = aioredis.Redis.from_url(server.url)
        await admin.execute_command(
            "ACL", "SETUSER", "notifier", "on", f">{password}", "~*", "+@all", "-xinfo"
        )
        user = aioredis.Redis.from_url(f"redis://notifier:{password}@127.0.0.1:{server.port}/0")
        await user.xgroup_create(stream, "g", id="0", mkstream=True)
        log = _Log()
        watch = TrimWatch(user, stream, "g", Counters(), log)
        assert await watch.check() is None
        assert await watch.check() is None
        [(event, fields)] = log.events
        assert event == "trim_check_refused" and "+xinfo|stream" in fields["hint"]
        with pytest.raises(NoPermissionError):  # (it was a refusal, not an outage)
            await user.xinfo_stream(stream)
        await user.aclose()
        await admin.aclose()


@pytest.mark.parametrize("consumer", ["c1", "c0"])
async def test_alerts_read_then_trimmed_before_delivery_are_counted_not_dead_lettered(
    stream: str, consumer: str
) -> None:
    """A notifier (`c1` itself, or `c0`, which then died) read four alerts and delivered none;
    the stream was trimmed past three of them. The notifier `c1` counts those three as lost
    (`notify_trimmed_pending`, one `alerts_trimmed_pending` warning), sends no dead letter
    for them, delivers the fourth, and leaves nothing pending."""
    client = aioredis.Redis()
    await client.xgroup_create(stream, "notifier", id="0", mkstream=True)
    await publish(stream, [alert(i) for i in range(4)])
    await client.xreadgroup("notifier", consumer, {stream: ">"})  # (read, never delivered)
    await client.xtrim(stream, maxlen=1, approximate=False)
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        counters = Counters()
        with capture_logs() as logs:
            async with running(config, counters):
                await until(lambda: len(hooks.bodies("/chat")) == 1)
                await until(lambda: counters.total("notify_trimmed_pending") == 3)
                await until(lambda: counters.total("notify_acked") >= 1)
        assert len(hooks.bodies("/chat")) == 1
    events = [e for e in logs if e["event"] == "alerts_trimmed_pending"]
    assert [e["count"] for e in events] == [3]
    assert not any(e["event"].startswith("alert_dead") for e in logs)
    assert await client.xlen(f"{stream}:dead") == 0
    assert (await client.xpending(stream, "notifier"))["pending"] == 0
    await client.aclose()


async def test_the_gauges_say_how_far_behind_the_group_is(stream: str) -> None:
    """`notify_stream_unread` is what the stream still holds for the group to read (not what
    was trimmed), `notify_stream_pending` what it read and did not acknowledge."""
    client = aioredis.Redis()
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    await publish(stream, [alert(i) for i in range(5)])
    counters = Counters()
    watch = TrimWatch(client, stream, "g", counters, _Log())

    async def behind() -> tuple[float, float]:
        await watch.check()
        return counters.get("notify_stream_unread"), counters.get("notify_stream_pending")

    assert await behind() == (5, 0)
    await client.xreadgroup("g", "c", {stream: ">"}, count=2)
    assert await behind() == (3, 2)
    await client.xtrim(stream, maxlen=1, approximate=False)  # (two unread ones gone)
    assert await behind() == (1, 2)
    assert counters.total("notify_trimmed_unread") == 2
    await client.aclose()
