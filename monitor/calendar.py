"""Build the NYSE (XNYS) session calendar for a date range (exchange-calendars, cached).

exchange-calendars brings pandas and takes about half a second to import, more than a replay of
^RUT takes. So the session table it gives (dates, opens, closes) is also kept on disk, one
Parquet file per exchange-calendars version and date range, in `$MARKET_MONITOR_CACHE_DIR`, or
systemd's `$CACHE_DIRECTORY`, or `$XDG_CACHE_HOME/market-monitor` (`~/.cache/market-monitor`).
A cache that cannot be read or written is skipped: the calendar is then built as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib
import os
import tempfile
import threading
from importlib import metadata
from pathlib import Path

import polars as pl

from monitor.core.sessions import Sessions

EARLIEST = dt.date(1900, 1, 1)
CALENDAR = "XNYS"


def nyse_sessions(first: dt.date, last: dt.date | None = None) -> Sessions:
    """XNYS sessions from a little before `first` to a year past `last` (or past today)."""
    today = dt.datetime.now(dt.UTC).date()
    start = max(EARLIEST, dt.date(first.year, 1, 1))
    end_year = max(last or today, today).year + 1
    return _cached(start, dt.date(end_year, 12, 31))


def cache_dir(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path | None:
    """Where session tables are kept; None when there is no such place (no usable home)."""
    for name in ("MARKET_MONITOR_CACHE_DIR", "CACHE_DIRECTORY"):
        if environ.get(name):
            return Path(environ[name].split(":")[0])
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]) / "market-monitor"
    home = Path(os.path.expanduser("~"))  # "~" itself when there is no home to expand to
    return home / ".cache" / "market-monitor" if home.is_absolute() else None


def warm_up() -> threading.Thread | None:
    """With no session table of this exchange-calendars version on disk yet, start importing
    exchange-calendars in a thread (say, while a history file is read); else None."""
    where = cache_dir()
    with contextlib.suppress(OSError):
        if where is not None and any(where.glob(f"{_prefix()}*.parquet")):
            return None
    thread = threading.Thread(
        target=importlib.import_module, args=("exchange_calendars",), daemon=True
    )
    thread.start()
    return thread


def _prefix() -> str:
    """Session table files' names start with the calendar and the exchange-calendars version."""
    try:
        version = metadata.version("exchange-calendars")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{CALENDAR.lower()}-{version}-"


@functools.lru_cache(maxsize=4)
def _cached(start: dt.date, end: dt.date) -> Sessions:
    where = cache_dir()
    path = where / f"{_prefix()}{start}-{end}.parquet" if where else None
    if path is not None:
        with contextlib.suppress(OSError, pl.exceptions.PolarsError):
            return Sessions.from_table(CALENDAR, pl.read_parquet(path))
    import exchange_calendars as xc

    sessions = Sessions(xc.get_calendar(CALENDAR, start=start.isoformat(), end=end.isoformat()))
    if path is not None:
        with contextlib.suppress(OSError, pl.exceptions.PolarsError):
            _save(sessions.frame.select("session", "open_ts", "close_ts"), path)
    return sessions


def _save(table: pl.DataFrame, path: Path) -> None:
    """Write atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        table.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
