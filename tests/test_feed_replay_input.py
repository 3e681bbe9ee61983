"""What `feed-replay` makes of its input files: a byte-order mark, a daily file with a `timestamp`
column, bad values in a minute file and naive minute times, each read as `replay` reads files."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest

from monitor.datafiles import DataSpec, read_many
from monitor.errors import DataError
from monitor.feed_replay import bar_messages
from monitor.minutefiles import read_minutes
from tests.conftest import DATA
from tests.test_commands import cli

pytestmark = pytest.mark.integration

SPY = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
HEADER = "datetime,open,high,low,close,volume"


async def feed_replay(*args: str) -> tuple[int, str, list[bytes]]:
    """Run `feed-replay ARGS` to a topic of its own on the loopback Mosquitto: its exit code,
    stderr and every message it published (as many as it says it published)."""
    topic = f"mm-input-{uuid.uuid4().hex[:8]}/bars"
    async with aiomqtt.Client("127.0.0.1", 1883) as sub:
        await sub.subscribe(topic, qos=1)
        res = await asyncio.to_thread(cli, "feed-replay", *args, "--topic", topic)
        said = re.search(r"^published (\d+) bars", res.stderr, re.MULTILINE)
        got: list[bytes] = []
        if res.returncode == 0 and said and int(said.group(1)):
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    got.append(message.payload)
                    if len(got) == int(said.group(1)):
                        break
    return res.returncode, res.stderr.replace(topic, "TOPIC"), got


def decoded(messages: list[bytes]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(m) for m in messages]


def minute(start: str, o: float, h: float, lo: float, c: float, v: float) -> dict[str, Any]:
    """The message of a minute bar of X starting at `start` (ISO 8601 with an offset)."""
    ms = int(dt.datetime.fromisoformat(start).timestamp() * 1000)
    return {
        "symbol": "X", "timeframe": "1m", "start": ms, "open": o, "high": h, "low": lo,
        "close": c, "volume": v,
    }  # fmt: skip


async def test_a_byte_order_mark_before_the_header_changes_nothing(tmp_path: Path) -> None:
    """A minute file saved with a UTF-8 byte-order mark publishes the same minute bars as the
    file without it (it used to be taken for a daily file: one `1d` bar, the rest duplicates)."""
    lines = SPY.read_text().splitlines(keepends=True)[:11]
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text("".join(lines))
    marked.write_text("\ufeff" + "".join(lines), encoding="utf-8")
    want = await feed_replay("--data", f"SPY={plain}")
    got = await feed_replay("--data", f"SPY={marked}")
    assert got == want
    assert want[:2] == (0, "published 10 bars to TOPIC\n")
    assert {m["timeframe"] for m in decoded(want[2])} == {"1m"}


@pytest.mark.parametrize(
    "text",
    [
        "timestamp,open,high,low,close,volume\n"
        "2024-07-15,10,11,9,10,100\n2024-07-16,10,12,10,11,200\n",
        "datetime,open,high,low,close,volume\n"
        "2024-07-15 00:00:00,10,11,9,10,100\n2024-07-16 00:00:00,10,12,10,11,200\n",
    ],
    ids=["dates-in-timestamp", "one-time-of-day-in-datetime"],
)
async def test_a_daily_file_with_a_timestamp_column_is_published_as_replay_reads_it(
    tmp_path: Path, text: str
) -> None:
    """A daily file whose date column is called `timestamp` or `datetime` (dates without a time,
    or all at one time of day) is published as the daily bars `replay` reads from it, not as
    minute bars at midnight."""
    data = tmp_path / "daily.csv"
    data.write_text(text)
    code, stderr, got = await feed_replay("--data", f"X={data}")
    assert (code, stderr) == (0, "published 2 bars to TOPIC\n")
    assert got == bar_messages(read_many([DataSpec(str(data), "X")]).bars)
    assert decoded(got)[0] == {
        "symbol": "X", "timeframe": "1d", "session": "2024-07-15", "open": 10.0, "high": 11.0,
        "low": 9.0, "close": 10.0, "volume": 100.0,
    }  # fmt: skip


async def test_a_time_column_of_dates_is_an_error_not_minute_bars_at_midnight(
    tmp_path: Path,
) -> None:
    """Dates without a time in a `time` column (not a name `replay` reads dates from) exit 65
    saying which columns a daily file's dates may be in, and what to name that one; nothing is
    published."""
    data = tmp_path / "daily.csv"
    data.write_text("time,open,high,low,close,volume\n2024-07-15,10,11,9,10,100\n")
    assert await feed_replay("--data", f"X={data}") == (
        65,
        f"market-monitor: data error: {data}: missing date column "
        "(date, session, datetime or timestamp): 'time' holds dates alone, or one time of day "
        "on every date (or each session's close), as a daily file's dates: name it date\n",
        [],
    )


async def test_bad_rows_of_a_minute_file_are_rejected_counted_and_named(tmp_path: Path) -> None:
    """NaN, infinite, zero and negative prices, high below low, a negative volume and a minute
    seen twice are not published: counted by reason and named on stderr as `replay` names a
    daily file's; the good minutes are published."""
    data = tmp_path / "x.csv"
    rows = [
        "2024-02-20 09:30:00-05:00,10,11,9,10,100",  # line 2
        "2024-02-20 09:31:00-05:00,NaN,-1,5,inf,7",  # 3: bad_price
        "2024-02-20 09:32:00-05:00,10,9,11,10,100",  # 4: high below low
        "2024-02-20 09:33:00-05:00,10,11,9,10,-5",  # 5: negative volume
        "2024-02-20 09:34:00-05:00,0,11,9,10,100",  # 6: bad_price
        "2024-02-20 09:30:00-05:00,10,11,9,10,100",  # 7: duplicate
        "2024-02-20 09:35:00-05:00,10,11,9,10.5,100",  # 8
    ]
    data.write_text("\n".join([HEADER, *rows]) + "\n")
    code, stderr, got = await feed_replay("--data", f"X={data}")
    assert (code, stderr.splitlines()) == (
        0,
        [
            "market-monitor: rows rejected or fixed: bad_bar=2, bad_price=2, duplicate=1",
            f"market-monitor: the first rows rejected: {data}:3 X (bad_price), "
            f"{data}:4 X (bad_bar), {data}:5 X (bad_bar), {data}:6 X (bad_price), "
            f"{data}:7 X (duplicate); of rows with the same symbol and date, the first is kept",
            "published 2 bars to TOPIC",
        ],
    )
    assert decoded(got) == [
        minute("2024-02-20T09:30:00-05:00", 10.0, 11.0, 9.0, 10.0, 100.0),
        minute("2024-02-20T09:35:00-05:00", 10.0, 11.0, 9.0, 10.5, 100.0),
    ]


async def test_a_word_where_a_number_belongs_is_an_error_naming_the_cell(tmp_path: Path) -> None:
    """A minute file with a word in a number column exits 65 naming the file, line and column
    of the first such cell, and publishes nothing; the daemon's replay feed refuses it too."""
    data = tmp_path / "x.csv"
    rows = ["2024-02-20 09:30:00,10,11,9,10,100", "2024-02-20 09:31:00,NaN,-1,5,inf,abc"]
    data.write_text("\n".join([HEADER, *rows]) + "\n")
    message = f"{data}, line 3, column 'volume': cannot parse 'abc' as a number"
    assert await feed_replay("--data", f"X={data}") == (
        65,
        f"market-monitor: data error: {message}\n",
        [],
    )
    with pytest.raises(DataError) as raised:
        read_minutes(DataSpec(str(data), "X"))
    assert str(raised.value) == message


async def test_naive_minute_times_are_new_york_time(tmp_path: Path) -> None:
    """Minute times without an offset are New York (exchange) times, as in the shipped minute
    files: the naive copy of a file publishes the same starts as the original, either side of
    the change to summer time, and `09:30:00` is the open (14:30 UTC in February), not 04:30."""
    lines = SPY.read_text().splitlines()
    picked = [lines[0], *lines[1:4], *[x for x in lines if x.startswith("2024-03-11 09:3")]]
    with_offsets, naive = tmp_path / "offsets.csv", tmp_path / "naive.csv"
    with_offsets.write_text("\n".join(picked) + "\n")
    naive.write_text("\n".join(re.sub(r"[+-]\d\d:\d\d,", ",", x, count=1) for x in picked))
    assert not re.search(r"[+-]\d\d:\d\d,", naive.read_text())
    want = await feed_replay("--data", f"SPY={with_offsets}")
    assert await feed_replay("--data", f"SPY={naive}") == want
    assert want[:2] == (0, "published 13 bars to TOPIC\n")
    opening = tmp_path / "x.csv"
    opening.write_text(f"{HEADER}\n2024-02-20 09:30:00,10,11,9,10,100\n")
    code, _, got = await feed_replay("--data", f"X={opening}")
    assert (code, decoded(got)) == (
        0,
        [minute("2024-02-20T09:30:00-05:00", 10.0, 11.0, 9.0, 10.0, 100.0)],
    )


@pytest.mark.parametrize(
    ("when", "why"),
    [
        ("2024-03-10 02:30:00", "skipped when New York's clocks went forward"),
        ("2024-11-03 01:30:00", "shown twice when New York's clocks went back"),
    ],
)
def test_a_naive_time_new_york_clocks_skip_or_repeat_is_an_error(
    tmp_path: Path, when: str, why: str
) -> None:
    """A naive minute time that is no single New York time (the daylight-saving changes) is a
    DataError naming its line and column and asking for the offset, not a guess."""
    data = tmp_path / "x.csv"
    data.write_text(f"{HEADER}\n{when},10,11,9,10,100\n")
    with pytest.raises(DataError) as raised:
        read_minutes(DataSpec(str(data), "X"))
    assert str(raised.value) == (
        f"{data}, line 2, column 'datetime': {when!r} is no New York time ({why}): "
        "write it with its UTC offset"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "timestamp,open,high,low,close,volume\n1719840600000,1,1,1,1,1\n",
            "line 2, column 'timestamp': cannot parse '1719840600000' as a time (epoch numbers"
            " are not read as times): times are ISO 8601, YYYY-MM-DD HH:MM[:SS][offset]",
        ),
        (
            "Date,Time,open,high,low,close,volume\n2024-07-01,09:30,1,1,1,1,1\n",
            "line 2, column 'Time': cannot parse '09:30' as a time (a time of day alone: the"
            " date and the time must be in one column): times are ISO 8601,"
            " YYYY-MM-DD HH:MM[:SS][offset]",
        ),
        (
            "Date,Time,open,high,low,close,volume\n11/01/2024,09:30,1,1,1,1,1\n",
            "line 2, column 'Time': cannot parse '09:30' as a time (a time of day alone: the"
            " date and the time must be in one column): times are ISO 8601,"
            " YYYY-MM-DD HH:MM[:SS][offset]",
        ),
    ],
    ids=["epoch ms", "time apart", "time apart, us date"],
)
def test_times_no_date_format_fits_are_an_error_naming_the_cell(
    tmp_path: Path, text: str, where: str
) -> None:
    """Epoch milliseconds, or a time of day apart from its date: polars finds no format for
    any cell and raised (a traceback, exit 1); the first cell is named, as for a word, and
    the message says why: epoch numbers are not read, date and time go in one column."""
    data = tmp_path / "x.csv"
    data.write_text(text)
    with pytest.raises(DataError) as raised:
        read_minutes(DataSpec(str(data), "X"))
    assert str(raised.value) == f"{data}, {where}"


def test_a_minute_files_symbol_a_terminal_would_run_is_rejected(tmp_path: Path) -> None:
    """As in a daily file: a symbol with an escape sequence is a rejected row, `bad_symbol`."""
    from monitor.minutefiles import read_minute_files

    data = tmp_path / "x.csv"
    data.write_text(
        "symbol,datetime,open,high,low,close,volume\n"
        "SPY,2024-03-08 09:30:00-05:00,1,1,1,1,1\n"
        "S\x1b]0;x\x07,2024-03-08 09:30:00-05:00,1,1,1,1,1\n"
    )
    loaded = read_minute_files([DataSpec(str(data))])
    assert loaded.bars.get_column("symbol").to_list() == ["SPY"]
    assert loaded.counts == {"bad_symbol": 1}


def test_a_minute_files_columns_the_reader_does_not_use_may_be_of_any_type(tmp_path: Path) -> None:
    """As for a daily file: a Parquet list column beside the bars is not looked at (the check
    for blank rows cast it to text, and the read failed)."""
    import polars as pl

    path = tmp_path / "m.parquet"
    pl.DataFrame(
        {
            "datetime": ["2024-03-08 09:30:00-05:00", "2024-03-08 09:31:00-05:00"],
            "open": [1.0, 2.0], "high": [1.0, 2.0], "low": [1.0, 2.0], "close": [1.0, 2.0],
            "volume": [5.0, 6.0], "tags": [["a"], []],
        }
    ).write_parquet(path)  # fmt: skip
    assert read_minutes(DataSpec(str(path), "SPY"))["close"].to_list() == [1.0, 2.0]
