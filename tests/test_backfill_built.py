"""`backfill` of minute bars over sessions a backfill built before: a corrected minute file's
sessions replace the first file's, while a provider's bar (a daily file's, or one stored
over a built one since) is still kept over a built one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from monitor.cli import main
from monitor.store import Store
from tests.conftest import DATA
from tests.test_service import write_config

SPY = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
LAST_MINUTE = "2024-03-08 15:59:00-05:00,512.0,512.06,511.72,511.76,"


def bad_copy(path: Path) -> Path:
    """SPY's minutes with the last minute of 2024-03-08 closing 5 higher (and its high), as a
    bad download would: the session built of them closes at 516.76, not 511.76."""
    text = SPY.read_text()
    assert LAST_MINUTE in text
    path.write_text(
        text.replace(LAST_MINUTE, "2024-03-08 15:59:00-05:00,512.0,517.06,511.72,516.76,")
    )
    return path


def backfill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *files: Path
) -> tuple[pl.DataFrame, str, str]:
    """Backfill `files` as SPY into the test's store (a config written at the first call):
    the bars stored after, stdout and stderr (asserting exit 0)."""
    conf = tmp_path / "monitor.toml"
    if not conf.exists():
        write_config(tmp_path, "mm-backfill-built")
    data = [arg for path in files for arg in ("--data", f"SPY={path}")]
    code = main(["backfill", "--config", str(conf), *data])
    out, err = capsys.readouterr()
    assert code == 0, err
    return Store(tmp_path / "store").load_bars().sort("session"), out, err


def test_a_corrected_minute_file_replaces_the_sessions_a_backfill_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Backfilled from a bad minute file, then from the corrected one, the store holds the
    sessions the corrected file builds, as a fresh store would, and keeps no line saying a
    stored bar was kept. (The first built bars counted as a provider's: "backfilled 0 bars",
    and 2024-03-08 closed at 516.76 for good.)"""
    (tmp_path / "fresh").mkdir()
    fresh, _, _ = backfill(tmp_path / "fresh", capsys, SPY)
    first, _, _ = backfill(tmp_path, capsys, bad_copy(tmp_path / "bad.csv"))
    assert first.get_column("close").to_list() == [516.76, fresh.item(1, "close")]
    stored, _, err = backfill(tmp_path, capsys, SPY)
    assert_frame_equal(stored, fresh)
    assert "kept" not in err


def test_a_provider_bar_stored_over_a_built_one_is_kept_over_one_built_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daily file's bar of 2024-03-08 stored over the session a backfill built is the
    provider's: a backfill of the minutes again keeps it, and says it is no bar backfill
    built; only 03-11, still as built, is recorded as built."""
    backfill(tmp_path, capsys, bad_copy(tmp_path / "bad.csv"))
    daily = tmp_path / "daily.csv"
    daily.write_text("date,open,high,low,close,volume\n2024-03-08,515,518,511,511.5,70000000\n")
    backfill(tmp_path, capsys, daily)
    stored, _, err = backfill(tmp_path, capsys, SPY)
    assert stored.row(0) == ("SPY", dt.date(2024, 3, 8), 515.0, 518.0, 511.0, 511.5, 7e7)
    assert (
        "market-monitor: kept 1 stored bar with open, high, low and volume, a daily file's or"
        " the daemon's (a bar backfill built of minutes is replaced by one built again), over"
        " sessions built of minutes or ticks (it closed differently: the stored bar is kept)\n"
    ) in err
    built = Store(tmp_path / "store").load_built()
    assert built.get_column("session").to_list() == [dt.date(2024, 3, 11)]
