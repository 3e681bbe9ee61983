"""The composition root: builds everything from Config and owns the TaskGroup.

Start-up: the `[http]` address checked (a port in use fails at once, not after the history is
loaded), rules, store (bar history and engine state), engine warmed on the history, the bars of
the sessions under way saved last (see `monitor.intraday`), feeds, outbox + Redis publisher, HTTP
(/metrics, /healthz), scheduler. Shutdown, on the stop event (SIGTERM/SIGINT): stop feeds, drain
the queue into the engine, flush the outbox within the grace period, snapshot bars and state,
save the sessions under way (minute bars, open bars, duplicate keys), close. A second signal
exits at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import gc
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from monitor import jobs, logs, web
from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import RedisPublisher
from monitor.calendar import nyse_sessions
from monitor.clock import Clock, SimClock, SystemClock
from monitor.config import Config, resolve
from monitor.core.bars import EXTENDED_HOURS
from monitor.core.counters import Counters
from monitor.core.engine import Engine, EngineState, Step
from monitor.core.model import Alert, FeedBatch
from monitor.core.payload import feed_health_alert
from monitor.core.sessions import NEW_YORK
from monitor.credentials import login_name, secret
from monitor.daemon_health import health_report
from monitor.errors import DataError, MonitorError
from monitor.feed_wiring import build_feeds, supervised
from monitor.feeds.mqtt import MqttFeed
from monitor.feeds.wire import Wire
from monitor.gap_report import GapReport
from monitor.http import HttpServer, PortUnavailable, check_listen, json_route
from monitor.intraday import Intraday
from monitor.journal import JOURNAL, Journal
from monitor.owed_backfills import OwedBackfills
from monitor.pipeline import BatchDecoder, Pipeline
from monitor.progress_gauges import ProgressGauges
from monitor.recent_alerts import RecentAlerts
from monitor.replay import build_engine
from monitor.replay_data import split_replay_data
from monitor.rules_config import load_rules_file, load_short_interest
from monitor.rules_reload import RulesReload, warn_of
from monitor.stale_feeds import StaleFeeds
from monitor.store import Store
from monitor.systemd import watchdog_interval_s
from monitor.terminal import printable
from monitor.web.freshness import Freshness
from monitor.web.state import StateView

Notify = Callable[[str], None]

# Providers whose feeds send trade cancels and corrections (FeedBatch.cancels).
CANCELLING_PROVIDERS = frozenset({"alpaca"})


# Counters /metrics shows from the start (the README's list), not from their first event.
ZEROED = (
    "ticks_in",
    "alerts_published",
    "redis_errors",
    "daily_sessions_missing",
    "intraday_saves",
    "intraday_save_failures",
    "journal_write_failures",
    "journal_rows_dropped",
    "price_reference_resets",
    "alerts_deduplicated",
    "redis_check_failures",
)


class Daemon:
    """Everything the running service holds, built from Config (see `run`)."""

    def __init__(
        self, config: Config, *, clock: Clock | None = None, stop: asyncio.Event | None = None
    ) -> None:
        self.config = config
        self.counters = Counters()
        self.log = logs.get("service")
        self.store = Store(resolve(config, config.store.path))
        self.rules = load_rules_file(config)
        stored = self.store.load_bars()
        replay = split_replay_data(config, stored)
        for feed, lines in replay.rejected.items():  # (as `replay` says them on stderr)
            self.log.warning("replay_rows_rejected", feed=feed, rows=lines)
        _streamed_already(self.log, replay.bars, stored)
        history, replay_start = replay.history, replay.start_at
        self.replay_bars, self.replay_minutes = replay.bars, replay.minutes
        first = history.get_column("session").min() if history.height else None
        self.sessions = nyse_sessions(first or dt.date(2000, 1, 1))  # type: ignore[arg-type]
        if clock is None:
            clock = SimClock(replay_start) if replay_start is not None else SystemClock()
        self.clock = clock
        self.figured: set[str] | None = None  # (the symbols with a short-interest figure)
        self.engine = self._build_engine()
        self.engine.track_progress = True
        history_symbols = set(history.get_column("symbol").unique().to_list())
        warn_of(config, self.rules, self.log, self.figured, history_symbols)
        refused = self.engine.ingest_daily(history)
        if refused:  # (stored by an earlier version, whose checks were fewer: said, not dropped)
            reasons = collections.Counter(r.reason for r in refused)
            self.log.warning(
                "history_bars_rejected",
                rows=len(refused),
                reasons=dict(reasons),
                first=[f"{r.raw} ({r.reason})" for r in refused[:5]],
            )
        warmed = self.engine.warm(clock.now())
        state = self.store.load_state()
        if state is not None:
            self.engine.restore(state)
        self.log.info(
            "engine_warmed",
            bars=history.height,
            symbols=history.get_column("symbol").n_unique() if history.height else 0,
            historical_firings=warmed,
            restored_alerts=len(state.fired) if state else 0,
        )
        journal = Journal(self.store.path / JOURNAL, sync=config.store.journal_fsync)
        self.intraday = Intraday(self.store, self.engine, self.log, self.counters, journal)
        self.intraday.restore(clock.now())
        self.freshness = Freshness(self.sessions)  # (how current the bars are: /api/state)
        self.freshness.note(self.engine.daily, self.engine.minutes)
        self.progress_gauges = ProgressGauges(self.counters)  # (/metrics: rule_progress)
        self.progress_gauges.refresh(self.engine.progress)
        self.queue: asyncio.Queue[FeedBatch | Wire] = asyncio.Queue(config.engine.queue_size)
        self.stop = stop if stop is not None else asyncio.Event()  # (set: the daemon stops)
        self.feeds_done = asyncio.Event()
        self.feeds: list[Any] = []
        self.decoders: dict[str, BatchDecoder] = {}
        self.snapshot_due = False
        self.intraday_due = False
        self.short_interest_due = False
        self.started = time.monotonic()
        self.rest_clients: list[Any] = []
        # feed name -> the minutes it awaits the provider's bar of (back part-way through
        # them): the close clock holds each open until it is in (see `monitor.close_clock`)
        self.awaited: dict[str, set[dt.datetime]] = {}
        self.recent_alerts = RecentAlerts(self.store, self.log)  # (kept across a restart)
        self.feed_alerts: list[Alert] = []
        self.status: list[tuple[str, bool, dt.datetime]] = []
        self.gap_report = GapReport(self.counters, self.log)  # (sessions missing: said once)
        self.failed_feeds: dict[str, str] = {}  # feed name -> why it gave up (see `supervised`)
        # feed name -> when it last crashed (monotonic) and why: /healthz degraded meanwhile
        self.crashed_feeds: dict[str, tuple[float, str]] = {}
        self.rules_reload = RulesReload(self)
        self.state_view = StateView()
        self.stale_feeds = StaleFeeds(self.store, self.log)  # (stale at the last stop)
        # (gaps not fetched yet)
        self.owed_backfills = OwedBackfills(self.store, self.log, self.counters)
        configured = [fc.label(i) for i, fc in enumerate(config.feeds)]
        self.feed_alerts += self.stale_feeds.gone(configured, self.clock.now)

    # ------------------------------------------------------------------ building
    def _cancels_sent(self) -> bool:
        """Whether a feed sends trade cancels and corrections (Alpaca's): only then are the
        ticks of `[engine] cancel_window_s` kept (memory, and the saves' size), not for feeds
        that never take a trade back."""
        return any(fc.provider in CANCELLING_PROVIDERS for fc in self.config.feeds)

    def _build_engine(self) -> Engine:
        options = self.config.engine
        return build_engine(
            self.rules,
            self.sessions,
            short_interest=self.read_short_interest(),
            universe=frozenset(options.universe) or None,
            max_jump=options.max_jump,
            max_jump_confirm=options.max_jump_confirm,
            minute_history=options.minute_history or (1920 if options.extended_hours else 780),
            bar_options={
                "extended_hours": options.extended_hours,
                "late_ticks": options.late_ticks,
                # (replay feeds alone deliver each tick before the clock passes it: nothing
                # comes late, and their clock stops at a minute's end once they are done)
                "session_close_delay_s": None
                if replay_only(self.config)
                else options.session_close_delay_s,
                "dedup_max_keys": options.dedup_max_keys,
                "dedup_window_s": options.dedup_window_s,
                "cancel_window_s": options.cancel_window_s if self._cancels_sent() else 0.0,
            },
            # (a backlog of minutes, a journal taken up: evaluated as if stepped every minute)
            minute_by_minute=True,
            # (a feed down through the close: its sessions wait for the backfill's minutes)
            hold_cut_short=options.hold_cut_short,
        )

    def feeds_subscribed(self) -> bool:
        """Whether every feed that subscribes (MQTT, WebSocket) has subscribed at least once
        (a broker's backlog comes then: see `monitor.close_clock`)."""
        return all(
            self.counters.get("feed_subscribes", feed=fc.label(i)) > 0
            for i, fc in enumerate(self.config.feeds)
            if fc.kind != "replay"
        )

    def feeds_down(self) -> frozenset[str]:
        """The feeds that connected and lost their connection, not back yet (what they miss
        a broker may queue: see `monitor.close_clock`); none once the daemon is stopping."""
        if self.stop.is_set():
            return frozenset()
        counters = self.counters
        return frozenset(
            name
            for name in (
                fc.label(i) for i, fc in enumerate(self.config.feeds) if fc.kind != "replay"
            )
            if counters.get("feed_connects", feed=name) > 0
            and counters.get("feed_connected", feed=name) == 0
        )

    def await_minute(self, feed: str, minute: dt.datetime, awaited: bool) -> None:
        """`feed` awaits (`awaited`), or no longer, the provider's bar of `minute`, which its
        REST backfill fetches once it is over: a WebSocket feed back part-way through it."""
        minutes = self.awaited.setdefault(feed, set())
        if awaited:
            minutes.add(minute)
        else:
            minutes.discard(minute)
            if not minutes:
                del self.awaited[feed]

    def feeds_awaiting(self) -> dict[str, dt.datetime]:
        """By feed, the earliest minute it awaits the provider's bar of (see `await_minute`);
        none once the daemon is stopping."""
        if self.stop.is_set():
            return {}
        return {feed: min(minutes) for feed, minutes in self.awaited.items()}

    def keeps_from(self, now: dt.datetime) -> dt.datetime | None:
        """The open of the oldest session whose minute bars the engine takes at `now` (None:
        every one): how far back a feed's backfill is worth going."""
        day = self.engine.book.oldest_kept(now)
        if day is None:
            return None
        if self.config.engine.extended_hours:  # (from 04:00 New York: its pre-market too)
            local = self.sessions.open_of(day).astimezone(ZoneInfo(NEW_YORK))
            return local.replace(hour=EXTENDED_HOURS[0], minute=0)
        return self.sessions.open_of(day)

    def traded(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether [start, end) holds minutes of a session the engine takes (its regular
        hours; from 04:00 to 20:00 New York with `extended_hours`): a backfill's part cut
        off at the reach is given up, counted, only if it did. Past the calendar: True."""
        first, last = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
        if not (self.sessions.covers(first) and self.sessions.covers(last)):
            return True
        day = self.sessions.shift(first - dt.timedelta(days=1), 0)
        while day is not None and day <= last:
            opens, closes = self.sessions.open_of(day), self.sessions.close_of(day)
            if self.config.engine.extended_hours:
                local = opens.astimezone(ZoneInfo(NEW_YORK))
                opens = local.replace(hour=EXTENDED_HOURS[0], minute=0)
                closes = local.replace(hour=EXTENDED_HOURS[1], minute=0)
            if opens < end and start < closes:
                return True
            day = self.sessions.shift(day, 1)
        return False

    def build_feeds(self) -> None:
        """One adapter per [[feeds]] entry (see `monitor.feed_wiring`); the counters the README
        lists at 0 from the start."""
        self.feeds += build_feeds(self)
        self.owed_backfills.forget_untaken()
        for name in ZEROED:
            self.counters.zero(name)
        for feed in self.feeds:
            for name in (
                "feed_reconnects",
                "feed_read_pauses",
                "feed_queue_full_waits",
                "feed_gap_seconds",
            ):
                self.counters.zero(name, feed=feed.name)
            if isinstance(feed, MqttFeed):  # (gauges: nothing paused, the broker says no drops)
                self.counters.set("feed_paused", 0, feed=feed.name)
                self.counters.set("broker_messages_dropped", 0, feed=feed.name)

    def on_feed_event(self, event: Any) -> None:
        """Feed health as alerts: `feed_stale` when a feed goes quiet in regular hours,
        `feed_recovered` when data flows again."""
        if event.kind == "trading_status" and event.symbol and event.halted is not None:
            self.status.append((event.symbol, event.halted, event.at))
            self.log.info("trading_status", symbol=event.symbol, halted=event.halted)
            return
        if event.kind not in ("feed_stale", "feed_recovered"):
            return
        self.stale_feeds.note(event.kind, event.feed, event.at)
        self.feed_alerts.append(feed_health_alert(event.kind, event.feed, event.at, event.gap_s))
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(FeedBatch.empty("feed-event"))

    # ------------------------------------------------------------------- sinks
    def console(self, alerts: Sequence[Alert]) -> None:
        """Print alerts for people as they fire."""
        for a in alerts:
            print(printable(f"[{a.session}] {a.severity.upper()} {a.rule} {a.symbol}: {a.text}"))
            if a.history:
                print(f"    History: {printable(a.history.summary)}")
        sys.stdout.flush()

    def on_step(self, step: Step) -> Awaitable[None] | None:
        """After each engine step (its alerts already in the outbox): remember them for the live
        view, refresh the progress gauges, save bars when sessions closed, snapshots and the
        sessions under way when due. A snapshot (the whole bar history rewritten) is returned
        to be awaited: it is written in a thread, the event loop going on meanwhile."""
        self.recent_alerts.extend(step.alerts)
        self.freshness.note(step.daily_bars, step.minute_bars)
        self.progress_gauges.refresh(self.engine.progress)
        if step.daily_bars.height:
            self.gap_report.note(self.engine.daily, step.daily_bars, self.sessions)
        if self.short_interest_due:
            self.reload_short_interest()
        if step.daily_bars.height or self.snapshot_due:
            # (the sessions under way are saved at a later step, once this is on the disk: a
            # save of them marks the session done and drops the journal that holds its bars)
            return asyncio.to_thread(self._save, self.engine.daily, self._taken_state())
        if self.intraday_due:
            self.intraday_due = False
            self.intraday.save_later()
        return None

    def read_short_interest(self) -> pl.DataFrame | None:
        """The `[rules] short_interest` file's figures (None when unset), its rows left out
        logged; DataError when it is bad."""
        read = load_short_interest(self.config)
        if read is None:
            return None
        if read.rejected:
            from monitor.short_interest_io import rejected_line

            self.log.warning(
                "short_interest_rows_rejected",
                rows=len(read.rejected),
                detail=rejected_line(read.rejected),
            )
        if (suspect := read.suspect()) is not None:
            self.log.warning("short_interest_suspect", detail=suspect)
        self.figured = read.figured()
        return read.figures

    def history_symbols(self) -> set[str]:
        """The symbols of the engine's session bars (those its universe rules watch so far)."""
        return set(self.engine.daily.get_column("symbol").unique().to_list())

    def reload_short_interest(self) -> None:
        """Re-read the short-interest file (new figures are published twice a month)."""
        self.short_interest_due = False
        try:
            raw = self.read_short_interest()
        except DataError as exc:  # (a file being rewritten, say: the figures in use stay)
            self.log.warning("short_interest_reload_failed", error=str(exc))
            return
        if raw is None:
            return
        fresh = build_engine(self.rules, self.sessions, short_interest=raw)
        self.engine.ctx = fresh.ctx
        self.log.info("short_interest_reloaded", rows=raw.height)

    def take_status(self) -> list[tuple[str, bool, dt.datetime]]:
        """Halts and resumptions reported since the last step (applied in the engine's step)."""
        changes, self.status = self.status, []
        return changes

    def take_feed_alerts(self) -> list[Alert]:
        """Feed-health alerts raised since the last step; they go out with the engine's."""
        alerts, self.feed_alerts = self.feed_alerts, []
        return alerts

    def snapshot(self) -> None:
        """Save bar history and engine state to the store."""
        self._save(self.engine.daily, self._taken_state())

    def _taken_state(self) -> EngineState:
        """The engine's state for a snapshot (taken on the loop, between two steps)."""
        self.snapshot_due = False
        return self.engine.state()

    def _save(self, daily: pl.DataFrame, state: EngineState) -> None:
        """Write a snapshot's bar history and engine state (StoreError when it cannot)."""
        self.store.save_bars(daily)
        self.store.save_state(state)
        self.counters.inc("snapshots")

    def state(self, health: dict[str, Any]) -> dict[str, Any]:
        """/api/state: the rules with their counts, the progress rows nearest to firing, the
        last alerts, and the clock (see `StateView`); `health`, the status and reasons of
        /healthz (`health`); how current the bars are (see `Freshness`)."""
        now = self.clock.now()
        state = self.state_view.document(
            now, self.engine.rules, self.engine.progress, self.recent_alerts.alerts
        )
        state["health"] = {"status": health["status"], "reasons": health["reasons"]}
        return state | self.freshness.document(now)

    # ------------------------------------------------------------------ health
    def health(self, publisher: RedisPublisher, pipeline: Pipeline) -> dict[str, Any]:
        """healthy, degraded (with reasons) or down (see `monitor.daemon_health`)."""
        return health_report(self, publisher, pipeline)


async def run(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    notify: Notify | None = None,
    install_signals: bool = True,
    on_ready: Callable[[Daemon], None] | None = None,
) -> int:
    """Run the daemon until `stop` is set (or SIGTERM/SIGINT); returns the exit code.
    `on_ready` receives the daemon once its tasks run (tests use it to wait for feeds)."""
    stop = stop if stop is not None else asyncio.Event()
    if install_signals:  # first: a SIGTERM during the (long) start-up still stops us cleanly
        _install_signals(stop, logs.get("service"))
    check_listen(config.http.host, config.http.port)  # (before the history: it takes a while)
    # Loads history and warms the engine: nothing else runs yet.
    daemon = Daemon(config, clock=clock, stop=stop)
    if install_signals:
        # (the loop hands a signal to the handler in place when it next runs: a SIGHUP that
        # came during the start-up, which the handler above kept from killing us, reaches this)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, daemon.rules_reload.request)
    gc.freeze()  # the history just loaded is long-lived: keep the collector off it
    daemon.build_feeds()
    log = daemon.log
    store = daemon.store
    redis_password = secret(
        "redis.password",
        env_name=config.redis.password_env,
        file_name=config.redis.password_file,
    )
    r = config.redis
    redis_username = login_name("redis.username", r.username, r.username_env, r.username_file)
    with Outbox(store.outbox_path) as outbox:
        publisher = RedisPublisher(
            config.redis.url,
            config.redis.channel,
            config.redis.stream,
            outbox,
            maxlen=config.redis.maxlen,
            dedupe_ttl_s=config.redis.dedupe_ttl_s,
            check_interval_s=config.redis.check_interval_s,
            counters=daemon.counters,
            username=redis_username,
            password=redis_password,
            ssl_ca_certs=str(resolve(config, config.redis.ca_file))
            if config.redis.ca_file
            else None,
        )
        sinks: list[Callable[[Sequence[Alert]], object]] = [publisher.submit]
        if config.console.enabled:
            sinks.insert(0, daemon.console)
        pipeline = Pipeline(
            daemon.engine,
            daemon.queue,
            clock=daemon.clock,
            counters=daemon.counters,
            sinks=sinks,  # type: ignore[arg-type]
            decoders=daemon.decoders,
            batch_max_rows=config.engine.batch_max_rows,
            batch_max_age_ms=config.engine.batch_max_age_ms,
            catch_up_hold_s=config.engine.catch_up_hold_s,
            feeds_ready=daemon.feeds_subscribed,
            feeds_down=daemon.feeds_down,
            feeds_awaiting=daemon.feeds_awaiting,
            start_hold=not replay_only(config),
            on_step=daemon.on_step,
            on_batch=daemon.intraday.append,
            side_alerts=daemon.take_feed_alerts,
            status_changes=daemon.take_status,
            engine_change=daemon.rules_reload.take,
        )
        routes = {
            "/metrics": lambda: (
                200,
                "text/plain; version=0.0.4",
                daemon.counters.render().encode(),
            ),
            "/api/state": json_route(lambda: daemon.state(daemon.health(publisher, pipeline))),
            "/": web.page_route,
            "/healthz": json_route(
                lambda: daemon.health(publisher, pipeline),
                lambda h: 503 if h["status"] == "down" else 200,  # type: ignore[index]
            ),
        }
        closes = web.closes_route(
            lambda symbols, sessions: web.closes(
                daemon.engine.daily,
                daemon.recent_alerts.alerts,
                daemon.engine.progress,
                daemon.engine.rules,
                sessions=sessions,
                symbols=symbols,
            )
        )
        query_routes = {"/api/closes": closes}
        threaded = {"/api/closes"}  # (up to MAX_SYMBOLS x MAX_SESSIONS closes: not on the loop)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(publisher)
            try:
                http = await stack.enter_async_context(
                    HttpServer(
                        config.http.host,
                        config.http.port,
                        routes,
                        query_routes,
                        threaded,
                        allowed_hosts=config.http.allowed_hosts,
                    )
                )
            except MonitorError as exc:  # (free at `check_listen`: taken since, by a race)
                raise PortUnavailable(str(exc)) from None
            for rest in daemon.rest_clients:
                await stack.enter_async_context(rest)
            daemon.counters.set("http_port", http.port)
            scheduler = jobs.scheduler(daemon)
            stack.callback(scheduler.shutdown, wait=False)
            publisher_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(publisher.run(publisher_stop), name="redis-publisher")
                # PING at start and every few seconds: /healthz says "redis unavailable" within
                # seconds of an outage (or of a wrong password), not at the first alert.
                tg.create_task(publisher.watch(publisher_stop), name="redis-check")
                watchdog_s = watchdog_interval_s()
                if notify is not None and watchdog_s is not None:
                    tg.create_task(
                        jobs.watchdog(daemon, pipeline, notify, watchdog_s, publisher_stop),
                        name="systemd-watchdog",
                    )
                feed_tasks = [
                    tg.create_task(supervised(feed, daemon), name=f"feed-{feed.name}")
                    for feed in daemon.feeds
                ]
                tg.create_task(_watch_feeds(feed_tasks, daemon.feeds_done), name="feeds-done")
                engine_task = tg.create_task(
                    pipeline.run(daemon.stop, daemon.feeds_done), name="engine"
                )
                log.info("service_ready", feeds=[f.name for f in daemon.feeds], port=http.port)
                if notify:
                    notify("READY=1")
                if on_ready:
                    on_ready(daemon)
                await daemon.stop.wait()
                log.info("service_stopping")
                if notify:
                    notify("STOPPING=1")
                await engine_task
                flushed = await publisher.flush(config.shutdown.grace_s)
                if not flushed:
                    log.warning("outbox_not_flushed", depth=outbox.depth())
                publisher_stop.set()
    daemon.intraday.save_at_stop(daemon.snapshot)  # (exit 74 naming the journal if not written)
    log.info("service_stopped")
    return 0


def replay_only(config: Config) -> bool:
    """Whether every feed is a replay feed: no broker keeps a backlog for the daemon (see
    `Pipeline._start_close_clock`)."""
    return bool(config.feeds) and all(fc.kind == "replay" for fc in config.feeds)


async def _watch_feeds(tasks: list[asyncio.Task[None]], done: asyncio.Event) -> None:
    if tasks:
        await asyncio.gather(*tasks)
    done.set()


def _install_signals(stop: asyncio.Event, log: Any) -> None:
    """SIGTERM and SIGINT set `stop` (a second one exits at once); SIGHUP is held until `run`
    hands it to the rules' reload."""
    loop = asyncio.get_running_loop()
    seen = {"n": 0}

    def on_signal(signum: int) -> None:
        seen["n"] += 1
        if seen["n"] > 1:
            log.warning("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # (not its default: terminate)


def _streamed_already(log: Any, streamed: dict[str, pl.DataFrame], stored: pl.DataFrame) -> None:
    """Warn of a replay feed whose sessions the store holds already (`replay_streamed_already`):
    a daemon started again on the store of an earlier run of the same feed (`run --config
    config/demo.toml` twice) takes them as corrections of periods evaluated then, which fire
    nothing, and it printed nothing and exited 0 as if the rules had nothing to say."""
    last = stored.get_column("session").max() if stored.height else None
    if not isinstance(last, dt.date):
        return
    for feed, bars in streamed.items():
        again = bars.filter(pl.col("session") <= last).get_column("session")
        if again.len():
            log.warning(
                "replay_streamed_already",
                feed=feed,
                sessions=again.n_unique(),
                of=bars.get_column("session").n_unique(),
                stored_through=last.isoformat(),
                note="the store holds these sessions from an earlier run: they come as "
                "corrections, which fire nothing; give the daemon a fresh [store] path (as "
                "./scripts/demo does) to see their alerts again",
            )
