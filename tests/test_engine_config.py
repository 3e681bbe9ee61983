"""`[engine]` settings reach the daemon's engine."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from monitor import config as cfg
from monitor.core.model import Bar, FeedBatch, bars_frame
from monitor.errors import ConfigError
from monitor.service import Daemon
from tests.test_service import write_config


def test_minute_history_sets_how_many_minute_bars_the_daemon_keeps(tmp_path: Path) -> None:
    """`[engine] minute_history = 3`: of five minute bars of X, the engine keeps the last three
    (the default keeps 780, two regular sessions); 0 is refused."""
    conf = write_config(tmp_path, f"mm-mh-{uuid.uuid4().hex[:8]}", engine="minute_history = 3")
    daemon = Daemon(cfg.load(conf))
    start = dt.datetime(2024, 7, 2, 13, 30, tzinfo=dt.UTC)
    starts = [start + dt.timedelta(minutes=i) for i in range(5)]
    batch = FeedBatch.empty("t")
    batch.minute_bars = bars_frame(
        [Bar("X", "1m", 10, 10, 10, 10, 100.0, start=s) for s in starts], "1m"
    )
    daemon.engine.warm(start)
    daemon.engine.ingest(batch)
    daemon.engine.advance(starts[-1] + dt.timedelta(minutes=1, seconds=5))
    kept = daemon.engine.minutes.filter(daemon.engine.minutes["symbol"] == "X")
    assert kept.get_column("start").to_list() == starts[2:]
    with pytest.raises(ConfigError, match="minute_history"):
        cfg.load(write_config(tmp_path, "mm-mh0", engine="minute_history = 0"))


def test_minute_history_unset_keeps_two_sessions_of_extended_hours(tmp_path: Path) -> None:
    """With `extended_hours = true` and no `minute_history`, two extended sessions (2 x 960
    minutes, 04:00-20:00 New York) are kept: the 780 of two regular sessions covered less than
    one such day."""
    engine_conf = "extended_hours = true"
    conf = write_config(tmp_path, f"mm-mhx-{uuid.uuid4().hex[:8]}", engine=engine_conf)
    daemon = Daemon(cfg.load(conf))
    days = [dt.datetime(2024, 7, d, 8, 0, tzinfo=dt.UTC) for d in (8, 9, 10)]  # (04:00 EDT)
    starts = [day + dt.timedelta(minutes=i) for day in days[:2] for i in range(960)]
    starts += [days[2] + dt.timedelta(minutes=i) for i in range(10)]
    batch = FeedBatch.empty("t")
    batch.minute_bars = bars_frame(
        [Bar("X", "1m", 10, 10, 10, 10, 100.0, start=s) for s in starts], "1m"
    )
    daemon.engine.warm(days[0])
    assert daemon.engine.ingest(batch) == []
    daemon.engine.advance(starts[-1] + dt.timedelta(minutes=1, seconds=5))
    kept = daemon.engine.minutes.filter(daemon.engine.minutes["symbol"] == "X")
    assert kept.get_column("start").to_list() == starts[-1920:]


def test_the_daemon_evaluates_minute_rules_a_minute_at_a_time(tmp_path: Path) -> None:
    """The daemon's engine takes the minutes of a step (a backlog, a journal taken up) one at a
    time, as steps a minute apart (tests/core/test_minute_batches.py); replay's engines, built
    by `build_engine` alone, take a day's minutes at once, for speed."""
    from monitor.replay import build_engine

    conf = write_config(tmp_path, f"mm-mbm-{uuid.uuid4().hex[:8]}")
    daemon = Daemon(cfg.load(conf))
    assert daemon.engine.minute_by_minute is True
    assert build_engine(daemon.rules, daemon.sessions).minute_by_minute is False


def test_session_close_delay_sets_when_the_daemon_builds_a_sessions_bar(tmp_path: Path) -> None:
    """The daemon's bar builder builds a session's bar 10 s after the close by default (a
    minute's 2 s after its end: closing prints a few seconds late are in it), as `[engine]
    session_close_delay_s` sets (30 s); under 2 s, before the last minute closes, is refused."""
    daemon = Daemon(cfg.load(write_config(tmp_path, f"mm-scd-{uuid.uuid4().hex[:8]}")))
    assert daemon.engine.book.session_close_delay == dt.timedelta(seconds=10)
    conf = write_config(
        tmp_path, f"mm-scd-{uuid.uuid4().hex[:8]}", engine="session_close_delay_s = 30"
    )
    assert Daemon(cfg.load(conf)).engine.book.session_close_delay == dt.timedelta(seconds=30)
    assert Daemon(cfg.load(conf)).engine.book.close_delay == dt.timedelta(seconds=2)
    with pytest.raises(ConfigError, match="session_close_delay_s"):
        cfg.load(write_config(tmp_path, "mm-scd1", engine="session_close_delay_s = 1"))
