"""The short-interest file: a malformed cell is an error naming the file, the line (as an editor
counts it) and the column, as for the bar files; a well-formed row the rules cannot use is left
out, counted and named, and the file's other figures are used."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from monitor.errors import DataError
from monitor.short_interest_io import read_short_interest, rejected_line

HEAD = "symbol,short_interest_date,percent_of_float\n"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("AAA,2021-01-15,abc\n", "line 2, column 'percent_of_float': not a number"),
        ("AAA,2021-01-15,5\nBBB,2021-01-15,12%\n", "line 3, column 'percent_of_float'"),
        ("AAA,15/01/2021,5\n", "line 2, column 'short_interest_date': not a YYYY-MM-DD date"),
        ('"B\nX",2021-01-15,5\nCCC,2021-01-15,abc\n', "line 4, column 'percent_of_float'"),
        ("AAA,2021-01-15,5,9\n", "line 2: 4 fields but the header has 3"),
    ],
    ids=["word", "percent sign", "date", "quoted newline", "ragged"],
)
def test_a_malformed_cell_fails_the_file_and_is_named(
    tmp_path: Path, body: str, where: str
) -> None:
    path = tmp_path / "si.csv"
    path.write_text(HEAD + body)
    with pytest.raises(DataError) as caught:
        read_short_interest(path)
    assert str(caught.value).startswith(f"{path}, {where}")


def test_unusable_rows_are_left_out_counted_and_named(tmp_path: Path) -> None:
    """A well-formed row the rules cannot use (a negative figure, as the vendor's file has from
    a negative public float; NaN, infinity; no symbol or date) is left out with its reason and
    line, and the other rows' figures are used."""
    path = tmp_path / "si.csv"
    path.write_text(
        HEAD
        + "AAA,2021-01-15,5\n"
        + "SFUN,2021-03-31,-0.6\n"  # (shared/data/short_interest_us_2020-11_2021-06.csv:75975)
        + '"B\nX",2021-01-15,7\n'  # (a quoted name over two lines: lines 4 and 5)
        + "CCC,2021-01-15,nan\n"
        + "DDD,2021-01-15,inf\n"
        + ",2021-01-15,5\n"
        + "EEE,,5\n"
        + "FFF,2021-01-15,\n"
    )
    read = read_short_interest(path)
    assert read.figures.select("symbol", "percent_of_float").rows() == [
        ("AAA", 5.0),
        ("FFF", None),  # (no figure: the rule's unknown_short_interest decides)
    ]
    assert [(r.reason, r.symbol, r.raw) for r in read.rejected] == [
        ("bad_short_interest", "SFUN", f"{path}:3"),
        ("bad_symbol", "B\nX", f"{path}:4"),  # (a newline in it; its line counted right)
        ("bad_short_interest", "CCC", f"{path}:6"),
        ("bad_short_interest", "DDD", f"{path}:7"),
        ("missing_symbol", None, f"{path}:8"),
        ("missing_date", "EEE", f"{path}:9"),
    ]
    assert rejected_line(read.rejected, shown=2) == (
        "6 rows left out (bad_short_interest=3, bad_symbol=1, missing_date=1,"
        f" missing_symbol=1): {path}:3 SFUN (bad_short_interest), {path}:4 B\\nX (bad_symbol),"
        " and 4 more"
    )


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("AAA,2021-01-15,-10\nBBB,2021-01-15,inf\n", "line 2, column 'percent_of_float': not a"),
        (",2021-01-15,5\n", "line 2, column 'symbol': empty"),
        ("AAA,,5\n", "line 2, column 'short_interest_date': empty"),
    ],
    ids=["figures", "symbol", "date"],
)
def test_a_file_without_a_usable_row_is_an_error(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "si.csv"
    path.write_text(HEAD + body)
    with pytest.raises(DataError) as caught:
        read_short_interest(path)
    assert str(caught.value).startswith(f"{path}, {where}")
    assert str(caught.value).endswith("(no row of the file is usable)")


def test_headers_match_as_the_bar_files_do_and_an_empty_figure_is_none(tmp_path: Path) -> None:
    path = tmp_path / "si.csv"
    path.write_text(
        " Symbol , short_interest_date ,percent_of_float\nAAA,2021-01-15,5\nBBB,2021-01-15,\n"
    )
    rows = read_short_interest(path).figures.select("symbol", "percent_of_float").rows()
    assert rows == [("AAA", 5.0), ("BBB", None)]


def test_headers_as_people_write_them_and_symbols_without_spaces(tmp_path: Path) -> None:
    """`Short Interest Date` is the column `short_interest_date`, as `Adj Close` is the bar
    files' `adjclose`; a symbol's surrounding spaces go (` GME` is GME, as in the bar files)."""
    path = tmp_path / "si.csv"
    path.write_text("Symbol,Short Interest Date,Percent Of Float\n GME ,2020-12-31,138.4\n")
    assert read_short_interest(path).figures.rows() == [("GME", dt.date(2020, 12, 31), 138.4)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "symbol,SYMBOL,short_interest_date,percent_of_float\nA,B,2021-01-15,5\n",
            "two columns for 'symbol': 'symbol' and 'SYMBOL' (keep one)",
        ),
        (HEAD, "empty file: a header and no rows"),
    ],
    ids=["two symbol columns", "header only"],
)
def test_a_file_that_says_nothing_or_two_things_is_an_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "si.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_short_interest(path)
    assert str(caught.value) == f"{path}: {message}"


def test_figures_that_look_like_fractions_are_said_to(tmp_path: Path) -> None:
    """A file whose every figure is at most 1 (138.4% written 1.384, say) would let no squeeze
    fire without a word: it is read, and said to look like fractions; a file of a few low
    figures is not."""
    path = tmp_path / "si.csv"
    path.write_text(HEAD + "".join(f"S{i},2021-01-15,{i / 20:.2f}\n" for i in range(20)))
    read = read_short_interest(path)
    assert read.figures.height == 20
    assert read.said() == [
        "every percent_of_float is at most 1 (the largest 0.95): the column is a percentage"
        " of the float (138.4 for 138.4%), not a fraction"
    ]
    path.write_text(HEAD + "".join(f"S{i},2021-01-15,{i / 20:.2f}\n" for i in range(19)))
    assert read_short_interest(path).said() == []
    path.write_text(HEAD + "".join(f"S{i},2021-01-15,{i / 10:.2f}\n" for i in range(20)))
    assert read_short_interest(path).said() == []


def test_a_symbol_the_bar_files_refuse_is_left_out_here_too(tmp_path: Path) -> None:
    """A symbol with an escape sequence (or past 64 characters) is `bad_symbol`, as in the bar
    files: left out, counted and named."""
    path = tmp_path / "si.csv"
    path.write_text(
        HEAD + "AAA,2021-01-15,5\nB\x1b[31mX,2021-01-15,7\n" + "Y" * 65 + ",2021-01-15,1\n"
    )
    read = read_short_interest(path)
    assert read.figures.get_column("symbol").to_list() == ["AAA"]
    assert [(r.reason, r.raw) for r in read.rejected] == [
        ("bad_symbol", f"{path}:3"),
        ("bad_symbol", f"{path}:4"),
    ]


def test_a_repeated_symbol_and_date_with_the_same_figures_is_a_counted_duplicate(
    tmp_path: Path,
) -> None:
    """A row repeating an earlier one's symbol, settlement date and figure (138.40 is 138.4)
    is left out as `duplicate`, named with its line, and the first is kept. (Repeats were
    taken silently, the last one read winning.)"""
    path = tmp_path / "si.csv"
    path.write_text(HEAD + "GME,2020-12-31,138.4\nAMC,2020-12-31,20\nGME,2020-12-31,138.40\n")
    read = read_short_interest(path)
    assert read.figures.rows() == [
        ("GME", dt.date(2020, 12, 31), 138.4),
        ("AMC", dt.date(2020, 12, 31), 20.0),
    ]
    assert read.said() == [
        f"1 row left out (duplicate=1): {path}:4 GME (duplicate); of rows with the same"
        " symbol, date and figures, the first is kept"
    ]


@pytest.mark.parametrize(
    ("figures", "said"),
    [(("138.4", "5.0"), "'138.4'"), (("5.0", "138.4"), "'5.0'"), (("138.4", ""), "'138.4'")],
    ids=["smaller later", "larger later", "blank later"],
)
def test_a_repeated_symbol_and_date_with_other_figures_is_an_error(
    tmp_path: Path, figures: tuple[str, str], said: str
) -> None:
    """GME's 2020-12-31 given twice with different figures (either order, or one blank)
    fails the file at the second line, naming the first and its figure: which is right
    cannot be told. (The last one read was used: 5.0 after 138.4 hid both January
    squeezes.)"""
    path = tmp_path / "si.csv"
    path.write_text(HEAD + "".join(f"GME,2020-12-31,{f}\n" for f in figures))
    with pytest.raises(DataError) as caught:
        read_short_interest(path)
    assert str(caught.value) == (
        f"{path}, line 3, column 'percent_of_float': GME 2020-12-31 is given again with other"
        f" figures (line 2: {said}): which is right cannot be told; keep one"
    )


def test_a_repeat_with_other_shares_sold_short_is_an_error_too(tmp_path: Path) -> None:
    """A repeat whose shares_sold_short differs (the percentage the same) is refused as
    well: the figures differ."""
    path = tmp_path / "si.csv"
    path.write_text(
        "symbol,short_interest_date,percent_of_float,shares_sold_short\n"
        "GME,2020-12-31,138.4,68000000\nGME,2020-12-31,138.4,1000\n"
    )
    with pytest.raises(DataError, match="line 3, column 'percent_of_float': GME 2020-12-31"):
        read_short_interest(path)


@pytest.mark.parametrize("name", ["si.parquet", "si.csv"])
def test_a_parquet_file_is_said_to_be_read_as_csv_only(tmp_path: Path, name: str) -> None:
    """A Parquet file given as the short-interest file, whatever its name, is refused saying
    this file is read as CSV only. (It said Parquet is read when named .parquet, as si.parquet
    was.)"""
    path = tmp_path / name
    pl.DataFrame({"symbol": ["GME"], "short_interest_date": ["2020-12-31"]}).write_parquet(path)
    with pytest.raises(DataError) as caught:
        read_short_interest(path)
    assert str(caught.value) == (
        f"{path}: not CSV text but a Parquet file (this file is read as CSV only: write it as CSV)"
    )
