"""Times in minute and tick files (`monitor.filetimes`): every offset ISO 8601 allows read as
given, dates with slashes refused rather than guessed, and minute bars told from daily bars by
the whole time column, as written and in New York time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from monitor.calendar import nyse_sessions
from monitor.cli import main
from monitor.datafiles import DataSpec, read_many
from monitor.errors import DataError
from monitor.minutefiles import is_minute_file, read_minute_files, read_minutes
from monitor.replay_command import read_intraday
from monitor.store import Store
from monitor.tickfiles import is_tick_file, read_ticks
from tests.conftest import DATA, RULES, RUT
from tests.test_service import write_config

SPY = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
BARS = "datetime,open,high,low,close,volume"
TICKS = "ts,price,size"
ISO = "times are ISO 8601, YYYY-MM-DD HH:MM[:SS][offset]"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def write(path: Path, header: str, cells: list[str], row: str) -> Path:
    """A CSV file of `header` with a row per cell (`cell,row`), or, for a `.parquet` path, the
    same as a Parquet file of text columns."""
    lines = [header, *(f"{cell},{row}" for cell in cells)]
    if path.suffix != ".parquet":
        path.write_text("\n".join(lines) + "\n")
        return path
    text = path.with_suffix(".csv")
    text.write_text("\n".join(lines) + "\n")
    pl.read_csv(text, infer_schema=False).write_parquet(path)
    return path


def times_read(path: Path) -> list[dt.datetime]:
    """The UTC times a minute file's bars, or a tick file's ticks, are read at."""
    if is_tick_file(path):
        return read_ticks(DataSpec(str(path), "X")).get_column("ts").to_list()
    return read_minutes(DataSpec(str(path), "X")).get_column("start").to_list()


KINDS = [("x.csv", BARS, "10,11,9,10,100"), ("x.csv", TICKS, "10,100")]
KINDS += [("x.parquet", header, row) for _, header, row in KINDS]
KIND_IDS = ["minutes csv", "ticks csv", "minutes parquet", "ticks parquet"]


@pytest.mark.parametrize(("name", "header", "row"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "cell",
    [
        "2024-11-04 14:30:00+00",
        "2024-11-04 09:30:00-05",
        "2024-11-04 20:00:00+0530",
        "2024-11-04T14:30:00z",
        "2024-11-04T14:30:00Z",
        "2024-11-04 09:30:00-05:00",
        "2024-11-04 09:30:00",
    ],
)
def test_every_offset_is_read_as_given(
    tmp_path: Path, name: str, header: str, row: str, cell: str
) -> None:
    """A time with an offset of hours alone (`+00`, as PostgreSQL prints it) or a lowercase
    `z` is the instant it says, as `+00:00` and `Z` are: 14:30 UTC, the open of 2024-11-04.
    (They were read as New York times after polars had applied the offset: 19:30 UTC.)"""
    path = write(tmp_path / name, header, [cell], row)
    assert times_read(path) == [utc("2024-11-04 14:30")]


def postgres_copy(path: Path) -> Path:
    """SPY's minute file with its times in UTC as PostgreSQL prints them: `... 14:30:00+00`."""
    frame = pl.read_csv(SPY).with_columns(
        pl.col("datetime")
        .str.to_datetime("%Y-%m-%d %H:%M:%S%:z")
        .dt.convert_time_zone("UTC")
        .dt.strftime("%Y-%m-%d %H:%M:%S+00")
    )
    frame.write_csv(path)
    return path


def test_a_minute_file_in_utc_with_hour_offsets_backfills_the_sessions_of_the_original(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backfill` of SPY's minutes written `+00` stores the sessions of the original file
    (03-08 and 03-11), and no bar of Saturday 03-09. (Its times were read as New York times
    4-5 hours late: wrong bars, and the evening of 03-08 refused as not_a_session.)"""
    stored = []
    for name, path in (("original", SPY), ("postgres", postgres_copy(tmp_path / "pg.csv"))):
        (tmp_path / name).mkdir()
        config = write_config(tmp_path / name, f"mm-pg-offset-{name}")
        code = main(["backfill", "--config", str(config), "--data", f"SPY={path}"])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "not_a_session" not in err
        stored.append(Store(tmp_path / name / "store").load_bars().sort("session"))
    assert stored[0].get_column("session").to_list() == [dt.date(2024, 3, 8), dt.date(2024, 3, 11)]
    assert stored[1].equals(stored[0])


@pytest.mark.parametrize(("name", "header", "row"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    "cells",
    [["11/01/2024 09:30", "11/04/2024 09:30"], ["11/12/2024 09:30", "11/13/2024 09:31"]],
    ids=["days up to 12", "then 13"],
)
def test_dates_with_slashes_are_refused_at_the_first_cell(
    tmp_path: Path, name: str, header: str, row: str, cells: list[str]
) -> None:
    """US dates (`MM/DD/YYYY HH:MM`) are refused at their first cell, saying why and which
    syntax is read, whether or not a day past 12 shows the order. (They were read day first:
    11/01 as January 11th, or refused at the first day past 12 only.)"""
    path = write(tmp_path / name, header, cells, row)
    assert is_tick_file(path) == (header == TICKS) and is_minute_file(path)
    with pytest.raises(DataError) as raised:
        times_read(path)
    column = header.split(",")[0]
    where = f"line 2, column {column!r}:" if name == "x.csv" else f"column {column!r}: row 1:"
    assert str(raised.value) == (
        f"{path}, {where} cannot parse {cells[0]!r} as a time (the year last: whether the"
        f" month or the day comes first is not guessed): {ISO}"
    )


def test_replay_of_a_minute_file_of_us_dates_exits_65_naming_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replay` of minutes stamped `11/01/2024 09:30` exits 65 (bad data) naming the file,
    line and column, and stores nothing read day first."""
    path = write(tmp_path / "us.csv", BARS, ["11/01/2024 09:30", "11/01/2024 09:31"], "1,1,1,1,1")
    (tmp_path / "rules.toml").write_text("")
    code = main(["replay", "--rules", str(tmp_path / "rules.toml"), "--data", f"X={path}"])
    assert (code, capsys.readouterr().err) == (
        65,
        f"market-monitor: data error: {path}, line 2, column 'datetime': cannot parse "
        f"'11/01/2024 09:30' as a time (the year last: whether the month or the day comes "
        f"first is not guessed): {ISO}\n",
    )


def long_file(path: Path, header: str, stamps: list[str], symbols: int) -> Path:
    """A long file of `symbols` symbols, a row of each at each of `stamps` in turn."""
    rows = [f"S{s:03d},{stamp},10,10,10,10,100" for stamp in stamps for s in range(symbols)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_long_daily_file_stamped_at_midnight_is_daily_bars(tmp_path: Path) -> None:
    """600 symbols' daily bars with a `timestamp` at midnight, sorted by date, are daily bars:
    one time of day on several dates, over the whole column. (The first 500 rows, one date,
    made them minute bars, each refused as outside_session.)"""
    stamps = [f"2024-07-0{d} 00:00:00" for d in (1, 2, 3)]
    path = long_file(tmp_path / "u.csv", "symbol,timestamp,open,high,low,close,volume", stamps, 600)
    spec = DataSpec(str(path))
    assert (is_minute_file(path), read_intraday([spec], end=None)) == (False, ([spec], None))
    assert read_many([spec]).bars.height == 1800


@pytest.mark.parametrize("symbols", [600, 1200])
def test_a_long_minute_file_with_a_date_column_sorted_by_time_is_minute_bars(
    tmp_path: Path, symbols: int
) -> None:
    """Hundreds of symbols' minutes in a `date` column, sorted by time, are minute bars: three
    times of day over the whole column (1,200 symbols: more rows at 09:30 than the first rows
    looked at alone). (The first 500 rows, all 09:30, made them daily bars: each symbol's
    first minute its session.)"""
    stamps = [f"2024-07-01 09:3{m}:00" for m in (0, 1, 2)]
    header = "symbol,date,open,high,low,close,volume"
    path = long_file(tmp_path / "u.csv", header, stamps, symbols)
    assert is_minute_file(path)
    bars = read_minute_files([DataSpec(str(path))]).bars
    assert (bars.height, bars.get_column("start").unique().sort().to_list()) == (
        3 * symbols,
        [utc(f"2024-07-01 13:3{m}") for m in (0, 1, 2)],
    )


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_new_york_midnight_in_utc_across_a_clock_change_is_daily_bars(
    tmp_path: Path, kind: str
) -> None:
    """Alpaca's daily bars, stamped at New York's midnight in UTC (05:00Z in winter, 04:00Z in
    summer), are daily bars of the dates written: one time of day in New York. (Two times of
    day in UTC made them minute bars.) As text or as a Parquet column of UTC datetimes."""
    stamps = ["2024-03-07T05:00:00Z", "2024-03-08T05:00:00Z", "2024-03-11T04:00:00Z"]
    path = write(tmp_path / "x.csv", "timestamp,open,high,low,close,volume", stamps, "1,1,1,1,1")
    if kind == "parquet":
        frame = pl.read_csv(path).with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))
        assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
        path = tmp_path / "x.parquet"
        frame.write_parquet(path)
    assert not is_minute_file(path)
    sessions = read_many([DataSpec(str(path), "X")]).bars.get_column("session").to_list()
    assert sessions == [dt.date(2024, 3, 7), dt.date(2024, 3, 8), dt.date(2024, 3, 11)]


@pytest.mark.parametrize("layout", ["date first", "date last", "crlf", "quoted"])
def test_a_wide_daily_file_stamped_at_midnight_is_daily_bars(tmp_path: Path, layout: str) -> None:
    """A wide file of 1,200 symbols' closes with a `timestamp` at midnight is daily bars: its
    time column, read line by line (first or last, lines ended by CRLF) or, in a file with
    quotes, by polars, is one time of day on several dates."""
    symbols = [f"S{s:04d}" for s in range(1200)]
    stamps = [f"2024-07-0{d} 00:00:00" for d in (1, 2, 3)]
    if layout == "quoted":
        stamps = [f'"{stamp}"' for stamp in stamps]
    rows = [["timestamp", *symbols], *([stamp, *["10.5"] * len(symbols)] for stamp in stamps)]
    if layout == "date last":
        rows = [[*row[1:], row[0]] for row in rows]
    end = "\r\n" if layout == "crlf" else "\n"
    path = tmp_path / "wide.csv"
    path.write_text(end.join(",".join(row) for row in rows) + end)
    assert not is_minute_file(path)
    assert read_many([DataSpec(str(path))]).bars.height == 3600


@pytest.mark.parametrize(("name", "header", "row"), KINDS, ids=KIND_IDS)
def test_dates_written_year_first_with_slashes_are_read(
    tmp_path: Path, name: str, header: str, row: str
) -> None:
    """`2024/11/01 09:30` (year first: no order to guess, as some exporters write it) reads
    as `2024-11-01 09:30` does, in every kind of file; so does a daily file's `2024/11/01`."""
    slashes = write(tmp_path / name, header, ["2024/11/01 09:30", "2024/11/04 09:31"], row)
    dashes = write(
        tmp_path / f"dashes_{name}", header, ["2024-11-01 09:30", "2024-11-04 09:31"], row
    )
    assert is_minute_file(slashes) and times_read(slashes) == times_read(dashes)
    with_t = write(tmp_path / f"t_{name}", header, ["2024/11/01T13:30Z", "2024/11/04T14:31Z"], row)
    assert times_read(with_t) == times_read(dashes)  # (09:30 New York in UTC: EDT, then EST)
    daily = tmp_path / "daily.csv"
    daily.write_text("date,close\n2024/11/01,1\n2024/11/04,2\n")
    read = read_many([DataSpec(str(daily), "X")]).bars
    assert read.get_column("session").to_list() == [dt.date(2024, 11, 1), dt.date(2024, 11, 4)]


def stamped_at_closes(path: Path, zone: str, kind: str = "csv") -> Path:
    """The shipped ^RUT's 2024 rows, each stamped at its session's close (13:00 New York on
    the early closes of 2024-07-03 and 2024-11-29, else 16:00), as `zone` writes it: New York
    time with its offset, UTC with `Z`, or (Parquet) a column of UTC datetimes."""
    rut = pl.read_csv(RUT, try_parse_dates=True).filter(pl.col("Date").dt.year() == 2024)
    closes = nyse_sessions(dt.date(2024, 1, 1)).frame.select(
        pl.col("session").alias("Date"), "close_ts"
    )
    close = pl.col("close_ts").dt.convert_time_zone(zone)
    stamped = rut.join(closes, on="Date").with_columns(close.alias("Date")).drop("close_ts")
    if kind == "parquet":
        stamped.write_parquet(path)
    else:
        form = "%Y-%m-%dT%H:%M:%SZ" if zone == "UTC" else "%Y-%m-%dT%H:%M:%S%:z"
        stamped.with_columns(pl.col("Date").dt.strftime(form)).write_csv(path)
    return path


@pytest.mark.parametrize(
    ("name", "zone"),
    [("ny.csv", "America/New_York"), ("utc.csv", "UTC"), ("utc.parquet", "UTC")],
)
def test_a_daily_file_stamped_at_each_sessions_close_is_daily_bars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, zone: str
) -> None:
    """^RUT's 2024 bars stamped at each session's real close (13:00 on early closes, 16:00
    else; in New York time, in UTC, or as Parquet UTC datetimes) are daily bars, and replay
    fires the alerts of the same file with dates alone. (Two times of day made it a minute
    file: each row outside_session, "No alerts.", exit 0.)"""
    path = stamped_at_closes(tmp_path / name, zone, kind=Path(name).suffix[1:])
    plain = tmp_path / "plain.csv"
    pl.read_csv(RUT).filter(pl.col("Date").str.starts_with("2024")).write_csv(plain)
    assert not is_minute_file(path)
    said = []
    for data in (plain, path):
        argv = ["replay", "--rules", str(RULES), "--data", f"^RUT={data}", "--format", "table"]
        assert main([*argv, "--from", "2024-07-01", "--to", "2024-07-31"]) == 0
        said.append(capsys.readouterr())
    assert said[1] == said[0]
    assert "Russell 2000 rose 11.5% in 5 sessions" in said[0].out


def test_a_date_column_at_each_sessions_close_is_daily_bars(tmp_path: Path) -> None:
    """A `Date` column of New York times, 16:00 but 13:00 on the early close of 2024-07-03,
    holds daily bars of the dates written; 16:00 on one date and 13:00 on another that is no
    early close is a minute bar's time and not."""
    days = ["2024-07-01 16:00", "2024-07-02 16:00", "2024-07-03 13:00", "2024-07-05 16:00"]
    path = write(tmp_path / "x.csv", "Date,open,high,low,close,volume", days, "1,1,1,1,1")
    assert not is_minute_file(path)
    sessions = read_many([DataSpec(str(path), "X")]).bars.get_column("session").to_list()
    assert sessions == [dt.date(2024, 7, d) for d in (1, 2, 3, 5)]
    days[1] = "2024-07-02 13:00"
    assert is_minute_file(write(tmp_path / "y.csv", "Date,open,high,low,close", days, "1,1,1,1"))


CLOSE_STAMPED = """timestamp,open,high,low,close,volume
2024-06-26T16:00:00-04:00,100,100,100,100,1000
2024-06-27T16:00:00-04:00,100,100,100,100,1000
2024-06-28T17:00:00-04:00,101,101,101,101,1000
2024-07-01T16:00:00-04:00,102,102,102,102,1000
"""


def test_a_file_read_as_minutes_with_no_bar_in_regular_hours_is_refused_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daily file stamped at the close but on one day at 17:00 is read as minute bars; none
    lies in regular hours, so replay and backfill exit 65 saying it was read as minute bars and
    what to write instead. (Replay said "No alerts." and exit 0, every row outside_session.)"""
    path = tmp_path / "x.csv"
    path.write_text(CLOSE_STAMPED)
    said = (
        f"market-monitor: data error: {path}: read as minute bars (its times of day, New York"
        " time, are 16:00, 17:00), but none of its 4 bars on sessions is within their regular"
        " hours (from the open to the close): each would be rejected as outside_session. If"
        " it holds daily bars, write its dates alone (YYYY-MM-DD), or stamp each at midnight"
        " or its session's close\n"
    )
    (tmp_path / "rules.toml").write_text("")
    code = main(["replay", "--rules", str(tmp_path / "rules.toml"), "--data", f"X={path}"])
    assert (code, capsys.readouterr().err) == (65, said)
    conf = write_config(tmp_path, "mm-outside-hours")
    assert main(["backfill", "--config", str(conf), "--data", f"X={path}"]) == 65
    assert capsys.readouterr().err == said
    assert Store(tmp_path / "store").load_bars().is_empty()


def test_minutes_with_one_in_regular_hours_are_not_refused(tmp_path: Path) -> None:
    """A minute file with a bar in regular hours among after-hours ones is read: its
    after-hours bars are the engine's to count, as before."""
    path = tmp_path / "x.csv"
    path.write_text(CLOSE_STAMPED.replace("2024-06-27T16:00", "2024-06-27T15:59"))
    bars = read_minute_files([DataSpec(str(path), "X")], regular_hours=True).bars
    assert bars.height == 4
