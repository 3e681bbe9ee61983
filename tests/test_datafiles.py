"""Tests for monitor.datafiles: history files (CSV, Parquet) into daily bars."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from monitor.cli import main
from monitor.core.model import DAILY_SCHEMA, Rejection
from monitor.datafiles import DataSpec, LoadedBars, parse_data_arg, read_daily, read_many
from monitor.errors import DataError
from tests.conftest import DATA, RULES, RUT

BAD = Path(__file__).parent / "data" / "bad"
# Where `missing date column` says a file's dates or times may be.
DATE_COLUMNS = (
    "(date, session, datetime or timestamp; for minute bars and ticks also time, start or ts: a"
    " date and time in one cell, ISO 8601, YYYY-MM-DD HH:MM[:SS][offset]; epoch numbers are not"
    " read as times)"
)
D = date


def bars(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    """A DAILY_SCHEMA frame from (symbol, session, open, high, low, close, volume) rows."""
    return pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("^RUT=data/rut.csv", DataSpec("data/rut.csv", "^RUT")),
        ("rut.csv", DataSpec("rut.csv")),
        ("data/a=b.csv", DataSpec("data/a=b.csv")),
        ("./x=y.csv", DataSpec("./x=y.csv")),
        ("IWM=dir/x=y.csv", DataSpec("dir/x=y.csv", "IWM")),
    ],
)
def test_parse_data_arg(arg: str, expected: DataSpec) -> None:
    """SYMBOL=PATH splits on the first '=' unless the part before it holds a '/'."""
    assert parse_data_arg(arg) == expected


@pytest.mark.parametrize("arg", ["=x.csv", "SYM=", ""])
def test_parse_data_arg_rejects_empty_parts(arg: str) -> None:
    """An empty symbol or path is a DataError, not a spec that fails later."""
    with pytest.raises(DataError):
        parse_data_arg(arg)


def test_single_ohlcv_file_keeps_zero_volume(tmp_path: Path) -> None:
    """A Yahoo-style file (columns in any order) loads under the given symbol; volume 0 is kept."""
    path = write(
        tmp_path,
        "rut.csv",
        "Date,Close,High,Low,Open,Volume\n"
        "2024-07-15,2100,2110,2080,2090,5000\n"
        "2024-07-16,2263.67,2270,2200,2210,0\n",
    )
    loaded = read_daily(DataSpec(path, "^RUT"))
    expected = bars(
        [
            ("^RUT", D(2024, 7, 15), 2090.0, 2110.0, 2080.0, 2100.0, 5000.0),
            ("^RUT", D(2024, 7, 16), 2210.0, 2270.0, 2200.0, 2263.67, 0.0),
        ]
    )
    assert_frame_equal(loaded.bars, expected)
    assert (loaded.rejections, loaded.counts) == ([], {})


def test_close_only_file_takes_symbol_from_stem(tmp_path: Path) -> None:
    """Date,Close gives open = high = low = close, a null volume, and the stem uppercased."""
    path = write(tmp_path, "crbu.csv", "Date,Close\n2024-07-16,2.5\n")
    loaded = read_daily(DataSpec(path))
    assert_frame_equal(loaded.bars, bars([("CRBU", D(2024, 7, 16), 2.5, 2.5, 2.5, 2.5, None)]))


def test_long_file_is_sorted_and_filtered_by_symbol(tmp_path: Path) -> None:
    """A long file with SYMBOL (any case) is sorted by symbol and session; SYM=PATH keeps one."""
    path = write(
        tmp_path,
        "long.csv",
        "SYMBOL,DATE,OPEN,HIGH,LOW,CLOSE,VOLUME\n"
        "HOV,2024-07-16,150,160,149,158,10\n"
        "CRBU,2024-07-16,2,2.6,1.9,2.5,20\n"
        "CRBU,2024-07-15,1.9,2.0,1.8,1.95,30\n",
    )
    loaded = read_daily(DataSpec(path))
    expected = bars(
        [
            ("CRBU", D(2024, 7, 15), 1.9, 2.0, 1.8, 1.95, 30.0),
            ("CRBU", D(2024, 7, 16), 2.0, 2.6, 1.9, 2.5, 20.0),
            ("HOV", D(2024, 7, 16), 150.0, 160.0, 149.0, 158.0, 10.0),
        ]
    )
    assert_frame_equal(loaded.bars, expected)
    assert loaded.counts == {"unsorted": 1}
    only = read_daily(DataSpec(path, "HOV"))
    assert_frame_equal(only.bars, expected.tail(1))


def test_wide_file_unpivots_and_blank_cells_are_absent(tmp_path: Path) -> None:
    """A wide file gives one bar per non-blank cell; OPEN is a ticker there, not a field."""
    path = write(
        tmp_path,
        "wide.csv",
        "Date,ZZZ,OPEN,AAA\n2024-07-15,1.5,,10\n2024-07-16, ,3.25,11\n",
    )
    loaded = read_daily(DataSpec(path))
    expected = bars(
        [
            ("AAA", D(2024, 7, 15), 10.0, 10.0, 10.0, 10.0, None),
            ("AAA", D(2024, 7, 16), 11.0, 11.0, 11.0, 11.0, None),
            ("OPEN", D(2024, 7, 16), 3.25, 3.25, 3.25, 3.25, None),
            ("ZZZ", D(2024, 7, 15), 1.5, 1.5, 1.5, 1.5, None),
        ]
    )
    assert_frame_equal(loaded.bars, expected)
    assert (loaded.rejections, loaded.counts) == ([], {})


def test_wide_file_rejects_bad_prices_with_line(tmp_path: Path) -> None:
    """A zero or NaN cell in a wide file is a bad_price rejection naming symbol and line."""
    path = write(tmp_path, "wide.csv", "Date,AAA,BBB\n2024-07-16,0,nan\n2024-07-15,1,2\n")
    loaded = read_daily(DataSpec(path))
    assert loaded.rejections == [
        Rejection("bad_price", "AAA", f"{path}:2"),
        Rejection("bad_price", "BBB", f"{path}:2"),
    ]
    assert loaded.counts == {"bad_price": 2, "unsorted": 1}
    assert loaded.bars["session"].to_list() == [D(2024, 7, 15), D(2024, 7, 15)]


def test_datetime_column_takes_the_date_as_written(tmp_path: Path) -> None:
    """A datetime with a time part and offset gives the date written, not a UTC conversion."""
    path = write(
        tmp_path,
        "spy.csv",
        "datetime,open,high,low,close,volume\n2024-02-20 23:00:00-05:00,5,6,4,5.5,7\n",
    )
    loaded = read_daily(DataSpec(path, "SPY"))
    assert_frame_equal(loaded.bars, bars([("SPY", D(2024, 2, 20), 5.0, 6.0, 4.0, 5.5, 7.0)]))


def test_adjusted_close_scales_open_high_low(tmp_path: Path) -> None:
    """With adjusted=True, Adj Close replaces close and open/high/low scale by adj/close."""
    path = write(
        tmp_path,
        "iwm.csv",
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-07-16,200,220,190,210,105,9\n",
    )
    raw = read_daily(DataSpec(path, "IWM"))
    adjusted = read_daily(DataSpec(path, "IWM"), adjusted=True)
    assert_frame_equal(raw.bars, bars([("IWM", D(2024, 7, 16), 200.0, 220.0, 190.0, 210.0, 9.0)]))
    assert_frame_equal(
        adjusted.bars, bars([("IWM", D(2024, 7, 16), 100.0, 110.0, 95.0, 105.0, 9.0)])
    )


@pytest.mark.parametrize("header", ["adj_close", "ADJCLOSE", "Adj Close"])
def test_adjusted_close_names(tmp_path: Path, header: str) -> None:
    """Every spelling of the adjusted close is recognised."""
    path = write(tmp_path, "x.csv", f"date,close,{header}\n2024-07-16,4,2\n")
    loaded = read_daily(DataSpec(path), adjusted=True)
    assert loaded.bars["close"].to_list() == [2.0]


@pytest.mark.parametrize(
    ("text", "bars_read"),
    [
        ("Date,Close\n2024-07-16,4\n", [("X", D(2024, 7, 16), 4.0, 4.0, 4.0, 4.0, None)]),
        ("Date,X,Y\n2024-07-16,4,5\n", [("X", D(2024, 7, 16), 4.0, 4.0, 4.0, 4.0, None)]),
    ],
    ids=["single", "wide"],
)
def test_adjusted_reads_a_file_without_adjusted_close_as_it_is_and_says_so(
    tmp_path: Path, text: str, bars_read: list[tuple[object, ...]]
) -> None:
    """adjusted=True on a file with no adjusted close (an index, a file adjusted already)
    reads its closes as they are, and a note names the file. (The whole read was refused.)"""
    path = write(tmp_path, "x.csv", text)
    loaded = read_daily(DataSpec(path, "X"), adjusted=True)
    assert_frame_equal(loaded.bars, bars(bars_read))
    assert loaded.notes == [
        f"{path}: --adjusted, but it has no adjusted close column (Adj Close): its closes are"
        " read as they are (an index pays no dividends; a file may be adjusted already)"
    ]
    assert read_daily(DataSpec(path, "X")).notes == []


def test_replay_adjusted_of_an_index_beside_an_adjusted_close_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """replay --adjusted of the shipped ^RUT (no Adj Close) and IWM's file with one runs:
    ^RUT's closes as they are, said on stderr, IWM's adjusted (204.04 on 2024-06-03, not the
    traded 204.61). (It exited 65: no adjusted close column.)"""
    iwm = DATA / "iwm_daily_raw_and_adj_2024-06_2024-07.csv"
    loaded = read_many([DataSpec(str(RUT), "^RUT"), DataSpec(str(iwm), "IWM")], adjusted=True)
    first = loaded.bars.filter(pl.col("symbol") == "IWM").row(0, named=True)
    assert first["close"] == pytest.approx(204.040421)
    argv = ["replay", "--rules", str(RULES), "--adjusted", "--from", "2024-07-01"]
    assert main([*argv, "--data", f"^RUT={RUT}", "--data", f"IWM={iwm}"]) == 0
    out, err = capsys.readouterr()
    assert f"market-monitor: {RUT}: --adjusted, but it has no adjusted close column" in err
    assert '"symbol":"IWM"' in out and '"symbol":"^RUT"' in out


def test_bad_number_names_line_and_column() -> None:
    """A cell that is no number names its file line (blank and quoted lines counted) and column."""
    path = str(BAD / "bad_number.csv")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert (info.value.path, info.value.line, info.value.column) == (path, 6, "Close")
    assert str(info.value) == f"{path}, line 6, column 'Close': cannot parse '1l.9' as a number"


def test_bad_cell_in_wide_file_names_ticker_column() -> None:
    """A wide file's unparseable cell names its line and its ticker column."""
    path = str(BAD / "wide_bad_cell.csv")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert (info.value.line, info.value.column) == (3, "BBB")


def test_bad_date_names_line_and_column(tmp_path: Path) -> None:
    """A date that does not parse is a DataError at its line and the date column."""
    path = write(tmp_path, "x.csv", "Date,Close\n2024-07-15,1\n16/07/2024,2\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert str(info.value) == (
        f"{path}, line 3, column 'Date': cannot parse '16/07/2024' as a date (the year last:"
        " whether the month or the day comes first is not guessed): dates are ISO 8601,"
        " YYYY-MM-DD (or YYYY/MM/DD)"
    )


def test_us_dates_are_refused_saying_the_order_is_not_guessed(tmp_path: Path) -> None:
    """A daily file of US dates (`11/01/2024`) is refused at its first cell, saying that the
    order of month and day is not guessed and which dates are read."""
    path = write(tmp_path, "x.csv", "date,close\n11/01/2024,1\n11/04/2024,2\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "X"))
    assert str(info.value) == (
        f"{path}, line 2, column 'date': cannot parse '11/01/2024' as a date (the year last:"
        " whether the month or the day comes first is not guessed): dates are ISO 8601,"
        " YYYY-MM-DD (or YYYY/MM/DD)"
    )


def test_a_polygon_export_of_epoch_times_says_which_time_columns_are_read(
    tmp_path: Path,
) -> None:
    """Polygon's aggregates (`t` in epoch ms, `o,h,l,c,v`) have no column a date or time is
    read from: the error names a daily file's date columns, a minute or tick file's time
    columns and their syntax, and says epoch numbers are not read as times."""
    text = "t,o,h,l,c,v,vw,n\n1709683200000,507.37,507.37,507.31,507.31,1097.0,507.3,18\n"
    path = write(tmp_path, "polygon.csv", text)
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "SPY"))
    assert str(info.value) == f"{path}: missing date column {DATE_COLUMNS}"


def test_a_yfinance_header_of_three_rows_is_named(tmp_path: Path) -> None:
    """yfinance's CSV of several tickers' layout (a `Price` header row, then `Ticker` and
    `Datetime` rows) is refused saying that its header is three rows, to be made one."""
    text = (
        "Price,Close,High,Low,Open,Volume\nTicker,SPY,SPY,SPY,SPY,SPY\nDatetime,,,,,\n"
        "2024-03-06 09:30:00-05:00,510.49,510.78,510.35,510.55,588142\n"
    )
    path = write(tmp_path, "yf.csv", text)
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "SPY"))
    assert str(info.value) == (
        f"{path}: missing date column (date, session, datetime or timestamp): the header is"
        " three rows ('Price', 'Ticker', 'Datetime'), as yfinance writes it; keep one, with the"
        " first column named 'Datetime'"
    )


def test_a_carriage_return_inside_a_line_is_a_data_error_at_that_line(tmp_path: Path) -> None:
    """A file of CRLF lines, one with a stray carriage return before an extra field: polars
    finds a row too wide, the csv module two rows short enough; a DataError names the line."""
    rows = [f"2024-07-{d:02d},1.0,2.0,0.5,1.5,100" for d in (1, 2, 3, 5)]
    rows[2] += "\r,999"
    path = tmp_path / "cr.csv"
    path.write_bytes("\r\n".join(["date,open,high,low,close,volume", *rows, ""]).encode())
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(path)))
    assert str(info.value) == f"{path}, line 4: a carriage return (\\r) inside the line"


def test_ragged_line_is_a_data_error() -> None:
    """A row with more fields than the header is a DataError at that line."""
    path = str(BAD / "ragged.csv")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert str(info.value) == f"{path}, line 3: 3 fields but the header has 2"


OHLCV = "date,open,high,low,close,volume"


@pytest.mark.parametrize(
    ("prefix", "newline", "row", "line", "fields"),
    [
        ("", "\n", "2023-02-02,1800", 3, 2),
        ("", "\r\n", "2023-02-02,1800,1810,1790,1805", 3, 5),
        ("\ufeff", "\r\n", "2023-02-02", 3, 1),
        ("", "\n", '2023-02-02,"1,800",1810', 3, 3),
        ("\n", "\n", "2023-02-02,1800", 4, 2),
        ("", "\n", ",,", 3, 3),
    ],
)
def test_short_row_is_a_data_error_at_that_line(
    tmp_path: Path, prefix: str, newline: str, row: str, line: int, fields: int
) -> None:
    """A row with fewer fields than the header (LF or CRLF, after a BOM, with a quoted comma
    or a blank line before the header) is a DataError naming its line and its fields, before
    its padded nulls could displace the complete row of the same date that follows it."""
    rows = ["2023-02-01,1,2,0.5,1.5,10", row, "2023-02-02,1800,1810,1790,1805,20"]
    path = tmp_path / "short.csv"
    path.write_bytes((prefix + newline.join([OHLCV, *rows]) + newline).encode())
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(path), "X"))
    noun = "field" if fields == 1 else "fields"
    assert str(info.value) == f"{path}, line {line}: {fields} {noun} but the header has 6"


def test_short_last_row_without_line_feed_is_a_data_error(tmp_path: Path) -> None:
    """A short last line with no line feed after it is found too."""
    path = write(tmp_path, "x.csv", f"{OHLCV}\n2023-02-01,1,2,0.5,1.5,10\n2023-02-02,1800")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "X"))
    assert str(info.value) == f"{path}, line 3: 2 fields but the header has 6"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_empty_fields_and_blank_lines_are_not_short_rows(tmp_path: Path, newline: str) -> None:
    """Empty fields with every separator written, blank lines, a line of spaces and a quoted
    comma in a full row are not short rows: the file loads."""
    lines = [
        "symbol,date,open,high,low,close,volume",
        "X,2023-02-01,1,2,0.5,1.5,",
        "",
        "   ",
        '"X",2023-02-02,,,,1.5,""',
        '"Y,Z",2023-02-02,1,2,0.5,1.5,7',
        ",,,,,,",
        "",
    ]
    path = tmp_path / "x.csv"
    path.write_bytes(newline.join(lines).encode())
    loaded = read_daily(DataSpec(str(path)))
    expected = bars(
        [
            ("X", D(2023, 2, 1), 1.0, 2.0, 0.5, 1.5, None),
            ("X", D(2023, 2, 2), 1.5, 1.5, 1.5, 1.5, None),
            ("Y,Z", D(2023, 2, 2), 1.0, 2.0, 0.5, 1.5, 7.0),
        ]
    )
    assert_frame_equal(loaded.bars, expected)
    assert (loaded.rejections, loaded.counts) == ([], {})


def test_short_row_in_a_wide_file_is_a_data_error(tmp_path: Path) -> None:
    """In a wide file a row missing its last symbols' cells is a DataError, blank cells not."""
    path = write(tmp_path, "wide.csv", "Date,AAA,BBB,CCC\n2024-07-15,1,2,\n2024-07-16,1,2\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert str(info.value) == f"{path}, line 3: 3 fields but the header has 4"


@pytest.mark.parametrize(
    ("header", "given", "message"),
    [
        ("Date,Price", None, "the columns are 'Date', 'Price' (rename 'Price' to close)"),
        ("Date,Price", "SPY", "the columns are 'Date', 'Price' (rename 'Price' to close)"),
        (
            "Date,AAA,BBB,Volume",
            None,
            "the columns are 'Date', 'AAA', 'BBB', 'Volume'"
            " ('Volume' is not a symbol: not a wide file of closes)",
        ),
        (
            "date,aaa,open",
            "AAA",
            "the columns are 'date', 'aaa', 'open' ('open' is not a symbol: not a wide file of"
            " closes)",
        ),
        ("Date,Adjusted Close,Volume", None, "the columns are 'Date', 'Adjusted Close',"),
    ],
)
def test_no_close_column_and_price_fields_is_a_missing_close(
    tmp_path: Path, header: str, given: str | None, message: str
) -> None:
    """A file with no close column but a Price, Volume, Open, ... column is no wide file of
    closes: a DataError says the close column is missing and lists the columns found."""
    width = header.count(",")
    path = write(tmp_path, "price.csv", f"{header}\n2024-07-16{',9' * width}\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, given))
    assert str(info.value).startswith(f"{path}: missing close column: {message}")


def test_no_close_column_with_adjusted_is_a_missing_close(tmp_path: Path) -> None:
    """With adjusted=True a file with neither close is refused as one without adjusted: the
    close is missing, and the column to rename is named."""
    path = write(tmp_path, "price.csv", "Date,Price\n2024-07-16,9\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path), adjusted=True)
    assert str(info.value) == (
        f"{path}: missing close column: the columns are 'Date', 'Price' (rename 'Price' to close)"
    )


def test_given_symbol_missing_from_a_wide_file_says_there_is_no_close(tmp_path: Path) -> None:
    """SYMBOL=PATH for a file without a close column nor that symbol's column says so."""
    path = write(tmp_path, "wide.csv", "Date,AAA,BBB\n2024-07-16,1,2\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "SPY"))
    assert str(info.value) == (
        f"{path}: symbol 'SPY' is not a column of the file, and it has no close column"
        " (the columns are 'Date', 'AAA', 'BBB')"
    )


def test_wide_file_tickers_in_capitals_that_read_like_fields(tmp_path: Path) -> None:
    """OPEN and LOW in capitals stay tickers of a wide file (Opendoor, Lowe's), also when
    given as SYMBOL=PATH, and a wide file of other names reads as before."""
    path = write(tmp_path, "wide.csv", "Date,OPEN,Price Index,LOW\n2024-07-16,1,2,3\n")
    loaded = read_daily(DataSpec(path))
    assert loaded.bars["symbol"].to_list() == ["LOW", "OPEN", "Price Index"]
    only = read_daily(DataSpec(path, "LOW"))
    assert_frame_equal(only.bars, bars([("LOW", D(2024, 7, 16), 3.0, 3.0, 3.0, 3.0, None)]))


@pytest.mark.parametrize(
    ("data", "text", "message"),
    [
        (
            "X=short.csv",
            f"{OHLCV}\n2023-02-01,1,2,0.5,1.5,10\n2023-02-02,1800\n2023-02-02,1,2,0.5,1.5,20\n",
            "short.csv, line 3: 2 fields but the header has 6",
        ),
        (
            "SPY=short.csv",
            "Date,Price\n2023-02-01,1\n",
            "short.csv: missing close column: the columns are 'Date', 'Price' (rename 'Price' to"
            " close)",
        ),
    ],
)
def test_replay_exits_65_for_a_short_row_or_a_missing_close(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: str, text: str, message: str
) -> None:
    """`replay` exits 65 on a short row or a file without a close column, saying which."""
    write(tmp_path, "short.csv", text)
    symbol, _, name = data.partition("=")
    code = main(["replay", "--rules", str(RULES), "--data", f"{symbol}={tmp_path / name}"])
    assert (code, capsys.readouterr().err) == (
        65,
        f"market-monitor: data error: {tmp_path}/{message}\n",
    )


def test_not_utf8_is_a_data_error() -> None:
    """Bytes that are not UTF-8 are a DataError at their line."""
    path = str(BAD / "not_utf8.csv")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert str(info.value) == (
        f"{path}, line 3: not UTF-8 text (another encoding, as Excel's plain 'CSV' may write: save"
        " it as CSV UTF-8)"
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("bars.csv.gz", "gzip-compressed (decompress it first: gunzip)"),
        ("bars.csv", "a Parquet file (read as Parquet when named .parquet or .pq)"),
        (
            "bars.xls",
            "an Excel 97-2003 workbook (.xls) or another Office file (save the sheet as CSV UTF-8)",
        ),
        ("bars.txt", "UTF-16 text, as Excel's 'Unicode Text' (save it as CSV UTF-8)"),
    ],
)
def test_a_file_that_is_no_text_says_what_it_is(tmp_path: Path, name: str, kind: str) -> None:
    """A compressed CSV, a Parquet file named .csv, an old Excel workbook or Excel's "Unicode
    Text" (UTF-16, tab-separated) is said to be one (it was "not UTF-8 text at line 1", which
    sends a user looking for an encoding, or for the wrong one)."""
    import gzip
    import io

    parquet = io.BytesIO()
    pl.DataFrame({"date": [D(2024, 7, 15)], "close": [1.0]}).write_parquet(parquet)
    path = tmp_path / name
    ole2 = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504) + b"\x09\x08\xff" * 100
    path.write_bytes(
        gzip.compress(b"date,close\n2024-07-15,1\n")
        if name.endswith(".gz")
        else ole2
        if name.endswith(".xls")
        else "Date\tClose\r\n2024-07-15\t1\r\n".encode("utf-16")
        if name.endswith(".txt")
        else parquet.getvalue()
    )
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(path), "X"))
    assert str(info.value) == f"{path}: not CSV text but {kind}"


def test_an_adjusted_close_without_close_says_to_use_adjusted(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "date,adj close\n2024-07-15,1\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "X"))
    assert str(info.value) == f"{path}: missing close column ('adj close' is read with --adjusted)"
    assert read_daily(DataSpec(path, "X"), adjusted=True).bars["close"].to_list() == [1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("Date,Close\n", "empty file: a header and no rows"),
        ("Close,Open\n1,1\n", f"missing date column {DATE_COLUMNS}"),
        (
            "Date,Open,High,Low\n2024-07-16,1,1,1\n",
            "missing close column: the columns are 'Date', 'Open', 'High', 'Low'",
        ),
        ("Date,Close,close\n2024-07-16,1,1\n", "two columns mean 'close': 'Close'"),
    ],
)
def test_unusable_files_are_data_errors(tmp_path: Path, text: str, message: str) -> None:
    """Empty files and missing columns are DataErrors naming the file and what is missing."""
    path = write(tmp_path, "x.csv", text)
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path))
    assert str(info.value).startswith(path)
    assert str(info.value).endswith(message)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    """A path that does not exist is a DataError, not an OSError."""
    with pytest.raises(DataError):
        read_daily(DataSpec(str(tmp_path / "nope.csv")))


def test_rejections_are_counted_by_reason(tmp_path: Path) -> None:
    """Bad prices, inconsistent bars, missing closes and repeats are rejected rows, counted."""
    path = write(
        tmp_path,
        "x.csv",
        "Date,Open,High,Low,Close,Volume\n"
        "2024-07-01,10,11,9,10,1\n"  # good
        "2024-07-02,NaN,11,9,10,1\n"  # bad_price
        "2024-07-03,10,inf,9,10,1\n"  # bad_price
        "2024-07-05,0,11,9,10,1\n"  # bad_price
        "2024-07-08,10,11,-9,10,1\n"  # bad_price
        "2024-07-09,10,9,11,10,1\n"  # bad_bar: high < low
        "2024-07-10,10,11,9,12,1\n"  # bad_bar: close above high
        "2024-07-11,10,11,9,11.000001,1\n"  # within 1e-6: kept, high widened
        "2024-07-12,10,11,9,,1\n"  # missing_close
        "2024-07-12,10,11,9,10.5,1\n"  # first good row of the day
        "2024-07-12,10,11,9,10.6,1\n"  # duplicate
        ",,,,,\n",  # a row of blank cells: skipped like a blank line
    )
    loaded = read_daily(DataSpec(path, "X"))
    lines = [3, 4, 5, 6, 7, 8, 10, 12]
    reasons = ["bad_price"] * 4 + ["bad_bar", "bad_bar", "missing_close", "duplicate"]
    assert loaded.rejections == [
        Rejection(r, "X", f"{path}:{n}") for r, n in zip(reasons, lines, strict=True)
    ]
    assert loaded.counts == {"bad_price": 4, "bad_bar": 2, "missing_close": 1, "duplicate": 1}
    expected = bars(
        [
            ("X", D(2024, 7, 1), 10.0, 11.0, 9.0, 10.0, 1.0),
            ("X", D(2024, 7, 11), 10.0, 11.000001, 9.0, 11.000001, 1.0),
            ("X", D(2024, 7, 12), 10.0, 11.0, 9.0, 10.5, 1.0),
        ]
    )
    assert_frame_equal(loaded.bars, expected)


def test_missing_volume_is_null_and_null_word_is_blank(tmp_path: Path) -> None:
    """A blank or 'null' volume is null, and blank open/high/low take the close."""
    path = write(
        tmp_path,
        "x.csv",
        "Date,Open,High,Low,Close,Volume\n2024-07-15,,,,5,\n2024-07-16,5,6,4,5,null\n",
    )
    loaded = read_daily(DataSpec(path, "X"))
    expected = bars(
        [
            ("X", D(2024, 7, 15), 5.0, 5.0, 5.0, 5.0, None),
            ("X", D(2024, 7, 16), 5.0, 6.0, 4.0, 5.0, None),
        ]
    )
    assert_frame_equal(loaded.bars, expected)


def test_n_a_cells_are_blank_as_null_ones_are(tmp_path: Path) -> None:
    """`N/A` and Excel's `#N/A` (any case) are blank, as `null` is: a blank open/high/low
    takes the close, a blank volume is none, a blank close is a counted missing_close. An
    export with one such cell failed as a whole file ('cannot parse ... as a number')."""
    path = write(
        tmp_path,
        "x.csv",
        "Date,Open,High,Low,Close,Volume\n2024-07-15,N/A,n/a,#N/A,5,N/A\n"
        "2024-07-16,5,6,4,#n/a,100\n2024-07-17,5,6,4,5,100\n",
    )
    loaded = read_daily(DataSpec(path, "X"))
    expected = bars(
        [
            ("X", D(2024, 7, 15), 5.0, 5.0, 5.0, 5.0, None),
            ("X", D(2024, 7, 17), 5.0, 6.0, 4.0, 5.0, 100.0),
        ]
    )
    assert_frame_equal(loaded.bars, expected)
    assert loaded.counts == {"missing_close": 1}


def test_dates_outside_range_are_dropped_silently(tmp_path: Path) -> None:
    """start and end filter rows without rejecting them, bad prices outside included."""
    path = write(
        tmp_path, "x.csv", "Date,Close\n2024-07-01,-1\n2024-07-02,2\n2024-07-03,3\n2024-07-04,0\n"
    )
    loaded = read_daily(DataSpec(path, "X"), start=D(2024, 7, 2), end=D(2024, 7, 3))
    assert loaded.bars["session"].to_list() == [D(2024, 7, 2), D(2024, 7, 3)]
    assert (loaded.rejections, loaded.counts) == ([], {})


def test_dates_no_calendar_holds_are_rejected_not_a_crash(tmp_path: Path) -> None:
    """A typo's year (1023, 2200, 9999) is a rejected row, `date_out_of_range`: the NYSE
    calendar starts in 1900, and a bar of history cannot be dated after today (9999 crashed
    the calendar; 2200 was taken for a session of one built to it). Replay says so and goes
    on with the rest; a file of only such rows has no bars to replay (65), and says why."""
    path = write(
        tmp_path,
        "x.csv",
        "Date,Close\n1023-01-03,9\n1899-12-29,9\n2024-07-01,10\n2200-01-03,11\n9999-12-31,11\n",
    )
    loaded = read_daily(DataSpec(path, "X"))
    assert loaded.bars["session"].to_list() == [D(2024, 7, 1)]
    assert loaded.rejections == [
        Rejection("date_out_of_range", "X", f"{path}:{n}") for n in (2, 3, 5, 6)
    ]
    rules = write(
        tmp_path, "r.toml", '[[rules]]\nid = "s"\nkind = "surge"\nsymbols = ["X"]\nwindow = 1\n'
    )
    assert main(["replay", "--rules", rules, "--data", f"X={path}"]) == 0
    only = write(tmp_path, "y.csv", "Date,Close\n9999-12-31,11\n")
    assert main(["replay", "--rules", rules, "--data", f"X={only}"]) == 65


def test_the_last_date_a_bar_may_have_is_today(tmp_path: Path) -> None:
    """Today's bar is history (give or take the time zones); one a week ahead is not."""
    from monitor.datafiles import latest_session

    today, ahead = latest_session() - timedelta(days=1), latest_session() + timedelta(days=7)
    path = write(tmp_path, "x.csv", f"Date,Close\n{today},10\n{ahead},11\n")
    loaded = read_daily(DataSpec(path, "X"))
    assert loaded.bars["session"].to_list() == [today]
    assert loaded.counts == {"date_out_of_range": 1}


def test_columns_the_reader_does_not_use_may_be_of_any_type(tmp_path: Path) -> None:
    """A Parquet file's lists and durations beside the bars are not looked at (they failed the
    read, cast to text to find blank rows)."""
    path = tmp_path / "x.parquet"
    pl.DataFrame(
        {
            "date": [D(2024, 7, 15), D(2024, 7, 16)],
            "close": [1.0, 2.0],
            "tags": [["a"], []],
            "held": [timedelta(days=1), None],
        }
    ).write_parquet(path)
    loaded = read_daily(DataSpec(str(path), "X"))
    assert loaded.bars["close"].to_list() == [1.0, 2.0]


def test_a_wide_file_column_without_a_name(tmp_path: Path) -> None:
    """A wide file's trailing comma (an empty column without a name) is no symbol; a column
    without a name that holds closes is an error (it became bars of the symbol "")."""
    ok = write(tmp_path, "ok.csv", "date,AAA,\n2024-07-15,1,\n2024-07-16,2,\n")
    assert read_daily(DataSpec(ok)).bars["symbol"].unique().to_list() == ["AAA"]
    bad = write(tmp_path, "bad.csv", "date,AAA, \n2024-07-15,1,\n2024-07-16,2,5\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(bad))
    assert str(info.value) == (
        f"{bad}: column 3 has closes but no name: a wide file's names are symbols"
    )


def test_symbols_a_screen_would_run_or_garble_are_rejected(tmp_path: Path) -> None:
    """A symbol with an escape sequence (a terminal runs it in `watch` and the table), a
    right-to-left override (the board's text reads backwards past it) or past 64 characters is
    a rejected row, `bad_symbol`; in a wide file, where the symbols are the column names, the
    file is an error naming the column."""
    long = "X" * 65
    path = write(
        tmp_path,
        "x.csv",
        "symbol,date,close\n"
        "GOOD,2024-07-01,10\n"
        "ESC\x1b[31mRED,2024-07-01,10\n"
        "A\u202eLIAM,2024-07-01,10\n"
        f"{long},2024-07-01,10\n"
        "BRK B,2024-07-01,10\n",
    )
    loaded = read_daily(DataSpec(path))
    assert sorted(loaded.bars["symbol"].to_list()) == ["BRK B", "GOOD"]
    assert loaded.counts == {"bad_symbol": 3}
    assert [r.raw for r in loaded.rejections] == [f"{path}:{n}" for n in (3, 4, 5)]
    from monitor.replay_command import first_rejected

    said = first_rejected(loaded.rejections)  # (stderr: the escape shown, not run)
    assert "\x1b" not in said and "\u202e" not in said
    assert f"{path}:3 ESC\\x1b[31mRED (bad_symbol)" in said and "A\\u202eLIAM" in said
    wide = write(tmp_path, "w.csv", "date,AAA,B\x1b]0;pwned\x07\n2024-07-01,1,2\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(wide))
    assert str(info.value) == (
        f"{wide}: column 3: its name, a symbol, has a control or formatting character"
    )


def test_read_many_rejects_the_later_file_duplicate(tmp_path: Path) -> None:
    """The same symbol and session in two files keeps the first file's bar."""
    first = write(tmp_path, "a.csv", "Date,Close\n2024-07-15,1\n2024-07-16,2\n")
    second = write(tmp_path, "b.csv", "symbol,Date,Close\nX,2024-07-16,9\nY,2024-07-16,3\n")
    loaded = read_many([DataSpec(first, "X"), DataSpec(second)])
    expected = bars(
        [
            ("X", D(2024, 7, 15), 1.0, 1.0, 1.0, 1.0, None),
            ("X", D(2024, 7, 16), 2.0, 2.0, 2.0, 2.0, None),
            ("Y", D(2024, 7, 16), 3.0, 3.0, 3.0, 3.0, None),
        ]
    )
    assert_frame_equal(loaded.bars, expected)
    assert loaded.rejections == [Rejection("duplicate", "X", f"{second}:2")]
    assert loaded.counts == {"duplicate": 1}


def test_parquet_round_trip(tmp_path: Path) -> None:
    """Bars written as Parquet read back unchanged."""
    frame = bars(
        [
            ("AAA", D(2024, 7, 15), 1.0, 2.0, 0.5, 1.5, 10.0),
            ("BBB", D(2024, 7, 15), 3.0, 3.0, 3.0, 3.0, None),
        ]
    )
    path = tmp_path / "bars.parquet"
    frame.write_parquet(path)
    loaded = read_daily(DataSpec(str(path)))
    assert_frame_equal(loaded.bars, frame)
    assert (loaded.rejections, loaded.counts) == ([], {})


def test_parquet_wide_and_text_columns(tmp_path: Path) -> None:
    """Parquet follows the CSV rules: wide layout, datetimes, and text cells that must parse."""
    path = tmp_path / "wide.parquet"
    pl.DataFrame({"Date": ["2024-07-15", "2024-07-16"], "AAA": [1.0, None]}).write_parquet(path)
    loaded = read_daily(DataSpec(str(path)))
    assert_frame_equal(loaded.bars, bars([("AAA", D(2024, 7, 15), 1.0, 1.0, 1.0, 1.0, None)]))
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"date": ["2024-07-15", "2024-07-16"], "close": ["1", "x"]}).write_parquet(bad)
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(bad)))
    assert str(info.value) == f"{bad}, column 'close': row 2: cannot parse 'x' as a number"


def test_parquet_not_parquet_is_a_data_error(tmp_path: Path) -> None:
    """A .parquet file that is not Parquet is a DataError."""
    path = write(tmp_path, "x.parquet", "Date,Close\n")
    with pytest.raises(DataError):
        read_daily(DataSpec(path))


CELLS = st.sampled_from(
    ["", "1", "2.5", "-3", "0", "nan", "inf", "x", "null", " 4 ", '"', '"5"', "2024-07-16"]
)
CELLS |= st.sampled_from(["2024-07-17 10:00", "2024-13-01", "Date", "close", "symbol", "AAA"])
LINES = st.lists(CELLS, min_size=0, max_size=5).map(",".join)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.lists(
        st.sampled_from(["Date", "datetime", "Close", "Open", "High", "Low", "Volume"])
        | st.sampled_from(["symbol", "Adj Close", "AAA", "BBB", ""]),
        min_size=0,
        max_size=6,
    ),
    lines=st.lists(LINES | st.text(max_size=12), max_size=6),
    adjusted=st.booleans(),
)
def test_random_csv_loads_or_raises_data_error(
    tmp_path: Path, header: list[str], lines: list[str], adjusted: bool
) -> None:
    """Any CSV text either loads as bars of DAILY_SCHEMA or raises DataError, nothing else."""
    path = tmp_path / "random.csv"
    path.write_text("\n".join([",".join(header), *lines]) + "\n")
    try:
        loaded = read_daily(DataSpec(str(path)), adjusted=adjusted)
    except DataError:
        return
    assert isinstance(loaded, LoadedBars)
    assert loaded.bars.schema == pl.Schema(DAILY_SCHEMA)


def test_a_semicolon_separated_file_says_what_separator_is_read(tmp_path: Path) -> None:
    """A file written with `;` (a European spreadsheet's CSV) reads as one column: the error
    says so instead of only "missing date column"."""
    path = tmp_path / "semi.csv"
    path.write_text("Date;Open;High;Low;Close;Volume\n2024-07-01;1;2;1;2;100\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(path), "X"))
    assert str(info.value) == (
        f"{path}: missing date column (date, session, datetime or timestamp): the header is one"
        " column holding ';'; files are read comma-separated"
    )


def test_a_european_csv_with_decimal_commas_says_what_separator_is_read(tmp_path: Path) -> None:
    """A file written with `;` and decimal commas (a European spreadsheet's CSV) splits its
    rows at the commas: the error says the header is one column holding ';', as for a file
    without decimal commas (it said only "6 fields but the header has 1")."""
    path = tmp_path / "euro.csv"
    path.write_text("Date;Open;High;Low;Close;Volume\n2024-07-01;1,5;2,5;1,25;2,5;100\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(path), "X"))
    assert str(info.value) == (
        f"{path}, line 2: 5 fields but the header has 1 (the header is one column holding ';';"
        " files are read comma-separated)"
    )


COMMENT_HINT = (
    "line 1 starts with '#': comment lines are not skipped, and it is taken for the header;"
    " remove it, or the '#' before a header"
)


@pytest.mark.parametrize(
    ("first", "said"),
    [
        ("# downloaded from Yahoo", f", line 2: 2 fields but the header has 1 ({COMMENT_HINT})"),
        (
            "# downloaded from Yahoo, 2024",
            f": missing date column (date, session, datetime or timestamp): {COMMENT_HINT}",
        ),
    ],
    ids=["one field", "with a comma"],
)
def test_a_comment_line_first_is_said_to_be_taken_for_the_header(
    tmp_path: Path, first: str, said: str
) -> None:
    """A `#` comment before the header fails the file saying comment lines are not skipped,
    whether it reads as a header of one field or of several. (It said only "line 2: 2 fields
    but the header has 1", or that the date column is missing.)"""
    path = write(tmp_path, "x.csv", f"{first}\ndate,close\n2024-07-01,1\n")
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(path, "X"))
    assert str(info.value) == f"{path}{said}"


def test_a_comment_line_in_a_minute_or_short_interest_file_is_said_so_too(
    tmp_path: Path,
) -> None:
    """A minute file and a short-interest file with a `#` line first say the same."""
    from monitor.minutefiles import read_minute_files
    from monitor.short_interest_io import read_short_interest

    minutes = write(
        tmp_path, "m.csv", "# SPY\ndatetime,open,high,low,close\n2024-07-01 09:30,1,1,1,1\n"
    )
    with pytest.raises(DataError) as info:
        read_minute_files([DataSpec(minutes, "X")])
    assert str(info.value) == f"{minutes}, line 2: 5 fields but the header has 1 ({COMMENT_HINT})"
    si = write(tmp_path, "si.csv", "# FINRA, 2021\nsymbol,short_interest_date,percent_of_float\n")
    with pytest.raises(DataError) as info:
        read_short_interest(si)
    assert str(info.value) == f"{si}, line 2: 3 fields but the header has 2 ({COMMENT_HINT})"
    header = "#symbol,short_interest_date,percent_of_float"
    si = write(tmp_path, "si1.csv", f"{header}\nGME,2020-12-31,1\n")
    with pytest.raises(DataError) as info:
        read_short_interest(si)
    assert str(info.value) == f"{si}: missing column 'symbol' ({COMMENT_HINT})"
