"""What on-call greps for: `alert_delivered` and `alert_dead_lettered` name each alert's rule and
symbol, and a dead letter's reason says what failed (a refused connection and its port) with
the receiver's URL still masked."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.notify.delivery import network_error
from tests.alerts.redis_server import free_port
from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, running, until

pytestmark = pytest.mark.integration


async def test_alert_delivered_names_the_rule_and_symbol_of_each_alert(stream: str) -> None:
    """A message of one alert logs its `rule` and `symbol`; a group's logs the (rule, symbol)
    of each of its alerts, in order."""
    surge = alert(1, rule="surge.daily", kind="surge", symbol="IWM")
    squeezes = [alert(2), alert(3)]
    async with WebhookServer() as hooks:
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat")}],
            route={"group_by": ["rule", "session"]},
        )
        await publish(stream, [surge, *squeezes])
        with capture_logs() as logs:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 3)
    delivered = [
        {k: e.get(k) for k in ("receiver", "ids", "rule", "symbol", "alerts")}
        for e in logs
        if e["event"] == "alert_delivered"
    ]
    assert delivered == [
        {
            "receiver": "chat",
            "ids": [surge.id],
            "rule": "surge.daily",
            "symbol": "IWM",
            "alerts": None,
        },
        {
            "receiver": "chat",
            "ids": [a.id for a in squeezes],
            "rule": None,
            "symbol": None,
            "alerts": [("squeeze.daily", "SC02"), ("squeeze.daily", "SC03")],
        },
    ]


async def test_a_dead_letter_says_the_connection_was_refused_on_which_port(stream: str) -> None:
    """A receiver whose port refuses connections: `alert_dead_lettered` names the alert's rule
    and symbol, and the reason (logged and in `{stream}:dead`) says "connection refused" and
    the port, the URL masked as before (no user, password, path or query)."""
    port = free_port()
    url = f"json://hookuser:s3cret@127.0.0.1:{port}/private/path?token=t0ken"
    surge = alert(1, rule="surge.daily", kind="surge", symbol="IWM")
    config = make_config(stream, [{"name": "hook", "url": url}])
    await publish(stream, [surge])
    with capture_logs() as logs:
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 1)
    reason = f"gave up after 3 attempts: json://127.0.0.1/…: connection refused (port {port})"
    dead = [
        {k: e[k] for k in ("receiver", "id", "rule", "symbol", "reason")}
        for e in logs
        if e["event"] == "alert_dead_lettered"
    ]
    assert dead == [
        {
            "receiver": "hook",
            "id": surge.id,
            "rule": "surge.daily",
            "symbol": "IWM",
            "reason": reason,
        }
    ]
    client = aioredis.Redis()
    letters = await client.xrange(f"{stream}:dead")
    await client.aclose()
    assert [f[b"reason"].decode() for _, f in letters] == [reason]
    said = repr(logs)
    assert [s for s in ("hookuser", "s3cret", "private", "t0ken") if s in said] == []


async def test_network_errors_say_what_failed_without_quoting_the_url() -> None:
    """A name that does not resolve and a refused port are told in words, with the port; the
    exception's own message (which may quote the address) is not used."""
    import httpx

    port = free_port()
    async with httpx.AsyncClient(timeout=2) as client:
        said = []
        for url in (f"http://127.0.0.1:{port}/x?token=t0ken", "https://no-such-host.invalid/x"):
            try:
                await client.post(url, json={})
            except httpx.HTTPError as exc:
                said.append(network_error(exc))
    assert said[0] == f"connection refused (port {port})"
    assert said[1].startswith("cannot resolve the host: ") and said[1].endswith("(port 443)")
