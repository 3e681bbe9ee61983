"""The notifier as a process: `run` (until SIGTERM, with systemd notify, /metrics and /healthz;
waiting for Redis at start) and `send_test` (one sample alert to one receiver, for
`market-monitor notify test`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from monitor import logs
from monitor.clock import Clock
from monitor.core.backoff import Backoff
from monitor.core.model import Alert
from monitor.errors import ConfigError, SinkUnavailable
from monitor.notify.config import NotifyConfig
from monitor.notify.delivery import Outcome
from monitor.notify.inbox import pause
from monitor.notify.service import Notifier

# Waits between attempts to reach Redis at start: 0.5 s, 1 s, 2 s ... 30 s (as reads do once
# running), each cut by up to a fifth at random so that notifiers restarted together spread.
START_BACKOFF = Backoff(base_s=0.5, cap_s=30.0, jitter=0.2)
# What one attempt may take at most (connect, then the commands of the start, each with the
# client's timeouts): with the wait, how far systemd's start timeout is pushed out each time.
ATTEMPT_S = 60.0

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
    """Send a sample alert to one receiver now (no grouping, no delivery log). Only that
    receiver's URL is resolved: the others' secrets need not be set."""
    config.receiver(receiver)
    notifier = Notifier(config, environ=environ, receivers=(receiver,), consume=False)
    async with notifier:
        await notifier.reachable()  # (no consumer group joined: none made at `start` by a test)
        message = await notifier.message(receiver, [SAMPLE])
        return await notifier.send_now(receiver, message)


async def run(
    config: NotifyConfig,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    clock: Clock | None = None,
    notify: Callable[[str], None] | None = None,
    start_backoff: Backoff | None = None,
) -> int:
    """Run the notifier until SIGTERM/SIGINT (or `stop`); the exit code. A Redis that does not
    answer at start is waited for (`_start`), /healthz saying `down` meanwhile; one refusing
    the login or a command is a ConfigError (exit 78) at once: no retry fixes it.

    `notify` receives systemd's READY=1 once the notifier runs (its consumer group set up),
    WATCHDOG=1 every half WatchdogSec from the start, waiting included, STATUS= and
    EXTEND_TIMEOUT_USEC= while it waits for Redis (so TimeoutStartSec does not kill a notifier
    waiting out an outage), and STOPPING=1."""
    import signal

    from monitor.systemd import watchdog_interval_s

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    notifier = Notifier(config, clock=clock)
    refused: ConfigError | None = None
    async with contextlib.AsyncExitStack() as stack:
        if config.http.enabled:  # (first: /healthz says `down` while Redis is waited for)
            from monitor.http import HttpServer

            routes = {
                "/metrics": lambda: (
                    200,
                    "text/plain; version=0.0.4",
                    notifier.counters.render().encode(),
                ),
                "/healthz": notifier.health.route(),
            }
            server = HttpServer(
                config.http.host,
                config.http.port,
                routes,
                allowed_hosts=config.http.allowed_hosts,
            )
            await stack.enter_async_context(server)
        every_s = watchdog_interval_s()
        async with asyncio.TaskGroup() as tg:
            if notify is not None and every_s is not None:
                tg.create_task(_watchdog(notify, every_s, stop), name="systemd-watchdog")
            try:
                started = await _start(
                    notifier, stack, stop, start_backoff or START_BACKOFF, notify
                )
            except ConfigError as exc:  # (raised after the task group, not grouped by it)
                refused, started = exc, False
            if started:
                if notify is not None:
                    notify("READY=1")
                await notifier.run(stop)
            stop.set()
        if notify is not None:
            notify("STOPPING=1")
    if refused is not None:
        raise refused
    return 0


async def _start(
    notifier: Notifier,
    stack: contextlib.AsyncExitStack,
    stop: asyncio.Event,
    backoff: Backoff,
    notify: Callable[[str], None] | None,
) -> bool:
    """Enter `notifier` into `stack` once Redis answers: True, or False when `stop` came
    first. Each attempt that finds Redis unreachable is logged (`redis_unavailable`, with the
    attempt and the next delay) and told to /healthz and systemd; the wait is cut short by
    `stop`, an attempt is not (it ends within the client's connect timeout)."""
    log = logs.get("notifier")
    attempt = 0
    while not stop.is_set():
        try:
            await stack.enter_async_context(notifier)
            return True
        except SinkUnavailable as exc:
            delay = backoff.delay(attempt)
            attempt += 1
            notifier.health.redis_failed(str(exc))
            log.warning(
                "redis_unavailable", error=str(exc), attempt=attempt, retry_in_s=round(delay, 3)
            )
            if notify is not None:
                notify(f"STATUS=waiting for Redis (attempt {attempt}): {exc}")
                notify(f"EXTEND_TIMEOUT_USEC={int((delay + ATTEMPT_S) * 1_000_000)}")
            await pause(stop, delay)
    return False


async def _watchdog(notify: Callable[[str], None], every_s: float, stop: asyncio.Event) -> None:
    """WATCHDOG=1 while the event loop runs."""
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
