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
