"""Redis that answers but refuses writes for a while (out of memory, too few replicas: the
same path as read-only after a failover, MISCONF, BUSY...): the running notifier waits it out
and loses nothing, and at start it is an outage to wait for, not a config error (exit 78)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from structlog.testing import capture_logs

from monitor.core.model import encode_alert
from monitor.errors import ConfigError, SinkUnavailable
from monitor.notify.inbox import redis_failure
from monitor.notify.service import Notifier
from tests.alerts.redis_server import RedisServer
from tests.notify.conftest import alert
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, until

pytestmark = pytest.mark.integration

# (setting, value that makes Redis refuse writes, value that lets them through again, what the
# notifier's warnings then say)
REFUSALS = {
    "NOREPLICAS": ("min-replicas-to-write", "1", "0", "NOREPLICAS"),
    "OOM": ("maxmemory", "1", "0", "OutOfMemoryError"),
}


def refusing(notifier: Notifier) -> tuple[str, str] | None:
    """What /healthz says of refused writes: (the refusal's word, the status), or None."""
    health = notifier.health.document()
    said = [r for r in health["reasons"] if r.startswith("redis refusing writes for now: ")]
    if not said:
        return None
    word = next(w for (_, _, _, w) in REFUSALS.values() if w in said[0])
    return word, health["status"]


@pytest.mark.chaos
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_the_notifier_waits_out_refused_writes_and_delivers_once(refusal: str) -> None:
    """Redis refuses writes just as an alert arrives: the notifier keeps running (the delivery
    log, saved state and XACK wait, logging the refusal), and once Redis takes writes again the
    alert is acknowledged, sent once."""
    setting, refuse, allow, said = REFUSALS[refusal]
    stream = f"mm-notify-refused-{uuid.uuid4().hex[:8]}"
    with RedisServer() as server:
        async with WebhookServer() as hooks:
            config = make_config(
                stream, [{"name": "chat", "url": hooks.url("/chat")}], redis={"url": server.url}
            )
            client = aioredis.Redis.from_url(server.url)
            stop = asyncio.Event()
            with capture_logs() as logs:
                async with Notifier(config) as notifier:
                    task = asyncio.create_task(notifier.run(stop), name="notifier_under_test")
                    try:
                        await asyncio.sleep(0.3)  # (the reader is blocked in XREADGROUP)
                        async with client.pipeline(transaction=True) as pipe:
                            pipe.xadd(stream, {"id": alert(1).id, "alert": encode_alert(alert(1))})
                            pipe.config_set(setting, refuse)
                            await pipe.execute()
                        await until(lambda: any(said in str(e.get("error")) for e in logs))
                        # (/healthz says so, down once our lease lapsed: Redis answers reads)
                        await until(lambda: refusing(notifier) == (said, "down"))
                        assert not task.done()
                        await client.config_set(setting, allow)
                        await until(lambda: notifier.counters.total("notify_acked") == 1)
                        await until(lambda: refusing(notifier) is None)
                    finally:
                        stop.set()
                        await asyncio.wait_for(task, 10)  # raises if the notifier crashed
            pending = await client.xpending(stream, "notifier")
            await client.aclose()
    assert [b["title"] for b in hooks.bodies("/chat")] == [alert(1).title]
    assert pending["pending"] == 0


@pytest.mark.chaos
async def test_a_redis_refusing_writes_at_start_is_waited_for_not_a_config_error() -> None:
    """At start, a Redis that refuses writes (too few replicas) is SinkUnavailable, waited for
    like an unreachable one, not a ConfigError that systemd would never restart."""
    stream = f"mm-notify-refused-{uuid.uuid4().hex[:8]}"
    with RedisServer(None, "--min-replicas-to-write", "1") as server:
        config = make_config(
            stream, [{"name": "chat", "url": "json://127.0.0.1:9/x"}], redis={"url": server.url}
        )
        with pytest.raises(SinkUnavailable, match="refusing for now: NOREPLICAS"):
            async with Notifier(config):
                pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."), 69),
        (ReadOnlyError("READONLY You can't write against a read only replica."), 69),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), 69),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots, but ..."), 69),
        (ResponseError("BUSY Redis is busy running a script."), 69),
        (ResponseError("MASTERDOWN Link with MASTER is down"), 69),
        (ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"), 69),
        (
            ResponseError(
                "UNBLOCKED force unblock from blocking operation, instance state changed"
            ),
            69,
        ),
        (AuthenticationError("WRONGPASS invalid username-password pair"), 78),
        (NoPermissionError("NOPERM this user has no permissions to run the 'xadd' command"), 78),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), 78),
    ],
)
def test_refusals_that_pass_are_waited_for_and_config_errors_exit_78(
    error: RedisError, expected: int
) -> None:
    """A Redis refusal that passes by itself is SinkUnavailable (exit 69, waited for); a refused
    login, command or key type is a ConfigError (exit 78)."""
    failure = redis_failure(error, "redis://127.0.0.1:6379/0")
    kind = SinkUnavailable if expected == 69 else ConfigError
    assert type(failure) is kind
