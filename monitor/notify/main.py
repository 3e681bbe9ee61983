"""The notifier as a process: `run` (until SIGTERM, with systemd notify and /metrics) and
`send_test` (one sample alert to one receiver, for `market-monitor notify test`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from monitor.clock import Clock
from monitor.core.model import Alert
from monitor.notify.config import NotifyConfig
from monitor.notify.delivery import Outcome
from monitor.notify.service import Notifier

SAMPLE = Alert(
    id="notify-test-sample",
    rule="streak.daily",
    kind="streak",
    symbol="^RUT",
    timeframe="1d",
    session="2024-07-16",
    ts="2024-07-16T20:00:00Z",
    severity="notice",
    title="Russell 2000: 5 straight sessions up more than 1.0% (test message)",
    text="Russell 2000 rose more than 1.0% in each of 5 sessions (+11.5% in all), "
    "closing at 2,263.67.",
    metrics={"streak": 5, "return": 0.1154, "close": 2263.67},
    history=None,
)


async def send_test(
    config: NotifyConfig, receiver: str, environ: dict[str, str] | None = None
) -> Outcome:
    """Send a sample alert to one receiver now (no grouping, no delivery log)."""
    config.receiver(receiver)
    notifier = Notifier(config, environ=environ)
    async with notifier:
        message = await notifier.message(receiver, [SAMPLE])
        return await notifier.send_now(receiver, message)


async def run(
    config: NotifyConfig,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    clock: Clock | None = None,
    notify: Callable[[str], None] | None = None,
) -> int:
    """Run the notifier until SIGTERM/SIGINT (or `stop`); the exit code. `notify` receives
    systemd's READY=1, WATCHDOG=1 (every half WatchdogSec) and STOPPING=1."""
    import signal

    from monitor.systemd import watchdog_interval_s

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        notifier = await stack.enter_async_context(Notifier(config, clock=clock))
        if config.http.enabled:
            from monitor.http import HttpServer

            routes = {
                "/metrics": lambda: (
                    200,
                    "text/plain; version=0.0.4",
                    notifier.counters.render().encode(),
                )
            }
            await stack.enter_async_context(HttpServer(config.http.host, config.http.port, routes))
        if notify is not None:
            notify("READY=1")
        every_s = watchdog_interval_s()
        async with asyncio.TaskGroup() as tg:
            if notify is not None and every_s is not None:
                tg.create_task(_watchdog(notify, every_s, stop), name="systemd-watchdog")
            await notifier.run(stop)
            stop.set()
        if notify is not None:
            notify("STOPPING=1")
    return 0


async def _watchdog(notify: Callable[[str], None], every_s: float, stop: asyncio.Event) -> None:
    """WATCHDOG=1 while the event loop runs."""
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
