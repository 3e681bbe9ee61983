"""The daemon's state on disk: daily bar history (Parquet), the engine's state (JSON) and the
bars of the sessions under way (Parquet, see `monitor.intraday`; the ticks accepted since they
were saved are in `journal/`, see `monitor.journal`).

Writes are atomic (temporary file, fsync, rename, fsync of the folder), so a crash or a power
cut mid-write leaves the previous snapshot intact. The outbox (SQLite) lives in the same
folder, owned by the publisher.

One process writes a store at a time: `run` and `backfill` hold `market-monitor.lock` (see
`Store.lock`), so a second daemon, or a backfill the daemon's next snapshot would overwrite,
stops at once instead.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO, overload

import msgspec
import polars as pl

from monitor.core.bar_state import BookState
from monitor.core.engine import EngineState
from monitor.core.model import DAILY_SCHEMA, Alert, empty
from monitor.errors import ConfigError, MonitorError

BARS = "bars_daily.parquet"
STATE = "engine_state.json"
INTRADAY = "bars_intraday.parquet"
STALE_FEEDS = "feeds_stale.json"  # the feeds stale when the daemon last wrote it
MAX_STALE_FEEDS = 1000  # (feeds in a file of feed names: more is not the daemon's file)
OWED_BACKFILLS = "backfills_owed.json"  # the REST backfills owed (see monitor.owed_backfills)
ALERTS_RECENT = "alerts_recent.json"  # the last alerts of the live view (monitor.recent_alerts)
_INTRADAY_META = "market-monitor.intraday"
_INTRADAY_FORMAT = 1
_INTRADAY_PARTS = (
    "closed",
    "open",
    "seen",
    "daily",
    "official",
    "closing",
    "waiting",
    "held",
    "trades",
    "provider_minutes",
    "provider_last",
)
# The bars backfill built of minute bars or ticks and stored, as they were stored: such a bar
# is replaced by one built again (see `Store.upsert_bars`).
BUILT = "bars_built.parquet"
OUTBOX = "outbox.sqlite"
LOCK = "market-monitor.lock"


# Closes within this relative difference are the same close (`Upsert.kept_different`).
_SAME_CLOSE = 1e-9


class Upsert(msgspec.Struct, frozen=True):
    """What `Store.upsert_bars` did: `bars`, the history now saved; `written`, the bars given
    that it took (added, or replacing a stored one); `kept`, the stored bars kept over bars of
    closes only, `kept_different` of them over a close that differs (beyond 1e-9 relative);
    of `written`, `added` were not stored before and `changed` replaced a stored bar with
    other numbers (the others were stored as they are already)."""

    bars: pl.DataFrame
    written: pl.DataFrame
    kept: int
    kept_different: int
    added: int = 0
    changed: int = 0


class StoreError(MonitorError):
    """A file of the store cannot be read or written; the message names it (exit 74)."""


class StoreLocked(StoreError):
    """Another market-monitor process holds the store's lock."""


class Store:
    """A folder holding bars_daily.parquet, engine_state.json, outbox.sqlite, after a backfill
    of minutes bars_built.parquet (see `upsert_bars`) and, while a
    session is under way or from a stop to the next start, bars_intraday.parquet and journal/."""

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
        except OSError as exc:  # (no locks on this file system: NFS without lockd, say)
            file.close()
            raise StoreError(f"store {self.path}: cannot lock {LOCK}: {exc.strerror}") from None
        try:
            file.truncate(0)
            file.write(f"{os.getpid()}\n")
            file.flush()
        except OSError as exc:
            file.close()
            raise StoreError(f"store {self.path}: cannot write {LOCK}: {exc.strerror}") from None
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

    def merge_bars(
        self, bars: pl.DataFrame, *, close_only: pl.Series | None = None
    ) -> pl.DataFrame:
        """Upsert `bars` into the saved history by (symbol, session); returns the result.
        `close_only`: see `upsert_bars`."""
        return self.upsert_bars(bars, close_only=close_only).bars

    def upsert_bars(
        self, bars: pl.DataFrame, *, close_only: pl.Series | None = None, built: bool = False
    ) -> Upsert:
        """Upsert `bars` into the saved history by (symbol, session), a later bar replacing an
        earlier one, except that a bar of closes only (`close_only`, a Boolean Series aligned
        with `bars`: open, high and low are the close, no volume) never replaces a stored bar
        with more than a close (a volume, or an open, high or low of its own): that one is
        kept, and counted. `built`: `bars` are sessions built of minute bars or ticks (by
        `backfill`): they too never replace a stored bar with more than a close (a provider's,
        with its official close), but for one a backfill built (recorded in BUILT, and stored
        as it was built): a corrected minute file's sessions replace the first file's. They
        are recorded in BUILT. Returns the history saved and the counts."""
        old = self.load_bars()
        new = bars.select(list(DAILY_SCHEMA)).cast(DAILY_SCHEMA)  # type: ignore[arg-type]
        kept = kept_different = 0
        recorded = self.load_built() if built else None  # (read once: matched, then extended)
        if recorded is not None:
            close_only = pl.repeat(True, new.height, eager=True)
        if close_only is not None and old.height and close_only.any():
            keys = ["symbol", "session"]
            c = pl.col("close")
            full = pl.col("volume").is_not_null() | pl.any_horizontal(
                pl.col(k) != c for k in ("open", "high", "low")
            )
            stored = old.filter(full)
            if recorded is not None:  # (a bar backfill built, still as built: no provider's)
                ours = stored.join(recorded, on=list(DAILY_SCHEMA), nulls_equal=True)
                stored = stored.join(ours, on=keys, how="anti")
            stored = stored.select(*keys, c.alias("_stored"))
            numbered = new.with_row_index("_i")
            differs = (c - pl.col("_stored")).abs() > _SAME_CLOSE * pl.col("_stored").abs()
            hits = numbered.filter(close_only).join(stored, on=keys)
            hits = hits.select("_i", differs.alias("differs"))
            kept, kept_different = hits.height, int(hits.get_column("differs").sum())
            if kept:
                new = numbered.filter(~pl.col("_i").is_in(hits.get_column("_i"))).drop("_i")
        both = pl.concat([old, new])
        merged = both.unique(["symbol", "session"], keep="last", maintain_order=True).sort(
            "symbol", "session"
        )
        self.save_bars(merged)
        if recorded is not None:
            self._save_built(merged, recorded, new)
        added = new.join(old, on=["symbol", "session"], how="anti").height
        same = new.join(old, on=list(DAILY_SCHEMA), how="semi", nulls_equal=True).height
        return Upsert(merged, new, kept, kept_different, added, new.height - added - same)

    def load_built(self) -> pl.DataFrame:
        """The bars a backfill built of minute bars or ticks and stored, as they were (BUILT;
        empty when there are none)."""
        file = self.path / BUILT
        if not file.exists():
            return empty(DAILY_SCHEMA)
        try:
            frame = pl.read_parquet(file).select(list(DAILY_SCHEMA))
            return frame.cast(DAILY_SCHEMA)  # type: ignore[arg-type]
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _unreadable(file, exc) from None

    def _save_built(
        self, stored: pl.DataFrame, recorded: pl.DataFrame, built: pl.DataFrame
    ) -> None:
        """Record `built` (bars built of minutes just stored) in BUILT beside those `recorded`
        before, keeping only those `stored` (the history saved) still holds as they were."""
        keys = ["symbol", "session"]
        both = pl.concat([recorded, built]).unique(keys, keep="last", maintain_order=True)
        kept = both.join(stored, on=list(DAILY_SCHEMA), how="semi", nulls_equal=True)
        self._atomic(BUILT, lambda f: kept.sort(keys).write_parquet(f))

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

    @property
    def intraday_path(self) -> Path:
        """Where the bars of the sessions under way wait for the next start."""
        return self.path / INTRADAY

    def save_intraday(
        self,
        state: BookState,
        journal: int | None = None,
        minute_watermark: dt.datetime | None = None,
    ) -> None:
        """Save the bar builder's sessions (atomically): one Parquet file, a `part` column
        telling closed minute bars, open bars and duplicate keys apart, the rest in its
        key-value metadata, with `journal`, the last journal segment the state covers (see
        `monitor.journal`), and `minute_watermark`, the engine's when the state was taken
        (the minutes evaluated already: their alerts are out)."""
        parts = {
            "closed": state.closed,
            "open": state.open,
            "seen": state.seen,
            "daily": state.daily,
            "official": state.official,
            "closing": state.closing,
            "waiting": state.waiting,
            "held": state.held,
            "trades": state.trades,
            "provider_minutes": state.provider_minutes,
            "provider_last": state.provider_last,
        }
        frame = pl.concat(
            [part.with_columns(part=pl.lit(name)) for name, part in parts.items()],
            how="diagonal",
        )
        meta = {
            "format": _INTRADAY_FORMAT,
            "now": state.now.isoformat() if state.now else None,
            "closes_at": state.closes_at.isoformat() if state.closes_at else None,
            "keep_from": state.keep_from.isoformat() if state.keep_from else None,
            "done": [d.isoformat() for d in state.done],
            "hashed_by": state.hashed_by,
            "columns": {name: part.columns for name, part in parts.items()},
            "journal": journal,
            "watermark_1m": minute_watermark.isoformat() if minute_watermark else None,
            "trades_from": state.trades_from.isoformat() if state.trades_from else None,
            "trades_kept": state.trades_kept,
        }
        metadata = {_INTRADAY_META: json.dumps(meta)}
        self._atomic(INTRADAY, lambda f: frame.write_parquet(f, metadata=metadata))

    def load_intraday(self) -> BookState | None:
        """The bar builder's sessions saved last (periodically, or at a stop), if any."""
        file = self.intraday_path
        if not file.exists():
            return None
        try:
            meta = json.loads(pl.read_parquet_metadata(file)[_INTRADAY_META])
            if meta["format"] != _INTRADAY_FORMAT:
                raise ValueError(f"format {meta['format']}, not {_INTRADAY_FORMAT}")
            frame = pl.read_parquet(file)
            parts = {  # (a file of an earlier version lacks some: each has a default)
                name: frame.filter(pl.col("part") == name).select(meta["columns"][name])
                for name in _INTRADAY_PARTS
                if name in meta["columns"]
            }
            return BookState(
                now=dt.datetime.fromisoformat(meta["now"]) if meta["now"] else None,
                keep_from=dt.date.fromisoformat(meta["keep_from"]) if meta["keep_from"] else None,
                done=[dt.date.fromisoformat(d) for d in meta["done"]],
                hashed_by=str(meta["hashed_by"]),
                # (a file of an earlier version has none: the book's clock, `now`, then)
                closes_at=dt.datetime.fromisoformat(meta["closes_at"])
                if meta.get("closes_at")
                else None,
                # (a file of an earlier version kept no trades for cancels)
                trades_from=dt.datetime.fromisoformat(meta["trades_from"])
                if meta.get("trades_from")
                else None,
                trades_kept=meta.get("trades_kept") is True,
                **parts,
            )
        except (pl.exceptions.PolarsError, OSError, KeyError, TypeError, ValueError) as exc:
            raise _unreadable(file, exc, fatal=False) from None

    def intraday_journal(self) -> int | None:
        """The last journal segment the saved sessions cover (None: no file, or none named)."""
        covered = self._intraday_meta().get("journal")
        return covered if isinstance(covered, int) else None

    def intraday_watermark(self) -> dt.datetime | None:
        """The engine's minute watermark when the saved sessions were taken (None: no file,
        or none saved)."""
        text = self._intraday_meta().get("watermark_1m")
        try:
            return dt.datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            return None

    def _intraday_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(pl.read_parquet_metadata(self.intraday_path)[_INTRADAY_META])
        except (pl.exceptions.PolarsError, OSError, KeyError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def discard_intraday(self) -> None:
        """Remove the saved sessions' bars (once a start has taken them up)."""
        try:
            self.intraday_path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store {self.path}: cannot remove {INTRADAY}: {exc.strerror}"
            ) from None

    def load_stale_feeds(self) -> dict[str, str]:
        """The feeds that were stale (`feed_stale` told, no `feed_recovered` yet) when the
        daemon last wrote `STALE_FEEDS`: name -> when (ISO 8601). Empty without the file, and
        for a file that cannot be read (logged by the caller as a warning: it only means a
        `feed_recovered` the notifier may wait for is not sent)."""
        return self._load_feed_map(STALE_FEEDS)

    def save_stale_feeds(self, feeds: dict[str, str]) -> None:
        """Write the stale feeds (see `load_stale_feeds`), atomically."""
        self._save_feed_map(STALE_FEEDS, feeds)

    def load_owed_backfills(self) -> dict[str, str | dict[str, object]]:
        """The REST backfills owed when the daemon last wrote `OWED_BACKFILLS`: feed name ->
        from when (ISO 8601), or an object of the gap's start (`since`) and the failed windows
        (`windows`); see `monitor.owed_backfills`, which checks each. Empty without the file;
        StoreError (not fatal) for one that cannot be read."""
        return self._load_feed_map(OWED_BACKFILLS, objects=True)

    def save_owed_backfills(self, feeds: dict[str, str | dict[str, object]]) -> None:
        """Write the backfills owed (see `load_owed_backfills`), atomically."""
        self._save_feed_map(OWED_BACKFILLS, feeds)

    def load_recent_alerts(self) -> list[Alert]:
        """The alerts `save_recent_alerts` wrote, oldest first; empty without the file, and
        StoreError (not fatal) for one that cannot be read."""
        file = self.path / ALERTS_RECENT
        try:
            return msgspec.json.decode(file.read_bytes(), type=list[Alert])
        except FileNotFoundError:
            return []
        except (OSError, msgspec.DecodeError) as exc:
            raise _unreadable(file, exc, fatal=False) from None

    def save_recent_alerts(self, alerts: list[Alert]) -> None:
        """Write the live view's last alerts (see `load_recent_alerts`), atomically."""
        data = msgspec.json.encode(alerts)
        # (not synced: a view, written on the event loop after each step that fired; a power
        # cut may leave it old or unreadable, a warning at the start, not a failed one)
        self._atomic(ALERTS_RECENT, lambda f: Path(f).write_bytes(data), sync=False)

    @overload
    def _load_feed_map(self, name: str) -> dict[str, str]: ...

    @overload
    def _load_feed_map(
        self, name: str, *, objects: Literal[True]
    ) -> dict[str, str | dict[str, object]]: ...

    def _load_feed_map(self, name: str, *, objects: bool = False) -> dict[str, Any]:
        """Feed name -> a string (or, `objects`, a string or an object) from the file `name`."""
        try:
            found = json.loads((self.path / name).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            why = exc if not isinstance(exc, RecursionError) else ValueError("nested too deep")
            raise _unreadable(self.path / name, why, fatal=False) from None
        kinds = (str, dict) if objects else str
        if not isinstance(found, dict) or not all(isinstance(v, kinds) for v in found.values()):
            raise _unreadable(self.path / name, ValueError("not a map"), fatal=False)
        if len(found) > MAX_STALE_FEEDS:  # (no daemon has that many: not its file)
            problem = ValueError(f"{len(found)} feeds, more than {MAX_STALE_FEEDS}")
            raise _unreadable(self.path / name, problem, fatal=False)
        return {str(k): v for k, v in found.items()}

    def _save_feed_map(self, name: str, feeds: Mapping[str, object]) -> None:
        text = json.dumps(feeds, sort_keys=True)
        self._atomic(name, lambda f: Path(f).write_text(text))

    def _atomic(self, name: str, write: Callable[[str], object], sync: bool = True) -> None:
        """Write the store file `name` whole or not at all (a temporary file, synced, renamed
        over it); StoreError naming it when it cannot be (a full disk, a read-only folder).
        `sync=False`: renamed unsynced, for a file that is only a view (a power cut may leave
        it empty or old; a kill does not)."""
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
            os.close(fd)
            write(tmp)
            if sync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, self.path / name)
            if sync:
                sync_folder(self.path)  # (the rename itself, before anything relies on it)
        except (OSError, pl.exceptions.PolarsError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"store {self.path}: cannot write {name}: {reason}") from None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def sync_folder(folder: Path) -> None:
    """A folder's entries (a file created, renamed or removed in it) on the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unreadable(file: Path, exc: Exception, *, fatal: bool = True) -> StoreError:
    """A one-line error for a store file that cannot be read (corrupt, truncated, another
    schema): which file, why, and what to do. Not silently ignored: the next snapshot would
    overwrite what a person may still want to recover from it. (`fatal=False`: a file the
    daemon starts without, saying so.)"""
    reason = exc.strerror if isinstance(exc, OSError) else str(exc).strip().splitlines()[0]
    if not fatal:
        return StoreError(f"store file {file} is unreadable ({reason})")
    return StoreError(
        f"store file {file} is unreadable ({reason}); move it aside to start without it"
    )
