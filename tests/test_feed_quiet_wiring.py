"""The daemon's MQTT feeds watch for quiet as its WebSocket feeds do, from `stale_after_s`."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from monitor import config as cfg
from monitor.feeds.events import FeedEvent
from monitor.feeds.mqtt import MqttFeed
from monitor.service import Daemon
from tests.conftest import RULES


def test_an_mqtt_feed_is_watched_for_quiet_in_the_daemons_hours(tmp_path: Path) -> None:
    """`stale_after_s` on an `mqtt` feed was accepted and did nothing: the feed now goes stale
    after it, in the daemon's session hours, and its events become the daemon's feed alerts
    (and /healthz's `feed ... stale`)."""
    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[store]\npath = "{tmp_path / "store"}"\n'
        f'[rules]\nfile = "{RULES}"\n'
        f'[redis]\nchannel = "mm-q-{uuid.uuid4().hex[:8]}"\n'
        '[[feeds]]\nname = "bus"\nkind = "mqtt"\nurl = "mqtt://127.0.0.1:1883"\n'
        'topics = ["mm-quiet/#"]\nstale_after_s = 7\n'
    )
    conf.chmod(0o600)
    daemon = Daemon(cfg.load(conf))
    daemon.build_feeds()
    feed = daemon.feeds[0]
    assert isinstance(feed, MqttFeed) and feed._quiet is not None
    assert feed._quiet.stale_after_s == 7
    at = dt.datetime(2024, 7, 16, 15, tzinfo=dt.UTC)
    assert feed._quiet._is_regular_hours(at) and not feed._quiet._is_regular_hours(
        at.replace(hour=3)
    )
    assert feed._quiet._on_event is not None
    feed._quiet._on_event(FeedEvent("bus", "feed_stale", at, 7.5))
    assert [(a.kind, a.symbol) for a in daemon.take_feed_alerts()] == [("feed_stale", "bus")]


async def test_a_feed_stale_at_a_stop_recovers_after_the_restart(tmp_path: Path) -> None:
    """`bus` goes stale and the daemon stops (and `gone`, stale too, leaves the config): the
    store keeps which feeds were stale, so after the restart `bus`'s watch starts stale and
    its first data is a `feed_recovered`, and `gone` is told recovered at once. Before, the
    restarted daemon never sent `feed_recovered`, and the notifier held every per-symbol alert
    back for two hours."""
    import asyncio

    def config(feeds: str) -> Path:
        conf = tmp_path / "monitor.toml"
        conf.write_text(
            f'[store]\npath = "{tmp_path / "store"}"\n'
            f'[rules]\nfile = "{RULES}"\n'
            f'[redis]\nchannel = "mm-q-{uuid.uuid4().hex[:8]}"\n{feeds}'
        )
        conf.chmod(0o600)
        return conf

    bus = (
        '[[feeds]]\nname = "bus"\nkind = "mqtt"\nurl = "mqtt://127.0.0.1:1883"\ntopics = ["q/#"]\n'
    )
    gone = bus.replace('"bus"', '"gone"')
    at = dt.datetime(2024, 7, 16, 15, tzinfo=dt.UTC)
    first = Daemon(cfg.load(config(bus + gone)))
    for name in ("bus", "gone"):
        first.on_feed_event(FeedEvent(name, "feed_stale", at, 61.0))
    assert [a.kind for a in first.take_feed_alerts()] == ["feed_stale", "feed_stale"]

    again = Daemon(cfg.load(config(bus)))
    assert [(a.kind, a.symbol) for a in again.take_feed_alerts()] == [("feed_recovered", "gone")]
    assert list(again.store.load_stale_feeds()) == ["bus"]  # (`gone` told once, not each start)
    again.build_feeds()
    feed = again.feeds[0]
    assert isinstance(feed, MqttFeed) and feed._quiet is not None and feed._quiet.stale
    feed._quiet.last_data = asyncio.get_running_loop().time()
    feed._quiet.data()
    assert [(a.kind, a.symbol) for a in again.take_feed_alerts()] == [("feed_recovered", "bus")]
    assert again.store.load_stale_feeds() == {}


def test_a_stale_feeds_file_that_is_no_such_file_is_a_warning(tmp_path: Path) -> None:
    """A `feeds_stale.json` nested too deep for the JSON reader, or naming more feeds than any
    daemon has, is unreadable: a warning, the daemon starts with no feed stale and sends no
    alert. Before, the first ended the start with a RecursionError, at every restart, and the
    second sent one `feed_recovered` per name."""
    import json

    from structlog.testing import capture_logs

    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[store]\npath = "{tmp_path / "store"}"\n[rules]\nfile = "{RULES}"\n'
        f'[redis]\nchannel = "mm-q-{uuid.uuid4().hex[:8]}"\n'
    )
    conf.chmod(0o600)
    (tmp_path / "store").mkdir()
    stale = tmp_path / "store" / "feeds_stale.json"
    many = json.dumps({f"feed{n}": "2024-07-16T15:00:00+00:00" for n in range(20_000)})
    for text in ("[" * 100_000 + "]" * 100_000, many):
        stale.write_text(text)
        with capture_logs() as logs:
            daemon = Daemon(cfg.load(conf))
        assert daemon.take_feed_alerts() == []
        assert [e["event"] for e in logs if e["event"].startswith("stale_feeds")] == [
            "stale_feeds_unreadable"
        ]


def test_stored_bars_the_engine_now_refuses_are_said_at_start(tmp_path: Path) -> None:
    """A store written by an earlier version whose checks were fewer may hold a session bar
    the engine now refuses (a NaN volume, a close above the high): the start says so, with
    the count and the first of them, instead of dropping them without a word."""
    import datetime as dt

    import polars as pl
    from structlog.testing import capture_logs

    from monitor.core.model import DAILY_SCHEMA
    from monitor.store import Store

    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f'[store]\npath = "{tmp_path / "store"}"\n[rules]\nfile = "{RULES}"\n'
        f'[redis]\nchannel = "mm-q-{uuid.uuid4().hex[:8]}"\n'
    )
    conf.chmod(0o600)
    rows = [
        ("AAA", dt.date(2024, 7, 15), 10.0, 11.0, 9.0, 10.5, 1000.0),
        ("AAA", dt.date(2024, 7, 16), 10.0, 11.0, 9.0, 10.5, float("nan")),
        ("BBB", dt.date(2024, 7, 16), 10.0, 11.0, 9.0, 12.0, 1000.0),
    ]
    (tmp_path / "store").mkdir()
    Store(tmp_path / "store").save_bars(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row"))
    with capture_logs() as logs:
        daemon = Daemon(cfg.load(conf))
    (said,) = [e for e in logs if e["event"] == "history_bars_rejected"]
    assert (said["rows"], said["reasons"]) == (2, {"bad_bar": 2})
    assert daemon.engine.daily.height == 1
