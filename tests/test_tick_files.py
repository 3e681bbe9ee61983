"""Tick files: read (`monitor.tickfiles`), published by `feed-replay` in the generic feed's tick
shape, and streamed by a `replay` feed into the daemon's engine, which builds the bars."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import uuid
from pathlib import Path

import aiomqtt
import msgspec
import polars as pl
import pytest

from monitor import config as cfg
from monitor.core.model import FeedBatch, Tick, ticks_frame
from monitor.datafiles import DataSpec
from monitor.errors import DataError
from monitor.feeds.generic import decode_generic
from monitor.minutefiles import is_minute_file, read_minutes
from monitor.service import Daemon, run
from monitor.tickfiles import is_tick_file, read_tick_files, read_ticks
from tests.conftest import DATA, ROOT
from tests.test_commands import cli

pytestmark = pytest.mark.integration

TICKS = DATA / "ticks_2024-07-16.csv"
HEADER = "symbol,ts,price,size,id"


def utc(text: str) -> dt.datetime:
    """An instant of 2024-07-16, `HH:MM:SS[.f]` in UTC."""
    return dt.datetime.fromisoformat(f"2024-07-16T{text}+00:00")


# TICKS as they are meant: New York times (EDT, UTC-4) in UTC, in time order, file order for
# equal times (B2 before B3, A7 before A8; B4, on the line before A5, first at 13:31:30).
WANT = [
    Tick("AAA", utc("13:30:00.250"), 10.00, 100.0, "A1"),
    Tick("BBB", utc("13:30:00.250"), 20.00, 50.0, "B1"),
    Tick("AAA", utc("13:30:12.5"), 10.05, 200.0, "A2"),
    Tick("AAA", utc("13:30:41.000123"), 9.98, 300.0, "A3"),
    Tick("BBB", utc("13:30:59"), 20.10, 25.0, "B2"),
    Tick("BBB", utc("13:30:59"), 20.05, 75.0, "B3"),
    Tick("AAA", utc("13:31:05"), 10.02, 100.0, "A4"),
    Tick("BBB", utc("13:31:30"), 19.95, 40.0, "B4"),
    Tick("AAA", utc("13:31:30"), 10.10, 150.0, "A5"),
    Tick("AAA", utc("13:31:59.999"), 10.07, 100.0, "A6"),
    Tick("BBB", utc("13:32:00"), 19.90, 10.0, "B5"),
    Tick("AAA", utc("13:32:15"), 10.12, 500.0, "A7"),
    Tick("AAA", utc("13:32:15"), 10.15, 100.0, "A8"),
    Tick("BBB", utc("13:32:45"), 20.00, 60.0, None),
    Tick("AAA", utc("19:59:30"), 10.40, 1000.0, "A9"),
    Tick("BBB", utc("19:59:58.5"), 20.30, 800.0, "B6"),
]


async def feed_replay(*args: str) -> tuple[int, str, list[bytes], float]:
    """Run `feed-replay ARGS` to a topic of its own on the loopback Mosquitto: its exit code,
    stderr (the topic as TOPIC), every message it published (as many as it says) and the
    seconds from the first message's arrival to the last's."""
    topic = f"mm-ticks-{uuid.uuid4().hex[:8]}/ticks"
    got: list[tuple[float, bytes]] = []

    async def read(sub: aiomqtt.Client) -> None:
        async for message in sub.messages:
            assert isinstance(message.payload, bytes)
            got.append((time.monotonic(), message.payload))

    async with aiomqtt.Client("127.0.0.1", 1883) as sub, asyncio.TaskGroup() as tg:
        await sub.subscribe(topic, qos=1)
        reader = tg.create_task(read(sub), name="subscriber")
        res = await asyncio.to_thread(cli, "feed-replay", *args, "--topic", topic)
        said = re.search(r"^published (\d+) ticks", res.stderr, re.MULTILINE)
        want = int(said.group(1)) if res.returncode == 0 and said else 0
        async with asyncio.timeout(10):
            while len(got) < want:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        reader.cancel()
    took = got[-1][0] - got[0][0] if got else 0.0
    return res.returncode, res.stderr.replace(topic, "TOPIC"), [m for _, m in got], took


def decoded_ticks(messages: list[bytes]) -> pl.DataFrame:
    """The ticks the daemon's generic MQTT feed decodes from the messages, in their order (a
    message it rejects fails the test)."""
    batches = [decode_generic(m, feed="test") for m in messages]
    assert [r for b in batches for r in b.rejections] == []
    assert all(b.minute_bars.height == b.daily_bars.height == 0 for b in batches)
    return pl.concat([b.ticks for b in batches])


def test_a_tick_file_is_read_in_time_order_with_new_york_times() -> None:
    """The shipped tick file reads as its ticks: naive times in New York time, one with an
    offset as given, microseconds kept, a blank id none, sorted by time and in file order
    among equal times; it counts as a minute file, whose bars are its ticks' bars."""
    assert is_tick_file(TICKS) and is_minute_file(TICKS)
    assert read_ticks(DataSpec(str(TICKS))).equals(ticks_frame(WANT))
    bars = read_minutes(DataSpec(str(TICKS)))
    assert bars.filter(pl.col("symbol") == "BBB").head(1).rows() == [
        ("BBB", utc("13:30:00"), 20.00, 20.10, 20.00, 20.05, 150.0)
    ]
    assert bars.height == 8


def test_parquet_a_given_symbol_and_a_volume_column_read_as_csv_does(tmp_path: Path) -> None:
    """A Parquet tick file (typed times and integer ids), and one without a symbol column
    whose size is called `volume`, read as `SYMBOL=PATH`, give the ticks the CSV gives."""
    frame = ticks_frame(WANT).with_columns(
        pl.col("id").str.slice(1).cast(pl.Int64, strict=False).alias("id")
    )
    parquet = tmp_path / "ticks.parquet"
    frame.write_parquet(parquet)
    want = ticks_frame(WANT).with_columns(pl.col("id").str.slice(1))
    assert read_ticks(DataSpec(str(parquet))).equals(want)
    single = tmp_path / "aaa.csv"
    single.write_text(
        "Time,Price,Volume\n2024-07-16 09:30:01,10.5,100\n2024-07-16 09:30:00,10.4,\n"
    )
    assert read_ticks(DataSpec(str(single), "AAA")).rows() == [
        ("AAA", utc("13:30:00"), 10.4, 0.0, None),
        ("AAA", utc("13:30:01"), 10.5, 100.0, None),
    ]


def test_a_daily_file_with_a_price_column_is_no_tick_file(tmp_path: Path) -> None:
    """Dates without times and a `price` column are a daily file missing its close (the daily
    reader says so), and a file with a close is bars whatever else it has: no tick files."""
    daily = tmp_path / "daily.csv"
    daily.write_text("date,price\n2024-07-15,10\n2024-07-16,11\n")
    bars = tmp_path / "bars.csv"
    bars.write_text("datetime,price,close\n2024-07-16 09:30:00,10,10\n")
    assert (is_tick_file(daily), is_tick_file(bars)) == (False, False)


async def test_feed_replay_publishes_ticks_the_generic_feed_decodes_to_the_same_ticks() -> None:
    """`feed-replay` of a tick file publishes one generic tick message per tick, in time order
    (file order among equal times), which the daemon's MQTT feed decodes to the file's ticks,
    microseconds and trade ids included."""
    code, stderr, got, _ = await feed_replay("--data", str(TICKS))
    assert (code, stderr) == (0, "published 16 ticks to TOPIC\n")
    assert msgspec.json.decode(got[0]) == {
        "symbol": "AAA", "ts": 1721136600250, "price": 10.0, "size": 100.0, "id": "A1"
    }  # fmt: skip
    assert msgspec.json.decode(got[13]) == {
        "symbol": "BBB", "ts": 1721136765000, "price": 20.0, "size": 60.0
    }  # fmt: skip
    assert decoded_ticks(got).equals(ticks_frame(WANT))


async def test_feed_replay_paces_ticks_by_their_times_with_speed() -> None:
    """With `--speed`, ticks are spaced by their times divided by the speed, as minute bars
    are: the file's 6.5 hours at 10,000 times real time arrive over at least 2.3 seconds."""
    code, _, got, took = await feed_replay("--data", str(TICKS), "--speed", "10000")
    assert (code, len(got)) == (0, 16)
    assert took >= 2.3


async def test_bad_rows_of_a_tick_file_are_rejected_counted_and_named(tmp_path: Path) -> None:
    """Bad prices (NaN, infinite, zero, negative), a negative or infinite size, a blank price,
    symbol or time, a symbol a terminal would run, and a tick read before are not published:
    counted by reason and named on stderr, as a minute file's are; the rest is published."""
    data = tmp_path / "x.csv"
    rows = [
        "AAA,2024-07-16 09:30:00,10,100,1",  # line 2
        "AAA,2024-07-16 09:30:01,NaN,100,2",  # 3: bad_price
        "AAA,2024-07-16 09:30:02,inf,100,3",  # 4: bad_price
        "AAA,2024-07-16 09:30:03,0,100,4",  # 5: bad_price
        "AAA,2024-07-16 09:30:04,-1,100,5",  # 6: bad_price
        "AAA,2024-07-16 09:30:05,10,-5,6",  # 7: bad_size
        "AAA,2024-07-16 09:30:06,10,inf,7",  # 8: bad_size
        "AAA,2024-07-16 09:30:07,,100,8",  # 9: missing_price
        ",2024-07-16 09:30:08,10,100,9",  # 10: missing_symbol
        "AAA,,10,100,10",  # 11: missing_time
        "A\x1b]0;x\x07,2024-07-16 09:30:09,10,100,11",  # 12: bad_symbol
        "AAA,2024-07-16 09:30:00,10,100,1",  # 13: duplicate of line 2
        "AAA,2024-07-16 09:30:00,10,100,12",  # 14: another trade at that time and price
    ]
    data.write_text("\n".join([HEADER, *rows]) + "\n")
    code, stderr, got, _ = await feed_replay("--data", str(data))
    assert (code, stderr.splitlines()) == (
        0,
        [
            "market-monitor: rows rejected or fixed: bad_price=4, bad_size=2, bad_symbol=1, "
            "duplicate=1, missing_price=1, missing_symbol=1, missing_time=1",
            f"market-monitor: the first rows rejected: {data}:3 AAA (bad_price), "
            f"{data}:4 AAA (bad_price), {data}:5 AAA (bad_price), {data}:6 AAA (bad_price), "
            f"{data}:7 AAA (bad_size), and 6 more; of rows with the same symbol and date, the "
            "first is kept",
            "published 2 ticks to TOPIC",
        ],
    )
    at = utc("13:30:00")
    assert decoded_ticks(got).equals(
        ticks_frame([Tick("AAA", at, 10.0, 100.0, "1"), Tick("AAA", at, 10.0, 100.0, "12")])
    )
    loaded = read_tick_files([DataSpec(str(data))])
    assert [(r.reason, r.raw.rsplit(":", 1)[1]) for r in loaded.rejections[5:]] == [
        ("bad_size", "8"), ("missing_price", "9"), ("missing_symbol", "10"),
        ("missing_time", "11"), ("bad_symbol", "12"), ("duplicate", "13"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("AAA,2024-07-16 09:30:01,ten,100,2", "line 3, column 'price': cannot parse 'ten'"),
        ("AAA,2024-07-16 09:30:01,10,many,2", "line 3, column 'size': cannot parse 'many'"),
        ("AAA,yesterday,10,100,2", "line 3, column 'ts': cannot parse 'yesterday' as a time"),
        ("AAA,1721136600000,10,100,2", "line 3, column 'ts': cannot parse '1721136600000'"),
    ],
    ids=["price", "size", "time", "epoch ms"],
)
async def test_a_malformed_cell_fails_the_tick_file_naming_line_and_column(
    tmp_path: Path, row: str, where: str
) -> None:
    """A word where a number or a time belongs (or an epoch number for a time) exits 65 naming
    the file, line and column, and publishes nothing; the replay feed's reader refuses it too."""
    data = tmp_path / "x.csv"
    data.write_text(f"{HEADER}\nAAA,2024-07-16 09:30:00,10,100,1\n{row}\n")
    code, stderr, got, _ = await feed_replay("--data", str(data))
    assert (code, got) == (65, [])
    assert stderr.startswith(f"market-monitor: data error: {data}, {where}")
    with pytest.raises(DataError) as raised:
        read_ticks(DataSpec(str(data)))
    assert f"market-monitor: data error: {raised.value}\n" == stderr


def ticks_config(tmp_path: Path) -> Path:
    """A daemon whose replay feed streams the shipped tick file and stops when done."""
    conf = tmp_path / "ticks.toml"
    conf.write_text(
        f"""
[store]
path = "{tmp_path / "store"}"
[[feeds]]
kind = "replay"
name = "ticks"
data = ["{TICKS}"]
speed = 1000000
exit_when_done = true
[redis]
url = "redis://127.0.0.1:6379/0"
stream = "mm-ticks-{uuid.uuid4().hex[:8]}"
[rules]
file = "{ROOT / "config" / "rules.toml"}"
[http]
port = 0
"""
    )
    return conf


async def test_a_replay_feed_of_ticks_builds_the_bars_the_engine_builds_from_them(
    tmp_path: Path,
) -> None:
    """A `replay` feed of a tick file streams its ticks (not bars) into the daemon's engine,
    whose minute bars and session bars are those an Engine fed the same ticks in one batch
    builds; the session's bar closes with its last minute."""
    from monitor.calendar import nyse_sessions
    from monitor.core.engine import Engine
    from monitor.core.rules.spec import RulesFile

    oracle = Engine(RulesFile(), nyse_sessions(dt.date(2024, 1, 1)))
    batch = FeedBatch.empty("oracle")
    batch.ticks = ticks_frame(WANT)
    assert oracle.ingest(batch) == []
    step = oracle.advance(utc("21:00:00"))
    want_minutes = step.minute_bars.sort("symbol", "start")
    assert want_minutes.height == 8
    assert want_minutes.row(4) == ("BBB", utc("13:30:00"), 20.0, 20.1, 20.0, 20.05, 150.0)
    ready: list[Daemon] = []
    code = await run(cfg.load(ticks_config(tmp_path)), install_signals=False, on_ready=ready.append)
    assert code == 0
    daemon = ready[0]
    assert daemon.counters.get("feed_ticks", feed="ticks") == 16
    assert daemon.counters.total("ticks_in") == 16
    assert daemon.counters.total("rejections") == 0
    got = daemon.engine.minutes.sort("symbol", "start")
    assert got.equals(want_minutes.select(got.columns))
    daily = daemon.engine.daily.sort("symbol")
    assert daily.rows() == step.daily_bars.sort("symbol").rows()
    assert daily.rows() == [
        ("AAA", dt.date(2024, 7, 16), 10.0, 10.4, 9.98, 10.4, 2550.0),
        ("BBB", dt.date(2024, 7, 16), 20.0, 20.3, 19.9, 20.3, 1060.0),
    ]


def test_a_daily_file_of_prices_stamped_at_midnight_is_no_tick_file(tmp_path: Path) -> None:
    """`date,price` rows stamped `2024-07-15 00:00:00`, `2024-07-16 00:00:00` are a daily file
    (whose reader asks for a close), not ticks at midnight, as before tick files; times of day
    that differ are ticks. Before the fix feed-replay published two midnight ticks."""
    from monitor.tickfiles import is_tick_file

    path = tmp_path / "d.csv"
    path.write_text("date,price\n2024-07-15 00:00:00,10\n2024-07-16 00:00:00,11\n")
    assert not is_tick_file(path)
    ticks = tmp_path / "t.csv"
    ticks.write_text("date,price\n2024-07-15 10:00:00,10\n2024-07-15 10:00:01,11\n")
    assert is_tick_file(ticks)


def test_a_tick_file_s_prices_and_sizes_no_market_has_are_rejected(tmp_path: Path) -> None:
    """A price of a billion dollars or more (1e12) and a size of a quadrillion shares or more
    (1e20, 1e308) are `bad_price` and `bad_size`, as a feed rejects them: two sizes of 1e308
    made a bar, and a session bar in the store, of infinite volume."""
    data = tmp_path / "x.csv"
    data.write_text(
        HEADER + "\nAAA,2024-07-16 09:30:00,10,100,1\nAAA,2024-07-16 09:30:01,1e12,100,2\n"
        "AAA,2024-07-16 09:30:02,10,1e20,3\nAAA,2024-07-16 09:30:03,10,1e308,4\n"
    )
    loaded = read_tick_files([DataSpec(str(data))])
    assert loaded.counts == {"bad_price": 1, "bad_size": 2}
    assert loaded.ticks.get_column("id").to_list() == ["1"]


def test_a_parquet_column_of_lists_or_durations_is_a_data_error(tmp_path: Path) -> None:
    """A tick file's price column of lists, or its time column of durations, and a minute
    file's open of lists: a DataError naming the file and column (exit 65), not a polars
    InvalidOperationError traceback."""
    from monitor.errors import DataError
    from monitor.minutefiles import read_minutes
    from monitor.tickfiles import read_ticks

    times = ["2024-07-16 09:30:00", "2024-07-16 09:31:00"]
    lists = tmp_path / "lists.parquet"
    pl.DataFrame({"symbol": ["A", "A"], "ts": times, "price": [[1.0], [2.0]]}).write_parquet(lists)
    spans = tmp_path / "spans.parquet"
    durations = [dt.timedelta(seconds=1), dt.timedelta(seconds=2)]
    pl.DataFrame({"symbol": ["A", "A"], "ts": durations, "price": [1.0, 2.0]}).write_parquet(spans)
    bars = tmp_path / "bars.parquet"
    pl.DataFrame(
        {"symbol": ["A", "A"], "start": times, "open": [[1.0], [2.0]], "high": [1.0, 2.0],
         "low": [1.0, 2.0], "close": [1.0, 2.0], "volume": [1.0, 2.0]}
    ).write_parquet(bars)  # fmt: skip
    for path, read, said in (
        (lists, read_ticks, "column 'price': row 1: holds List(Float64) values, not numbers"),
        (spans, read_ticks, "column 'ts': row 1: holds Duration(time_unit='us') values"),
        (bars, read_minutes, "column 'open': row 1: holds List(Float64) values, not numbers"),
    ):
        with pytest.raises(DataError, match=re.escape(said)):
            read(DataSpec(str(path)))


def test_a_replay_feed_streams_a_minute_file_s_bar_of_a_minute_its_ticks_cover_too(
    tmp_path: Path,
) -> None:
    """A replay feed of a minute file and a tick file both holding AAA's 09:30: the feed
    streams the ticks and the minute file's bar (as feed-replay publishes both), and leaves
    out only the bars its tick file gave. Before, the minute file's bar was dropped, silently."""
    import types

    from monitor.config import FeedConfig
    from monitor.feed_wiring import replay_ticks
    from monitor.minutefiles import read_minutes

    bars = tmp_path / "bars.csv"
    bars.write_text(
        "symbol,start,open,high,low,close,volume\nAAA,2024-07-16 09:30:00,10,10.5,9.5,10,1000\n"
        "AAA,2024-07-16 09:31:00,10,10,10,10,5\n"
    )
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(
        HEADER + "\nAAA,2024-07-16 09:30:01,10,100,1\nAAA,2024-07-16 09:30:02,10.2,200,2\n"
    )
    specs = [DataSpec(str(bars)), DataSpec(str(ticks))]
    minutes = pl.concat([read_minutes(s) for s in specs])  # (as the replay data reads them)
    daemon = types.SimpleNamespace(config=types.SimpleNamespace(base_dir=str(tmp_path)))
    fc = FeedConfig(kind="replay", data=[str(bars), str(ticks)])
    rest, streamed = replay_ticks(daemon, fc, minutes)  # type: ignore[arg-type]
    assert rest is not None and streamed is not None
    assert rest.select("start", "volume").rows() == [
        (utc("13:30:00"), 1000.0),
        (utc("13:31:00"), 5.0),
    ]
    assert streamed.get_column("id").to_list() == ["1", "2"]
