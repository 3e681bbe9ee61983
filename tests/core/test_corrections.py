"""Session bars of a period already evaluated are corrections: stored, firing nothing, and
counted (`bar_events{kind="daily_bar_corrected"}`), so an operator can tell why they fired
nothing."""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.cli import load_rules
from monitor.core.model import FeedBatch
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_daily
from monitor.replay import build_engine
from tests.conftest import RULES, RUT


def test_bars_of_earlier_sessions_are_counted_as_corrections(sessions: Sessions) -> None:
    bars = read_daily(DataSpec(path=str(RUT), symbol="^RUT"), end=dt.date(2024, 7, 16)).bars
    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    batch = FeedBatch.empty("t")
    batch.daily_bars = bars
    engine.ingest(batch)
    engine.advance(sessions.close_of(dt.date(2024, 7, 16)))
    assert "daily_bar_corrected" not in engine.book_counts()
    # The 2024-07-12 and 07-15 bars again, revised (the close 2% higher): stored, no alert.
    earlier = bars.filter(pl.col("session").is_between(dt.date(2024, 7, 12), dt.date(2024, 7, 15)))
    batch = FeedBatch.empty("t")
    revised = pl.col("close") * 1.02
    batch.daily_bars = earlier.with_columns(revised, pl.max_horizontal("high", revised))
    engine.ingest(batch)
    step = engine.advance(sessions.close_of(dt.date(2024, 7, 16)) + dt.timedelta(minutes=5))
    assert step.alerts == []
    assert engine.book_counts()["daily_bar_corrected"] == 2
    stored = engine.daily.filter(pl.col("session") == dt.date(2024, 7, 15)).get_column("close")
    assert stored.item() == earlier.get_column("close")[-1] * 1.02
