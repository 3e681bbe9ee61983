"""A trade cancel survives a kill -9: the journal holds it after the ticks it takes back, and
the saved sessions hold the ticks kept for cancels, so a start builds the same bars."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from monitor.core.model import CANCEL_SCHEMA, FeedBatch, Tick
from monitor.store import Store
from tests.test_restart_bars import at, started, stepped, trades

SPIKE = (
    Tick("AAA", at(14, 0, 10), 10.0, 100.0, "V:1"),
    Tick("AAA", at(14, 0, 20), 50.0, 100.0, "V:2"),
)


WINDOW = {"cancel_window_s": 900.0}  # (the daemon's [engine] default)


def cancel(trade: str) -> FeedBatch:
    batch = FeedBatch.empty("t")
    row = {"symbol": "AAA", "ts": at(14, 0, 40), "id": trade}
    batch.cancels = pl.DataFrame([row], schema=CANCEL_SCHEMA)
    return batch


@pytest.mark.parametrize("saved", [False, True], ids=["journal", "saved-then-journal"])
def test_a_cancel_before_a_crash_is_applied_again_at_the_start(tmp_path: Path, saved: bool) -> None:
    """A spike to 50 and its cancel, both journaled (or the spike saved with the sessions under
    way and the cancel journaled after the save): a start from what a kill -9 leaves closes
    the minute at a high of 10, as the daemon that never stopped would (before, the cancel
    was dropped as ignored, and the high was 50)."""
    store = Store(tmp_path)
    engine, intraday = started(store, at(14, 0), bar_options=WINDOW)
    stepped(engine, intraday, at(14, 0, 30), trades(*SPIKE))
    if saved:
        intraday.save_later()
        intraday.wait()
    stepped(engine, intraday, at(14, 0, 45), cancel("V:2"))
    engine, intraday = started(store, at(14, 0, 50), bar_options=WINDOW)
    step = engine.advance(at(14, 1, 5))
    assert step.minute_bars.select("high", "volume").rows() == [(10.0, 100.0)]
