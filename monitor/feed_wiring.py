"""The daemon's inbound adapters, built from its config's [[feeds]]: MQTT, WebSocket and replay
feeds with their secrets, decoders, backoff and shutdown grace. Apart from `monitor.service`
(the composition root that calls it) because it is the part of the wiring that knows each
feed's options; the daemon's life cycle reads better without it.

A replay feed's tick files: the daemon's replay data (`monitor.replay_data`) holds their minute
bars (`monitor.minutefiles.read_minutes` gives the bars of a tick file's ticks), cut to the
feed's `start` and `end`; here the ticks of those minutes take their place (`replay_ticks`), so
the feed streams the ticks and the engine builds the bars from them.
"""

from __future__ import annotations

import datetime as dt
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import polars as pl

from monitor.clock import SimClock
from monitor.config import FeedConfig, resolve
from monitor.core.backoff import Backoff
from monitor.credentials import login_name, secret
from monitor.errors import ConfigError
from monitor.feeds.events import QuietSettings
from monitor.feeds.generic import FieldMap, decode_generic_many
from monitor.feeds.mqtt import MqttFeed
from monitor.feeds.replay import ReplayFeed
from monitor.waiting import wait_any

if TYPE_CHECKING:
    from monitor.service import Daemon


def build_feeds(daemon: Daemon) -> list[Any]:
    """One adapter per [[feeds]] entry of the daemon's config, in order. MQTT feeds register
    their payload decoders in `daemon.decoders`, WebSocket feeds with a REST backfill their client
    in `daemon.rest_clients` (closed by `run`)."""
    feeds: list[Any] = []
    for i, fc in enumerate(daemon.config.feeds):
        name = fc.label(i)
        if fc.kind == "mqtt":
            feeds.append(_mqtt(daemon, fc, name, i))
        elif fc.kind == "replay":
            assert isinstance(daemon.clock, SimClock), "a replay feed needs the simulated clock"
            minutes, ticks = replay_ticks(daemon, fc, daemon.replay_minutes.get(name))
            feeds.append(
                ReplayFeed(
                    name,
                    daemon.replay_bars[name],
                    sessions=daemon.sessions,
                    clock=daemon.clock,
                    queue=daemon.queue,  # type: ignore[arg-type]
                    counters=daemon.counters,
                    speed=fc.speed,
                    on_done=daemon.stop.set if fc.exit_when_done else None,
                    minutes=minutes,
                    ticks=ticks,
                )
            )
        else:
            feeds.append(_websocket(daemon, fc, name, i))
    return feeds


def replay_ticks(
    daemon: Daemon, fc: FeedConfig, minutes: pl.DataFrame | None
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """A replay feed's minute bars (`minutes`, as the daemon's replay data has them) and ticks
    to stream: the ticks of its tick files in the minutes of `minutes` (those from its `start`
    to `end`), and the bars of `minutes` less those its tick files gave (the bars of minute
    files; None: no ticks)."""
    from monitor.datafiles import DataSpec, parse_data_arg
    from monitor.tickfiles import is_tick_file, read_ticks, tick_minutes

    specs = [parse_data_arg(d) for d in fc.data]
    paths = [DataSpec(str(resolve(daemon.config, s.path)), s.symbol) for s in specs]
    tick_specs = [s for s in paths if is_tick_file(s.path)]
    if not tick_specs or minutes is None:
        return minutes, None
    files = [read_ticks(s) for s in tick_specs]
    minute = pl.col("ts").dt.truncate("1m").alias("start")
    ticks = pl.concat(files).with_columns(minute)
    keys = ["symbol", "start"]
    kept = ticks.join(
        minutes.select(keys), on=keys, how="semi", nulls_equal=True, maintain_order="left"
    )
    # The bars the tick files gave (each file's, as the replay data read them), and those
    # only: a minute file's bar of a minute the ticks cover too streams beside them, as
    # feed-replay publishes both (the engine takes the provider's bar over the ticks').
    made = pl.concat([tick_minutes(f) for f in files]).unique()
    rest = minutes.join(made, on=list(made.columns), how="anti", maintain_order="left")
    return rest, kept.drop("start")


def _mqtt(daemon: Daemon, fc: FeedConfig, name: str, i: int) -> MqttFeed:
    mapping = FieldMap(**fc.field_map) if fc.field_map else None  # type: ignore[arg-type]
    daemon.decoders[name] = lambda payloads: decode_generic_many(
        payloads, feed=name, mapping=mapping
    )
    password = secret(f"feeds[{i}].password", env_name=fc.password_env, file_name=fc.password_file)
    where = f"feeds[{i}].username"
    username = login_name(where, fc.username, fc.username_env, fc.username_file)
    return MqttFeed(
        name,
        fc.url,
        fc.topics,
        queue=daemon.queue,
        counters=daemon.counters,
        backoff=Backoff(base_s=0.2, cap_s=15.0),
        qos=fc.qos,
        client_id=fc.client_id or None,
        session_expiry_s=fc.session_expiry_s if fc.client_id else None,
        username=str(username) if username else None,
        password=password,
        ca_file=str(resolve(daemon.config, fc.ca_file)) if fc.ca_file else None,
        watch_broker_drops=fc.watch_broker_drops,
        max_backlog_bytes=int(fc.max_backlog_mb * 1024 * 1024),
        grace_s=daemon.config.shutdown.grace_s,  # to process and acknowledge what it read
        raw=True,
        protocol=fc.mqtt_version,
        quiet=QuietSettings(
            fc.stale_after_s,
            daemon.sessions.is_open,
            daemon.clock.now,
            daemon.on_feed_event,
            stale_at_start=name in daemon.stale_feeds,
        ),
    )


def _websocket(daemon: Daemon, fc: FeedConfig, name: str, i: int) -> Any:
    from monitor.feeds.rest import RestBackfill
    from monitor.feeds.websocket import WebSocketFeed

    where = f"feeds[{i}]"
    key = secret(f"{where}.key", env_name=fc.key_env, file_name=fc.key_file)
    provider_secret = secret(f"{where}.secret", env_name=fc.secret_env, file_name=fc.secret_file)
    rest = None
    if fc.rest_url and fc.provider in ("alpaca", "polygon"):
        assert key is not None, "config.load refuses a rest_url without key_env or key_file"
        rest = RestBackfill(
            fc.provider,
            fc.rest_url,
            key=key,
            secret=provider_secret,
            alpaca_feed=alpaca_feed(fc.url) if fc.provider == "alpaca" else None,
        )
        daemon.rest_clients.append(rest)
    owing = daemon.owed_backfills.take(name, fc.symbols) if rest else None
    return WebSocketFeed(
        name,
        fc.url,
        fc.provider,
        fc.symbols,
        key=key,
        secret=provider_secret,
        queue=daemon.queue,
        counters=daemon.counters,
        backoff=Backoff(base_s=0.5, cap_s=30.0),
        stale_after_s=fc.stale_after_s,
        is_regular_hours=daemon.sessions.is_open,
        clock=daemon.clock.now,
        rest=rest,
        on_event=daemon.on_feed_event,
        stale_at_start=name in daemon.stale_feeds,
        # (what came while the daemon was down, and a gap whose backfill was not on disk when
        # it stopped: as far back as the engine takes minutes)
        # (and the windows of backfills that failed, for their symbols only)
        gap_since=_earliest(daemon.intraday.resumed_from, owing.since) if owing else None,
        owed=owing.windows if owing else (),
        keeps_from=daemon.keeps_from,
        traded=daemon.traded,
        owe=partial(daemon.owed_backfills.owe, name),
        settle=partial(daemon.owed_backfills.settle, name),
        backfill_tail_delay_s=fc.backfill_tail_delay_s,
        await_minute=partial(daemon.await_minute, name),
    )


def _earliest(*times: dt.datetime | None) -> dt.datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def alpaca_feed(stream_url: str) -> str | None:
    """The data feed an Alpaca stream URL names (`.../v2/iex`, `.../v2/sip`): the REST backfill
    asks for the same, since a free plan's key is refused the default (SIP) for recent bars."""
    last = stream_url.rstrip("/").rsplit("/", 1)[-1].lower()
    return last if last in ("iex", "sip", "delayed_sip", "otc") else None


async def supervised(feed: Any, daemon: Daemon, backoff: Backoff | None = None) -> None:
    """Run `feed` until the daemon stops, so that one feed's failure stops no other feed and
    no alert: a feed that gives up for good (its credentials refused, its URL wrong: a
    ConfigError) is logged as `feed_given_up`, shown on /healthz and `feed_failed{feed}`, and
    left stopped; one that fails in any other way (a bug) is logged with its traceback as
    `feed_crashed`, counted, shown on /healthz for `daemon_health.CRASH_SHOWN_S`, and started
    again after a backoff."""
    backoff = backoff or Backoff(base_s=1.0, cap_s=60.0)
    attempt = 0
    while not daemon.stop.is_set():
        try:
            await feed.run(daemon.stop)
            return
        except ConfigError as exc:
            daemon.log.error(
                "feed_given_up",
                feed=feed.name,
                error=str(exc),
                hint="the other feeds and the alerts go on; fix this feed's config or "
                "credentials and restart the daemon",
            )
            daemon.counters.set("feed_failed", 1, feed=feed.name)
            daemon.failed_feeds[feed.name] = str(exc)
            return
        except Exception as exc:
            daemon.log.exception("feed_crashed", feed=feed.name, attempt=attempt + 1)
            daemon.counters.inc("feed_crashes", feed=feed.name)
            daemon.crashed_feeds[feed.name] = (time.monotonic(), f"{type(exc).__name__}: {exc}")
            await wait_any((daemon.stop,), backoff.delay(attempt))
            attempt += 1
