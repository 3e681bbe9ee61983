"""`backfill` of a wide file (closes only) over a store of full bars: the stored bars are kept."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from monitor import datacache
from monitor.core.model import DAILY_SCHEMA
from monitor.datafiles import DataSpec, read_many
from monitor.store import Store
from tests.cli_here import cli_here
from tests.test_service import write_config

FULL = (
    "date,symbol,open,high,low,close,volume\n"
    "2024-07-08,AAA,10,11,9,10.5,1000\n"
    "2024-07-09,AAA,10.5,12,10,11,2000\n"
    "2024-07-08,BBB,20,21,19,20.5,500\n"
    "2024-07-09,BBB,20.5,22,20,21,700\n"
)
D = dt.date
_numbers = itertools.count()


def bars(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    """A DAILY_SCHEMA frame from (symbol, session, open, high, low, close, volume) rows."""
    return pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")


FULL_BARS = bars(
    [
        ("AAA", D(2024, 7, 8), 10.0, 11.0, 9.0, 10.5, 1000.0),
        ("AAA", D(2024, 7, 9), 10.5, 12.0, 10.0, 11.0, 2000.0),
        ("BBB", D(2024, 7, 8), 20.0, 21.0, 19.0, 20.5, 500.0),
        ("BBB", D(2024, 7, 9), 20.5, 22.0, 20.0, 21.0, 700.0),
    ]
)


def backfill(tmp_path: Path, *texts: str) -> tuple[str, str]:
    """Backfill files holding `texts` (written in tmp_path) into the test's store: stdout and
    stderr (asserting exit 0)."""
    conf = tmp_path / "monitor.toml"
    if not conf.exists():
        write_config(tmp_path, "mm-backfill-close-only")
    args: list[str] = []
    for text in texts:
        path = tmp_path / f"data{next(_numbers)}.csv"
        path.write_text(text)
        args += ["--data", str(path)]
    res = cli_here("backfill", "--config", str(conf), *args)
    assert res.returncode == 0, res.stderr
    return res.stdout, res.stderr


def stored(tmp_path: Path) -> pl.DataFrame:
    return Store(tmp_path / "store").load_bars()


def into(tmp_path: Path, held: int, changed: str = "") -> str:
    """The end of backfill's stdout: into the test's store, what `changed`, `held` bars."""
    return f"into {tmp_path / 'store'}{changed}; the store now holds {held} bars\n"


def test_a_wide_file_over_full_bars_keeps_their_volume_highs_and_lows(tmp_path: Path) -> None:
    """Closes only, for the sessions the store holds full bars of, replace none of them: the
    store is unchanged, nothing is counted as backfilled, and stderr says how many were kept."""
    backfill(tmp_path, FULL)
    out, err = backfill(tmp_path, "date,AAA,BBB\n2024-07-08,10.5,20.5\n2024-07-09,11,21\n")
    assert out == "backfilled 0 bars of 0 symbols " + into(tmp_path, 4)
    assert err == (
        "market-monitor: kept 4 stored bars with open, high, low and volume over the closes of a "
        "file of closes only\n"
    )
    assert_frame_equal(stored(tmp_path), FULL_BARS)


@pytest.mark.parametrize(
    "closes",
    [
        "date,symbol,close\n2024-07-08,AAA,10.5\n2024-07-09,AAA,11\n",
        "Date,Close\n2024-07-08,10.5\n2024-07-09,11\n",
    ],
    ids=["long", "single"],
)
def test_a_file_of_date_and_close_only_over_full_bars_keeps_them(
    tmp_path: Path, closes: str
) -> None:
    """A long or single-symbol file with no open, high, low or volume column is closes only as
    a wide file is: the stored AAA bars keep their volume, highs and lows. It flattened them."""
    backfill(tmp_path, FULL)
    if closes.startswith("Date,Close"):
        path = tmp_path / "aaa.csv"
        path.write_text(closes)
        res = cli_here(
            "backfill", "--config", str(tmp_path / "monitor.toml"), "--data", f"AAA={path}"
        )
        assert res.returncode == 0, res.stderr
        err = res.stderr
    else:
        _, err = backfill(tmp_path, closes)
    assert "kept 2 stored bars with open, high, low and volume" in err
    assert_frame_equal(stored(tmp_path), FULL_BARS)


def test_a_wide_file_adds_the_sessions_the_store_does_not_hold(tmp_path: Path) -> None:
    """The closes of new sessions are added as bars of closes only, while those of the stored
    sessions leave the stored full bars as they are; stdout counts the bars added."""
    backfill(tmp_path, FULL)
    out, err = backfill(
        tmp_path, "date,AAA,BBB\n2024-07-09,11,21\n2024-07-10,11.5,21.5\n2024-07-11,12,22\n"
    )
    assert out == "backfilled 4 bars of 2 symbols " + into(tmp_path, 8, " (4 new)")
    assert err == (
        "market-monitor: kept 2 stored bars with open, high, low and volume over the closes of a "
        "file of closes only\n"
    )
    added = bars(
        [
            ("AAA", D(2024, 7, 10), 11.5, 11.5, 11.5, 11.5, None),
            ("AAA", D(2024, 7, 11), 12.0, 12.0, 12.0, 12.0, None),
            ("BBB", D(2024, 7, 10), 21.5, 21.5, 21.5, 21.5, None),
            ("BBB", D(2024, 7, 11), 22.0, 22.0, 22.0, 22.0, None),
        ]
    )
    assert_frame_equal(stored(tmp_path), pl.concat([FULL_BARS, added]).sort("symbol", "session"))


def test_full_bars_still_replace_stored_ones_beside_a_wide_file(tmp_path: Path) -> None:
    """In one backfill, a file of full bars corrects the stored AAA bars while a wide file's BBB
    closes keep the stored BBB bars; stdout counts the corrections only."""
    backfill(tmp_path, FULL)
    corrected = (
        "date,symbol,open,high,low,close,volume\n"
        "2024-07-08,AAA,10,11.5,9,10.6,1100\n"
        "2024-07-09,AAA,10.5,12,9.5,11.2,2100\n"
    )
    out, err = backfill(tmp_path, corrected, "date,BBB\n2024-07-08,20.5\n2024-07-09,21\n")
    assert out == "backfilled 2 bars of 1 symbol " + into(tmp_path, 4, " (2 changed)")
    assert err == (
        "market-monitor: kept 2 stored bars with open, high, low and volume over the closes of a "
        "file of closes only\n"
    )
    expected = bars(
        [
            ("AAA", D(2024, 7, 8), 10.0, 11.5, 9.0, 10.6, 1100.0),
            ("AAA", D(2024, 7, 9), 10.5, 12.0, 9.5, 11.2, 2100.0),
            ("BBB", D(2024, 7, 8), 20.0, 21.0, 19.0, 20.5, 500.0),
            ("BBB", D(2024, 7, 9), 20.5, 22.0, 20.0, 21.0, 700.0),
        ]
    )
    assert_frame_equal(stored(tmp_path), expected)


def test_a_close_that_differs_is_counted_and_the_stored_bar_kept(tmp_path: Path) -> None:
    """A wide file's close that differs from the stored one (21.3, not 21) is counted apart
    among the kept bars; one within 1e-9 relative (10.5 + 1e-12) is the same close."""
    backfill(tmp_path, FULL)
    wide = "date,AAA,BBB\n2024-07-08,10.500000000001,20.5\n2024-07-09,11,21.3\n"
    out, err = backfill(tmp_path, wide)
    assert out == "backfilled 0 bars of 0 symbols " + into(tmp_path, 4)
    assert err == (
        "market-monitor: kept 4 stored bars with open, high, low and volume over the closes of a "
        "file of closes only (1 of them closed differently: the stored bar is kept)\n"
    )
    assert_frame_equal(stored(tmp_path), FULL_BARS)


def test_read_many_tells_the_bars_of_a_wide_file_parsed_or_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`close_only` is True for the rows of the wide file only, aligned with the sorted bars,
    and the same when the files come from the data cache."""
    monkeypatch.setenv("MARKET_MONITOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    full, wide = tmp_path / "full.csv", tmp_path / "wide.csv"
    full.write_text(FULL)
    wide.write_text("date,CCC,ABB\n2024-07-08,5,7\n2024-07-09,5.5,\n")
    specs = [DataSpec(str(wide)), DataSpec(str(full))]
    expected = [
        ("AAA", D(2024, 7, 8), False),
        ("AAA", D(2024, 7, 9), False),
        ("ABB", D(2024, 7, 8), True),
        ("BBB", D(2024, 7, 8), False),
        ("BBB", D(2024, 7, 9), False),
        ("CCC", D(2024, 7, 8), True),
        ("CCC", D(2024, 7, 9), True),
    ]
    for cache in (False, True, True):  # (parsed; parsed and cached; from the cache)
        loaded = read_many(specs, cache=cache)
        datacache.flush()
        got = loaded.bars.select("symbol", "session").with_columns(loaded.close_only)
        assert got.rows() == expected
    assert len(list((tmp_path / "cache" / "data").glob("*.parquet"))) == 2


def test_backfill_says_how_many_bars_are_new_or_changed(tmp_path: Path) -> None:
    """Backfill says of the bars it took how many are new, how many changed a stored bar and
    how many were stored so already; a run again says none is new or changed, and one bar is
    "1 bar". (A run again said "backfilled 4 bars" as the first did, and one bar "1 bars".)"""
    out, _ = backfill(tmp_path, FULL)
    assert out == "backfilled 4 bars of 2 symbols " + into(tmp_path, 4, " (4 new)")
    out, _ = backfill(tmp_path, FULL)
    assert out == "backfilled 4 bars of 2 symbols " + into(
        tmp_path, 4, " (none new or changed: each as stored already)"
    )
    corrected = FULL.replace(
        "2024-07-09,AAA,10.5,12,10,11,2000", "2024-07-09,AAA,10.5,12,10,11,2500"
    )
    out, _ = backfill(tmp_path, corrected + "2024-07-10,AAA,11,12,10,11.5,900\n")
    assert out == "backfilled 5 bars of 2 symbols " + into(
        tmp_path, 5, " (1 new, 1 changed, 3 as stored already)"
    )
    out, _ = backfill(tmp_path, "date,symbol,close\n2024-07-11,CCC,5\n")
    assert out == "backfilled 1 bar of 1 symbol " + into(tmp_path, 6, " (1 new)")
