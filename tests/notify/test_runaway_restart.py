"""The runaway guard against real Redis: alerts read again after a restart count once."""

from __future__ import annotations

import pytest

from tests.notify.conftest import alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, pending, running, until

pytestmark = pytest.mark.integration

NOTICE = "Rule squeeze.daily is firing too often: throttled"


async def test_alerts_pending_across_a_restart_are_not_throttled_and_a_burst_still_is(
    stream: str,
) -> None:
    """max_alerts=5, four alerts pending for a receiver that is down: the restarted notifier
    reads them again and, the receiver back, delivers all four as themselves with no throttle
    notice (they were counted 8 times and throttled); a 5th alert then passes and a 6th
    distinct one trips the guard."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 503)
        config = make_config(
            stream,
            [{"name": "chat", "url": hooks.url("/chat"), "max_attempts": 1000}],
            runaway={"max_alerts": 5, "window_s": 600},
        )
        alerts = [alert(i) for i in range(6)]
        await publish(stream, alerts[:4])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_read") == 4)
            await until(lambda: any(p == "/chat" for p, *_ in hooks.received))
        assert await pending(stream) == 4
        hooks.always("/chat", None)
        async with running(config) as notifier:
            await until(lambda: len(hooks.bodies("/chat")) == 4)
            assert await pending(stream) == 0
            await publish(stream, alerts[4:])
            await until(lambda: len(hooks.bodies("/chat")) == 6)
            await until(lambda: notifier.counters.total("notify_acked") == 6)
            # (held while throttled, in /metrics: market_monitor_notify_held{reason="throttled"})
            await until(lambda: notifier.counters.get("notify_held", reason="throttled") == 1)
    titles = [b["title"] for b in hooks.bodies("/chat")]
    assert titles[:4] == [a.title for a in alerts[:4]]
    assert sorted(titles[4:]) == sorted([alerts[4].title, NOTICE])
    assert notifier.counters.get("notify_dropped", reason="throttled") == 1
    assert await pending(stream) == 0
