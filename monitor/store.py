"""The daemon's state on disk: daily bar history (Parquet) and the engine's state (JSON).

Writes are atomic (temporary file, fsync, rename), so a crash mid-write leaves the previous
snapshot intact. The outbox (SQLite) lives in the same folder, owned by the publisher.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import polars as pl

from monitor.core.engine import EngineState
from monitor.core.model import DAILY_SCHEMA, empty
from monitor.errors import ConfigError

BARS = "bars_daily.parquet"
STATE = "engine_state.json"
OUTBOX = "outbox.sqlite"


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

    def load_bars(self) -> pl.DataFrame:
        """Daily bars saved so far (empty on a fresh store)."""
        file = self.path / BARS
        if not file.exists():
            return empty(DAILY_SCHEMA)
        return pl.read_parquet(file).cast(DAILY_SCHEMA)  # type: ignore[arg-type]

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
        return msgspec.json.decode(file.read_bytes(), type=EngineState)

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
