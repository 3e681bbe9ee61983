"""The short-interest file: a cell the rules cannot use is an error naming the file, the line
(as an editor counts it) and the column, as for the bar files; not a figure taken as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import DataError
from monitor.short_interest_io import read_short_interest

HEAD = "symbol,short_interest_date,percent_of_float\n"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            "AAA,2021-01-15,10\nBBB,2021-01-15,inf\n",
            "line 3, column 'percent_of_float': not a finite percentage of 0 or more",
        ),
        ("AAA,2021-01-15,nan\n", "line 2, column 'percent_of_float': not a finite percentage"),
        ("AAA,2021-01-15,-10\n", "line 2, column 'percent_of_float': not a finite percentage"),
        ("AAA,2021-01-15,abc\n", "line 2, column 'percent_of_float': not a finite percentage"),
        ("AAA,2021-01-15,10\n,2021-01-15,5\n", "line 3, column 'symbol': empty"),
        ("AAA,,5\n", "line 2, column 'short_interest_date': not a YYYY-MM-DD date"),
        ('"B\nX",2021-01-15,5\nCCC,2021-01-15,abc\n', "line 4, column 'percent_of_float'"),
        ("AAA,2021-01-15,5,9\n", "line 2: 4 fields but the header has 3"),
    ],
    ids=["inf", "nan", "negative", "word", "no symbol", "no date", "quoted newline", "ragged"],
)
def test_a_cell_that_cannot_be_used_is_named(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "si.csv"
    path.write_text(HEAD + body)
    with pytest.raises(DataError) as caught:
        read_short_interest(path)
    assert str(caught.value).startswith(f"{path}, {where}")


def test_headers_match_as_the_bar_files_do_and_an_empty_figure_is_none(tmp_path: Path) -> None:
    path = tmp_path / "si.csv"
    path.write_text(
        " Symbol , short_interest_date ,percent_of_float\nAAA,2021-01-15,5\nBBB,2021-01-15,\n"
    )
    rows = read_short_interest(path).select("symbol", "percent_of_float").rows()
    assert rows == [("AAA", 5.0), ("BBB", None)]
