"""A durable local outbox for alerts: SQLite (stdlib `sqlite3`) in WAL mode.

Every alert is written here *before* any network I/O; the publisher drains it in order and marks
what went out. One table holds both sets:

    seq           INTEGER PRIMARY KEY AUTOINCREMENT   order of arrival, never reused
    id            TEXT UNIQUE                         the alert id: idempotency key
    payload       BLOB                                alert JSON; NULL once pruned
    created_at    REAL                                wall-clock seconds
    published_at  REAL NULL                           NULL while pending

Durability: `synchronous=FULL`. In WAL mode NORMAL survives a process crash but may lose the
last commits on power loss; the whole point of this file is that an alert the engine produced is
not lost, and alerts are few (one small transaction per engine batch), so the fsync per commit is
cheap enough. A lost `mark_published` would be harmless (the Redis-side dedupe key catches the
resend), a lost `put` would not.

Retention: a published row keeps its payload for `keep_payload_days` (for inspection), then only
its id is kept, for `keep_ids_days` (default 400; `None` keeps ids forever, ~100 bytes each).
"Never published twice" is therefore enforced locally for ids seen within `keep_ids_days`, and in
Redis by the publisher's dedupe keys for their TTL (30 days by default), across restarts.

The API is synchronous on purpose: each call is one short local transaction (tens of
microseconds, plus one fsync per write transaction), which the async publisher calls inline.
Any SQLite failure (read-only file or directory, disk full, I/O error) raises `OutboxError`, and a
failed `put` stores none of its alerts: the caller knows they were not accepted.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from monitor.core.model import Alert, encode_alert
from monitor.errors import MonitorError

DAY_S = 86_400.0
PRUNE_EVERY_S = 3_600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payload BLOB,
    created_at REAL NOT NULL,
    published_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""

# Primary SQLite result codes (the low byte of an extended code) -> a short reason.
_REASONS = {
    3: "permission_denied",  # SQLITE_PERM
    5: "busy",  # SQLITE_BUSY
    8: "read_only",  # SQLITE_READONLY
    10: "io_error",  # SQLITE_IOERR
    11: "corrupt",  # SQLITE_CORRUPT
    13: "full",  # SQLITE_FULL
    14: "cannot_open",  # SQLITE_CANTOPEN
    26: "not_a_database",  # SQLITE_NOTADB
}
_HINTS = {
    "cannot_open": "; may this user create and write files there?",
    "no_directory": "; its directory does not exist",
    "read_only": "; the file or its directory is read-only for this user",
    "full": "; the disk (or the outbox's max_bytes) is full",
}


class OutboxError(MonitorError):
    """The outbox file cannot be opened, read or written; `reason` says why (`read_only`, `full`).

    Not transient from the outbox's point of view: alerts passed to the failing call were not
    stored, and the service should stop rather than carry on without its safety net.
    """

    def __init__(self, path: Path, action: str, reason: str, detail: str) -> None:
        hint = _HINTS.get(reason, "")
        super().__init__(f"outbox {path}: cannot {action}: {reason} ({detail}){hint}")
        self.path = path
        self.action = action
        self.reason = reason


class Outbox:
    """Alerts waiting for (and remembered after) publication, in a SQLite file at `path`.

    Use from one thread (the event loop's); open it with `with Outbox(path) as outbox:`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        keep_payload_days: float = 7.0,
        keep_ids_days: float | None = 400.0,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._keep_payload_s = keep_payload_days * DAY_S
        self._keep_ids_s = None if keep_ids_days is None else keep_ids_days * DAY_S
        self._clock = clock
        self._last_prune = float("-inf")
        self._db = self._open(max_bytes)

    def _open(self, max_bytes: int | None) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(self.path, "open", "no_wal", f"journal_mode is {mode}")
            db.execute("PRAGMA synchronous = FULL")
            if max_bytes is not None:
                page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
                db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
            db.executescript(_SCHEMA)
            # A real write on open, so a read-only file or directory fails now, not at the first
            # alert (SQLite opens a file it cannot write read-only, without complaint).
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)", (self._clock(),)
            )
        except sqlite3.Error as exc:
            db.close()
            raise self._error("open", exc) from exc
        except OutboxError:
            db.close()
            raise
        return db

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()

    def put(self, alerts: Sequence[Alert]) -> int:
        """Store `alerts` in order, skipping ids already known; return how many were new.

        All or nothing: on `OutboxError` none of them was stored.
        """
        if not alerts:
            return 0
        now = self._clock()
        rows = [(alert.id, encode_alert(alert), now) for alert in alerts]
        with self._transaction("store alerts"):
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (id, payload, created_at) VALUES (?, ?, ?)", rows
            )
            return self._db.total_changes - before

    def pending(self, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` unpublished alerts, oldest first, as `(seq, id, payload)`."""
        try:
            rows = self._db.execute(
                "SELECT seq, id, payload FROM outbox WHERE published_at IS NULL "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("read pending alerts", exc) from exc
        return [(int(seq), str(id_), bytes(payload)) for seq, id_, payload in rows]

    def mark_published(self, ids: Iterable[str]) -> None:
        """Record that these alerts reached the sink; unknown or already-marked ids are ignored."""
        now = self._clock()
        rows = [(now, id_) for id_ in ids]
        with self._transaction("mark alerts published"):
            self._db.executemany(
                "UPDATE outbox SET published_at = ? WHERE id = ? AND published_at IS NULL", rows
            )
        if now - self._last_prune >= PRUNE_EVERY_S:
            self.prune()

    def depth(self) -> int:
        """How many alerts are waiting."""
        try:
            row = self._db.execute(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("count pending alerts", exc) from exc
        return int(row[0])

    def was_published(self, alert_id: str) -> bool:
        """Whether the alert with this id was marked published (and its id is still retained)."""
        try:
            row = self._db.execute(
                "SELECT published_at IS NOT NULL FROM outbox WHERE id = ?", (alert_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("look up an alert", exc) from exc
        return row is not None and bool(row[0])

    def prune(self) -> int:
        """Drop old payloads and ids of published alerts (never pending ones); return rows deleted.

        Called at most hourly by `mark_published`; call it directly to force it.
        """
        now = self._clock()
        self._last_prune = now
        with self._transaction("prune published alerts"):
            self._db.execute(
                "UPDATE outbox SET payload = NULL "
                "WHERE published_at IS NOT NULL AND published_at < ? AND payload IS NOT NULL",
                (now - self._keep_payload_s,),
            )
            if self._keep_ids_s is None:
                return 0
            cur = self._db.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?",
                (now - self._keep_ids_s,),
            )
            return cur.rowcount

    @contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(action, exc) from exc
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                # SQLite may have rolled back already (e.g. after SQLITE_FULL): nothing to undo.
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(action, exc) from exc
            raise

    def _error(self, action: str, exc: sqlite3.Error) -> OutboxError:
        code = getattr(exc, "sqlite_errorcode", None)
        reason = _REASONS.get(code & 0xFF, "sqlite_error") if isinstance(code, int) else "error"
        if reason == "cannot_open":  # SQLite does not say why: look at the directory
            parent = self.path.parent
            if not parent.is_dir():
                reason = "no_directory"
            elif not os.access(parent, os.W_OK):
                reason = "read_only"
        return OutboxError(self.path, action, reason, str(exc))
