"""The daemon's state on disk: daily bar history (Parquet) and the engine's state (JSON).

Writes are atomic (temporary file, fsync, rename), so a crash mid-write leaves the previous
snapshot intact. The outbox (SQLite) lives in the same folder, owned by the publisher.

One process writes a store at a time: `run` and `backfill` hold `market-monitor.lock` (see
`Store.lock`), so a second daemon, or a backfill the daemon's next snapshot would overwrite,
stops at once instead.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import msgspec
import polars as pl

from monitor.core.engine import EngineState
from monitor.core.model import DAILY_SCHEMA, empty
from monitor.errors import ConfigError, MonitorError

BARS = "bars_daily.parquet"
STATE = "engine_state.json"
OUTBOX = "outbox.sqlite"
LOCK = "market-monitor.lock"


class StoreError(MonitorError):
    """A file of the store cannot be read or written; the message names it (exit 74)."""


class StoreLocked(StoreError):
    """Another market-monitor process holds the store's lock."""


class Store:
    """A folder holding bars_daily.parquet, engine_state.json and outbox.sqlite."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"store.path: cannot create {self.path}: {exc.strerror}") from None

    @property
    def outbox_path(self) -> Path:
        """Where the publisher keeps its outbox."""
        return self.path / OUTBOX

    def lock(self) -> TextIO:
        """Take the store's lock and return its open file: the lock is held until the file is
        closed (or the process ends, kill -9 included: a stale lock file never blocks a start).
        StoreLocked, naming the holder's pid, when another process holds it."""
        try:
            file = open(self.path / LOCK, "a+")  # noqa: SIM115 (the caller closes it)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot open {LOCK}: {exc.strerror}") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            pid = file.read().strip() or "?"
            file.close()
            raise StoreLocked(
                f"store {self.path}: another market-monitor process (pid {pid}) holds it"
            ) from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        return file

    def load_bars(self) -> pl.DataFrame:
        """Daily bars saved so far (empty on a fresh store)."""
        file = self.path / BARS
        if not file.exists():
            return empty(DAILY_SCHEMA)
        try:
            return pl.read_parquet(file).cast(DAILY_SCHEMA)  # type: ignore[arg-type]
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _unreadable(file, exc) from None

    def save_bars(self, bars: pl.DataFrame) -> None:
        """Replace the saved daily bars (atomically)."""
        self._atomic(BARS, lambda f: bars.select(list(DAILY_SCHEMA)).write_parquet(f))

    def merge_bars(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Upsert `bars` into the saved history by (symbol, session); returns the result."""
        old = self.load_bars()
        both = pl.concat([old, bars.select(list(DAILY_SCHEMA)).cast(DAILY_SCHEMA)])  # type: ignore[arg-type]
        merged = both.unique(["symbol", "session"], keep="last", maintain_order=True).sort(
            "symbol", "session"
        )
        self.save_bars(merged)
        return merged

    def load_state(self) -> EngineState | None:
        """The engine state saved at the last snapshot, if any."""
        file = self.path / STATE
        if not file.exists():
            return None
        try:
            return msgspec.json.decode(file.read_bytes(), type=EngineState)
        except (msgspec.DecodeError, OSError) as exc:
            raise _unreadable(file, exc) from None

    def save_state(self, state: EngineState) -> None:
        """Save the engine state (atomically)."""
        data = msgspec.json.encode(state)
        self._atomic(STATE, lambda f: Path(f).write_bytes(data))

    def _atomic(self, name: str, write: Callable[[str], object]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _unreadable(file: Path, exc: Exception) -> StoreError:
    """A one-line error for a store file that cannot be read (corrupt, truncated, another
    schema): which file, why, and what to do. Not silently ignored: the next snapshot would
    overwrite what a person may still want to recover from it."""
    reason = exc.strerror if isinstance(exc, OSError) else str(exc).strip().splitlines()[0]
    return StoreError(
        f"store file {file} is unreadable ({reason}); move it aside to start without it"
    )
