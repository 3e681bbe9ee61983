"""The NYSE session table kept on disk: the same calendar without importing exchange-calendars."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from monitor import calendar


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MARKET_MONITOR_CACHE_DIR", str(tmp_path))
    calendar._cached.cache_clear()
    yield tmp_path
    calendar._cached.cache_clear()


def test_the_table_is_saved_and_read_back_equal(cache: Path) -> None:
    """The first build saves the table; the next read gives the same sessions, opens, closes
    (early closes included) and weeks."""
    built = calendar.nyse_sessions(dt.date(2024, 1, 2))
    (saved,) = cache.glob("xnys-*.parquet")
    calendar._cached.cache_clear()
    read = calendar.nyse_sessions(dt.date(2024, 1, 2))
    assert read is not built
    assert read.frame.equals(built.frame)
    thanksgiving_friday = dt.date(2024, 11, 29)
    assert read.close_of(thanksgiving_friday) == dt.datetime(2024, 11, 29, 18, tzinfo=dt.UTC)
    assert not read.is_session(dt.date(2024, 7, 4))
    assert saved.stat().st_size > 0


def test_a_broken_cache_file_is_rebuilt(cache: Path) -> None:
    """A truncated or foreign file in the cache is not trusted: the calendar is built again."""
    calendar.nyse_sessions(dt.date(2024, 1, 2))
    (saved,) = cache.glob("xnys-*.parquet")
    saved.write_bytes(b"not parquet")
    calendar._cached.cache_clear()
    again = calendar.nyse_sessions(dt.date(2024, 1, 2))
    assert again.is_session(dt.date(2024, 7, 5))
    assert pl.read_parquet(saved).height == again.frame.height  # and saved anew


def test_an_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache directory that cannot be created costs nothing but speed."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MARKET_MONITOR_CACHE_DIR", str(blocker / "cache"))
    calendar._cached.cache_clear()
    try:
        assert calendar.nyse_sessions(dt.date(2024, 1, 2)).is_session(dt.date(2024, 7, 5))
    finally:
        calendar._cached.cache_clear()


def test_a_cached_replay_does_not_import_exchange_calendars(cache: Path) -> None:
    """With the table on disk, a replay process never imports exchange-calendars (or pandas)."""
    rut = Path(__file__).parent.parent / "monitor" / "demo" / "rut_index_daily_1987_2026.csv"
    rules = Path(__file__).parent.parent / "config" / "rules.toml"
    code = (
        "import sys; from monitor.cli import main; "
        f"main(['replay', '--rules', {str(rules)!r}, '--data', {f'^RUT={rut}'!r}]); "
        "print('xc' if 'exchange_calendars' in sys.modules else 'no-xc', file=sys.stderr)"
    )
    env = {"MARKET_MONITOR_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.count("\n") > 100
    assert [r.stderr.strip().splitlines()[-1] for r in runs] == ["xc", "no-xc"]


def test_no_home_means_no_cache_not_a_relative_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cache variable or a home to expand `~` to, nothing is cached (rather than a
    `~/.cache` made in whatever the working directory is); the calendar still comes."""
    assert calendar.cache_dir({"MARKET_MONITOR_CACHE_DIR": "/x"}) == Path("/x")
    assert calendar.cache_dir({"CACHE_DIRECTORY": "/var/cache/mm:/other"}) == Path("/var/cache/mm")
    assert calendar.cache_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/market-monitor")
    monkeypatch.setattr(calendar.os.path, "expanduser", lambda path: path)  # no home: "~" stays
    assert calendar.cache_dir({}) is None
    for name in ("MARKET_MONITOR_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    calendar._cached.cache_clear()
    try:
        assert calendar.nyse_sessions(dt.date(2024, 1, 2)).is_session(dt.date(2024, 7, 5))
    finally:
        calendar._cached.cache_clear()
    assert list(tmp_path.iterdir()) == []
