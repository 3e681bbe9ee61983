"""The daemon's timed work: APScheduler jobs (they only enqueue work for the engine loop) and
systemd's watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import polars as pl

from monitor.core.model import FeedBatch

if TYPE_CHECKING:
    from monitor.pipeline import Pipeline
    from monitor.service import Daemon, Notify


async def watchdog(
    daemon: Daemon, pipeline: Pipeline, notify: Notify, every_s: float, done: asyncio.Event
) -> None:
    """WATCHDOG=1 while the engine loop keeps stepping (a hung loop gets restarted by systemd),
    and a STATUS= line with live figures."""
    while not done.is_set():
        if time.monotonic() - pipeline.last_step_at < max(every_s * 2, 5.0):
            notify("WATCHDOG=1")
        ticks = int(daemon.counters.total("ticks_in"))
        bars = int(daemon.counters.total("bars_in"))
        alerts = int(daemon.counters.total("alerts_fired"))
        depth = int(daemon.counters.get("outbox_depth"))
        notify(f"STATUS=ticks {ticks}, bars {bars}, alerts {alerts}, outbox {depth}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every_s)


def scheduler(daemon: Daemon) -> Any:
    """APScheduler jobs: they only enqueue work for the engine loop."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(timezone="UTC")

    def wake() -> None:
        with contextlib.suppress(asyncio.QueueFull):
            daemon.queue.put_nowait(FeedBatch.empty("scheduler"))

    def snapshot_due() -> None:
        daemon.snapshot_due = True
        wake()

    def intraday_due() -> None:
        daemon.intraday_due = True
        wake()

    def heartbeat() -> None:
        daemon.log.info(
            "heartbeat",
            queue_depth=daemon.queue.qsize(),
            ticks_in=int(daemon.counters.total("ticks_in")),
            bars_in=int(daemon.counters.total("bars_in")),
            alerts_fired=int(daemon.counters.total("alerts_fired")),
            outbox_depth=int(daemon.counters.get("outbox_depth")),
        )

    # Session closes (early closes included) wake the loop so daily bars close on time. The
    # wall clock, not the daemon's: APScheduler runs on it (a simulated clock moves with its
    # feed). Past the last of these, the loop's idle step (every second) still closes the bars.
    sessions = daemon.sessions.frame.filter(pl.col("close_ts") > dt.datetime.now(dt.UTC)).head(400)
    for close in sessions.get_column("close_ts").to_list():
        scheduler.add_job(wake, "date", run_date=close, misfire_grace_time=300)
    scheduler.add_job(snapshot_due, "interval", seconds=daemon.config.store.snapshot_interval_s)
    scheduler.add_job(intraday_due, "interval", seconds=daemon.config.store.intraday_interval_s)
    scheduler.add_job(heartbeat, "interval", seconds=60)

    def short_interest_due() -> None:
        daemon.short_interest_due = True
        wake()

    if daemon.config.rules.short_interest:
        scheduler.add_job(short_interest_due, "cron", hour=7, minute=0, timezone="America/New_York")
    scheduler.start()
    return scheduler
