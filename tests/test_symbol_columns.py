"""A long file's symbol column: `Ticker` (yfinance's long format) read as `symbol`, and a file
read as one symbol's whose dates or minutes repeat with another value in a column of text
refused, naming that column, rather than replayed as one symbol of several stocks' prices."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from monitor.cli import main
from monitor.datafiles import DataSpec, read_many
from monitor.errors import DataError
from monitor.minutefiles import read_minute_files
from tests.conftest import DATA, DEMO

SMALLCAPS = DEMO / "smallcaps_ohlcv_2024-06-28_2024-08-02.csv"
SPY = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
SURGE = '[[rules]]\nid = "s"\nkind = "surge"\nsymbols = ["HOV"]\nwindow = 5\nmin_return = 0.1\n'


def yfinance_long(path: Path, symbol_column: str) -> Path:
    """The shipped small caps' file as yfinance writes a long file: Date, then the symbol
    column (`symbol_column`), then Open .. Volume, sorted by date, then ticker."""
    frame = pl.read_csv(SMALLCAPS).select(
        pl.col("date").alias("Date"),
        pl.col("symbol").alias(symbol_column),
        *(pl.col(k).alias(k.title()) for k in ("open", "high", "low", "close", "volume")),
    )
    frame.sort("Date", symbol_column).write_csv(path)
    return path


@pytest.mark.parametrize("name", ["Ticker", "TICKER", "ticker"])
def test_a_ticker_column_is_the_symbol_column(tmp_path: Path, name: str) -> None:
    """`Ticker` in any case is a long file's symbol column: HOV=PATH reads HOV's bars, those
    of the original file. (It was no column the reader knew: every row was read as HOV's,
    CRBU's first of each date kept, the others rejected as duplicate.)"""
    path = yfinance_long(tmp_path / "yf.csv", name)
    loaded = read_many([DataSpec(str(path), "HOV")])
    original = read_many([DataSpec(str(SMALLCAPS), "HOV")])
    assert_frame_equal(loaded.bars, original.bars)
    assert loaded.counts == {}


def test_replay_of_a_ticker_file_fires_on_the_symbols_own_prices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5-session surge rule on HOV over the yfinance long file prints the alerts of the
    original file, HOV's (near 140), not CRBU's 1.88."""
    (tmp_path / "rules.toml").write_text(SURGE)
    outs = []
    for data in (yfinance_long(tmp_path / "yf.csv", "Ticker"), SMALLCAPS):
        argv = ["replay", "--rules", str(tmp_path / "rules.toml"), "--data", f"HOV={data}"]
        assert main([*argv, "--format", "table"]) == 0
        outs.append(capsys.readouterr())
    assert outs[0] == outs[1]
    assert "HOV rose 12.8% in 5 sessions" in outs[0].out


def test_a_one_symbol_file_whose_dates_repeat_with_another_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long file whose symbols are in a column of another name (`Stock`) is refused, exit
    65, naming the file, the first row repeating a date with another value and the column.
    (Its rows were read as HOV's: alerts on CRBU's prices, the rest counted as duplicate.)"""
    path = yfinance_long(tmp_path / "yf.csv", "Stock")
    (tmp_path / "rules.toml").write_text(SURGE)
    code = main(["replay", "--rules", str(tmp_path / "rules.toml"), "--data", f"HOV={path}"])
    assert (code, capsys.readouterr().err) == (
        65,
        f"market-monitor: data error: {path}, line 3, column 'Stock': read as one symbol's"
        " (HOV: no symbol column), but 2024-06-28 repeats with another 'Stock' ('HIPO'): is"
        " 'Stock' the symbol? Name it symbol (or ticker)\n",
    )


def test_repeats_without_another_word_stay_duplicates(tmp_path: Path) -> None:
    """A repeated date whose text columns hold the same words, or whose other columns differ
    in numbers only (a vendor's corrected row), is a duplicate, the first row kept, as
    before."""
    path = tmp_path / "x.csv"
    path.write_text(
        "date,close,currency,dividends\n"
        "2024-07-01,10,USD,0\n"
        "2024-07-01,11,USD,0.5\n"
        "2024-07-02,12,USD,0\n"
    )
    loaded = read_many([DataSpec(str(path), "X")])
    assert (loaded.bars.get_column("close").to_list(), loaded.counts) == (
        [10.0, 12.0],
        {"duplicate": 1},
    )


def test_a_minute_file_of_two_symbols_under_another_name_is_refused(tmp_path: Path) -> None:
    """SPY's minutes beside a copy under another name in a `Name` column, sorted by time, are
    refused as one symbol's file: the column is named, with the first minute repeated."""
    spy = pl.read_csv(SPY, infer_schema=False).head(3)
    both = pl.concat([spy.with_columns(Name=pl.lit(n)) for n in ("SPY", "SPY2")])
    path = tmp_path / "m.csv"
    both.sort("datetime", maintain_order=True).write_csv(path)
    with pytest.raises(DataError) as caught:
        read_minute_files([DataSpec(str(path), "SPY")])
    assert str(caught.value) == (
        f"{path}, line 3, column 'Name': read as one symbol's (SPY: no symbol column), but"
        f" {spy.item(0, 'datetime')} repeats with another 'Name' ('SPY2'): is 'Name' the"
        " symbol? Name it symbol (or ticker)"
    )
