"""History files as read, kept on disk (monitor.datacache): the same bars, rejections and counts
as a parse, without the parse; a changed file, a broken entry or an unwritable cache is never
trusted."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from monitor import datacache, datafiles
from monitor.datafiles import DataSpec, LoadedBars, read_many

ROOT = Path(__file__).resolve().parent.parent

LONG = (
    "symbol,Date,Open,High,Low,Close,Volume\n"
    "B,2024-07-02,10,11,9,10.5,100\n"
    "A,2024-07-01,10,11,9,10,100\n"
    "A,2024-07-03,10,11,9,-1,100\n"  # bad_price
    "A,2024-07-02,10,11,9,11,0\n"  # unsorted
    "B,2024-07-01,10,9,11,10,5\n"  # bad_bar
    "B,2024-07-02,10,11,9,10.7,7\n"  # duplicate
)
WIDE = "Date,AAA,BBB\n2024-07-01,10,20\n2024-07-02,,21\n2024-07-03,0,22\n"  # a blank, a bad price


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own, caching files of any size."""
    where = tmp_path / "cache"
    monkeypatch.setenv("MARKET_MONITOR_CACHE_DIR", str(where))
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    return where


def read(path: Path, **options: object) -> LoadedBars:
    loaded = read_many([DataSpec(str(path))], cache=True, **options)  # type: ignore[arg-type]
    datacache.flush()
    return loaded


def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on a file that is parsed fails the test."""

    def parse(path: str) -> None:
        raise AssertionError(f"{path} was parsed")

    monkeypatch.setattr(datafiles, "_read_table", parse)


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "data").glob("*.parquet"))


@pytest.mark.parametrize(("name", "text"), [("long.csv", LONG), ("wide.csv", WIDE)])
def test_a_file_read_again_comes_from_the_cache_unchanged(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    """The second read parses nothing and gives the bars, rejected rows (with their lines) and
    counts of a parse; a wide file's bars keep open, high and low equal to the close."""
    path = tmp_path / name
    path.write_text(text)
    parsed = read_many([DataSpec(str(path))])
    first = read(path)
    assert len(entries(cache)) == 1
    no_parsing(monkeypatch)
    again = read(path)
    for loaded in (first, again):
        assert_frame_equal(loaded.bars, parsed.bars)
        assert loaded.rejections == parsed.rejections
        assert loaded.counts == parsed.counts
    assert parsed.rejections and parsed.counts


def test_the_options_are_part_of_the_entry(cache: Path, tmp_path: Path) -> None:
    """The same file read up to another date, or for one symbol, is another entry."""
    path = tmp_path / "long.csv"
    path.write_text(LONG)
    whole = read(path)
    assert len(entries(cache)) == 1
    early = read(path, end=dt.date(2024, 7, 1))
    one = read_many([DataSpec(str(path), "B")], cache=True)
    datacache.flush()
    assert len(entries(cache)) == 3
    assert early.bars["session"].max() == dt.date(2024, 7, 1)
    assert whole.bars["session"].max() == dt.date(2024, 7, 2)
    assert set(one.bars["symbol"]) == {"B"} != set(whole.bars["symbol"])


def test_a_file_with_rows_dated_after_today_is_not_kept(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows rejected as after today (`date_out_of_range`) may be history tomorrow: such a file
    is parsed each time, never served from an entry of the day it was read."""
    path = tmp_path / "x.csv"
    path.write_text("Date,Close\n2024-07-01,10\n2999-01-02,11\n")
    first = read(path)
    assert first.counts == {"date_out_of_range": 1}
    assert entries(cache) == []
    monkeypatch.setattr(datafiles, "latest_session", lambda: dt.date(2999, 12, 31))
    assert read(path).bars["session"].to_list() == [dt.date(2024, 7, 1), dt.date(2999, 1, 2)]


def test_a_changed_file_is_parsed_again(cache: Path, tmp_path: Path) -> None:
    """Rewritten in place (same size), the file is read anew, not taken from its old entry."""
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    read(path)
    path.write_text(WIDE.replace("20\n", "30\n"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    closes = read(path).bars.filter(pl.col("symbol") == "BBB")["close"].to_list()
    assert closes == [30.0, 21.0, 22.0]


def test_a_file_edited_to_its_old_size_and_mtime_is_parsed_again(
    cache: Path, tmp_path: Path
) -> None:
    """Rewritten in place to the same size, its modification time then set back (`cp -p`,
    `rsync -t`, `touch -r` do so): the change of status time tells, and the file is read
    anew (the entry used to be served, stale)."""
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    before = path.stat()
    read(path)
    time.sleep(0.01)  # (a status time that moves on)
    path.write_text(WIDE.replace("20\n", "30\n"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino,
    )  # fmt: skip
    closes = read(path).bars.filter(pl.col("symbol") == "BBB")["close"].to_list()
    assert closes == [30.0, 21.0, 22.0]


def test_a_broken_entry_is_a_miss_and_is_written_again(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry that is not Parquet, or Parquet without its info, is not trusted: the file is
    parsed, and the entry made good for the next read."""
    path = tmp_path / "long.csv"
    path.write_text(LONG)
    parsed = read(path)
    (entry,) = entries(cache)
    for junk in (b"not parquet", None):
        if junk is None:
            pl.DataFrame({"x": [1]}).write_parquet(entry)  # Parquet, but no info
        else:
            entry.write_bytes(junk)
        assert_frame_equal(read(path).bars, parsed.bars)
        assert datacache.load(entry) is not None
    no_parsing(monkeypatch)
    assert read(path).rejections == parsed.rejections


def test_an_unwritable_cache_costs_only_the_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache directory that cannot be made: the file is parsed each time, nothing fails."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MARKET_MONITOR_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    assert read(path).bars.height == read_many([DataSpec(str(path))]).bars.height == 4
    assert not (blocker / "cache").exists()


def test_a_file_too_large_for_the_cache_is_not_kept(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bars of more than half the cache's size are not written (they would push out every
    other entry, or themselves); the file is still read."""
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    monkeypatch.setattr(datacache, "MAX_BYTES", 64)
    assert read(path).bars.height == 4
    assert not (cache / "data").exists()


def test_small_files_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below MIN_BYTES a parse is cheaper than an entry: none is made."""
    monkeypatch.setenv("MARKET_MONITOR_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "long.csv"
    path.write_text(LONG)
    read(path)
    assert not (tmp_path / "cache").exists()


def test_the_least_recently_used_entries_go_first(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_BYTES the entries used longest ago are removed, and so is a temporary file a
    dead writer left an hour ago; a fresh one (a writer at work) stays."""
    paths = []
    for name in ("a", "b", "c"):
        paths.append(tmp_path / f"{name}.csv")
        paths[-1].write_text(WIDE)
        read(paths[-1])
    folder = cache / "data"
    old, fresh = folder / "dead.tmp", folder / "busy.tmp"
    old.write_text("x")
    fresh.write_text("x")
    os.utime(old, (0, 0))
    made = entries(cache)  # a-..., b-..., c-...
    assert len(made) == 3
    for i, entry in enumerate(made):
        os.utime(entry, (1000 + i, 1000 + i))
    read(paths[0])  # a hit: a's entry is now the most recently used
    monkeypatch.setattr(datacache, "MAX_BYTES", 2 * max(e.stat().st_size for e in made))
    datacache._evict(folder)
    assert entries(cache) == [made[0], made[2]]
    assert not old.exists() and fresh.exists()


def test_replay_uses_the_cache_unless_told_not_to(tmp_path: Path) -> None:
    """`replay` keeps a large file as read and prints the same alerts from it; `--no-cache`
    neither reads nor writes the cache."""
    lines = ["Date," + ",".join(f"S{i:04d}" for i in range(400))]
    price = [10.0 + i % 7 for i in range(400)]
    for day in pl.date_range(pl.date(2023, 1, 2), pl.date(2024, 6, 28), eager=True):
        if day.weekday() < 5:
            moves = [((i * 7 + day.toordinal()) % 11 - 5) / 200 for i in range(len(price))]
            price = [p * (1.0 + m) for p, m in zip(price, moves, strict=True)]
            lines.append(day.isoformat() + "," + ",".join(f"{p:.4f}" for p in price))
    data = tmp_path / "universe.csv"
    data.write_text("\n".join(lines) + "\n")
    assert data.stat().st_size > datacache.MIN_BYTES
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nid = "surge"\nkind = "surge"\nuniverse = true\ntimeframe = "1d"\n'
        "window = 5\nmin_return = 0.05\n"
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "MARKET_MONITOR_CACHE_DIR": str(cache)}
    argv = [sys.executable, "-m", "monitor", "replay", "--rules", str(rules), "--data", str(data)]

    def run(*extra: str) -> str:
        done = subprocess.run([*argv, *extra], env=env, capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return done.stdout

    plain = run("--no-cache")
    assert not (cache / "data").exists()
    first, second = run(), run()
    assert len(list((cache / "data").glob("*.parquet"))) == 1
    assert plain == first == second and plain.count("\n") > 1000


def test_the_entry_key_covers_every_module_that_reads_files() -> None:
    """Every module of the package that the readers import (but two aside) is hashed into
    the key, so that a change to any of them, after a module is split say, makes old entries a
    miss."""
    import ast
    import importlib

    def imported(name: str) -> set[str]:
        source = Path(importlib.import_module(name).__file__ or "").read_text()
        found: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return {m for m in found if m.startswith("monitor.") and _is_module(m)}

    def _is_module(name: str) -> bool:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
        return True

    # (exceptions raise, nothing is cached of them; the calendar module says where the cache is)
    aside = {"monitor.errors"}
    needed = set().union(*(imported(m) for m in datacache.READERS)) - aside
    assert needed <= set(datacache.READERS)


def test_a_note_of_the_read_comes_from_the_cache_too(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file without an adjusted close read with adjusted=True says so read from the cache
    as when parsed."""
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    first = read(path, adjusted=True)
    no_parsing(monkeypatch)
    again = read(path, adjusted=True)
    assert again.notes == first.notes != []
