"""History files as read, kept on disk: replaying the same file again skips parsing it.

Reading a universe file (17,000 symbols x 502 sessions, 55 MB of CSV) into checked daily bars
takes about 0.7 s, a quarter of its replay, and a user replays one file many times while tuning
rules. So `read_many(..., cache=True)` (the `replay` command, unless `--no-cache`) keeps what it
made of each file of at least MIN_BYTES: the accepted bars as Parquet (about 0.05 s to load),
with the rejected rows and counts in the file's metadata.

An entry is named by a digest of the file's path (as given and resolved), size, modification and
status-change times and inode, the reading options and the source of the modules that read files
and keep them (this one included): a file changed in place, read another way or by other code,
gets another entry. Entries live in `<cache_dir>/data/` (see `monitor.calendar.cache_dir`); past
MAX_BYTES the least recently used go. An entry that cannot be read is a miss (and is written
again); a cache that cannot be written is skipped: neither costs more than the parse. Entries
are written in a background thread (`flush` waits for them)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

from monitor.calendar import cache_dir

MIN_BYTES = 1 << 20  # smaller files parse in milliseconds
MAX_BYTES = 2 << 30
_KEY = "market-monitor.datacache"  # the Parquet metadata key holding an entry's info
_pending: list[threading.Thread] = []


def entry_for(path: str, options: dict[str, str | None]) -> Path | None:
    """Where the cache keeps `path` read with `options`; None when it is not cached (no cache
    directory, a small file, or one that cannot be looked at)."""
    where = cache_dir()
    if where is None:
        return None
    try:
        stat = os.stat(path)
        real = os.path.realpath(path)
    except OSError:
        return None
    if stat.st_size < MIN_BYTES:
        return None
    # (ctime too: a write changes it, and unlike mtime no `touch -r`, `cp -p` or `rsync -t`
    # sets it back, so a file edited in place to the same size and mtime is not served stale)
    key = [
        _readers(), path, real, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino,
        options,
    ]  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return where / "data" / f"{Path(real).stem[:40]}-{digest}.parquet"


def load(entry: Path) -> tuple[pl.DataFrame, str] | None:
    """An entry's frame and info, or None when there is no readable entry."""
    try:
        info = pl.read_parquet_metadata(entry)[_KEY]
        frame = pl.read_parquet(entry).rechunk()  # (one piece, as a parse gives)
    except (OSError, KeyError, pl.exceptions.PolarsError):
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # (recently used: evicted last)
    return frame, info


def save(entry: Path, frame: pl.DataFrame, info: str) -> None:
    """Write an entry in the background (atomically: a reader sees no entry or all of it), then
    evict the least recently used past MAX_BYTES. Failures only mean no entry; so does a frame
    of more than half of MAX_BYTES in memory (it would push out everything else, or itself)."""
    if frame.estimated_size() > MAX_BYTES // 2:
        return
    thread = threading.Thread(target=_write, args=(entry, frame, info), name="datacache-save")
    _pending.append(thread)
    thread.start()


def flush() -> None:
    """Wait for entries being written."""
    while _pending:
        _pending.pop().join()


def _write(entry: Path, frame: pl.DataFrame, info: str) -> None:
    with contextlib.suppress(OSError, pl.exceptions.PolarsError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        os.close(fd)
        try:
            frame.write_parquet(
                tmp,
                compression="lz4",
                statistics=False,
                row_group_size=max(frame.height, 1),  # (read back in one piece)
                metadata={_KEY: info},
            )
            os.replace(tmp, entry)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _evict(entry.parent)


def _evict(folder: Path, now: float | None = None) -> None:
    """Remove the least recently used entries past MAX_BYTES, and temporary files an hour old
    (left by a process that died while writing)."""
    now = time.time() if now is None else now
    entries: list[tuple[float, int, Path]] = []
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            stat = path.stat()
            if path.suffix == ".tmp" and now - stat.st_mtime > 3600:
                path.unlink()
            elif path.suffix == ".parquet":
                entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):  # oldest first
        if total <= MAX_BYTES:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size


# The modules that turn a file into bars (tests/test_datacache.py checks that every module of
# the package they import is here).
READERS = (
    "monitor.datafiles",
    "monitor.datalayout",
    "monitor.csvfiles",
    "monitor.core.model",
    "monitor.core.symbols",  # (what a file's symbol may be: bad_symbol past it)
    "monitor.datacache",
    "monitor.calendar",  # (its EARLIEST: the first date a bar may have)
    "monitor.core.sessions",
)


@functools.cache
def _readers() -> str:
    """A digest of the code that turns files into bars and keeps them: an entry made by other
    code (another parse, another layout, another bar schema, another polars) is a miss."""
    digest = hashlib.sha256(pl.__version__.encode())
    for name in READERS:
        module = importlib.import_module(name)
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()
