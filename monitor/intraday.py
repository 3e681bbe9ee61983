"""The sessions under way (closed and open minute bars, duplicate keys) kept across restarts.

The daemon saves them to `bars_intraday.parquet` every `[store] intraday_interval_s` while a
session is under way, and at a graceful stop; a start takes them up while their session is
still open or open to corrections, then the ticks and minute bars accepted since that save,
from the journal (`monitor.journal`). A kill -9 then loses nothing the daemon accepted.

Periodic saves are written by a thread of their own (a full session of a universe's minute bars
takes a few hundred ms to write, which the event loop should not wait for), one at a time and
in order: the save at a stop waits for any still being written, so that it is the last.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import polars as pl

from monitor.core.bar_state import BookState, from_later
from monitor.core.counters import Counters
from monitor.core.engine import Engine, EngineState
from monitor.core.model import FeedBatch
from monitor.core.sessions import minute_date
from monitor.journal import Journal
from monitor.store import Store, StoreError

# Rows (ticks and bars) of steps the journal could not write kept in memory for it, at most: a
# full disk under a feed without acknowledgements would otherwise grow the daemon without end.
MAX_UNWRITTEN_ROWS = 5_000_000


class Intraday:
    """Saving and taking up the engine's sessions under way in `store`."""

    def __init__(
        self, store: Store, engine: Engine, log: Any, counters: Counters, journal: Journal
    ) -> None:
        self.store = store
        self.engine = engine
        self.log = log
        self.counters = counters
        self.journal = journal
        self._journal_failing = False
        self.journal_error: str | None = None  # why the journal is not being written, if not
        self._unwritten: list[tuple[FeedBatch, list[str]]] = []  # (see `append`)
        self._unwritten_rows = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intraday")
        self._pending: Future[None] | None = None
        # When the data taken up at the start ends: the book's clock saved at the last stop,
        # or the journal's last tick or minute since (None: neither, or later than now). The
        # WebSocket feeds backfill from there what came while the daemon was down (as far
        # back as the engine takes minutes, however long ago that was).
        self.resumed_from: dt.datetime | None = None

    def append(self, batch: FeedBatch, alert_ids: Sequence[str] = ()) -> bool:
        """Journal a step's accepted ticks and bars (before its messages are acknowledged) and
        the ids of the alerts it emitted; whether every step's record so far is on disk. A
        write that fails (a full disk) is logged (once until one succeeds again) and counted,
        and its record waits in memory, in order, for the next step's write: the pipeline
        holds back the acknowledgements of its messages until then, so the broker keeps them
        (and, once its in-flight window is full, stops sending), and a crash meanwhile loses
        nothing acknowledged. An empty batch writes only the records waiting."""
        if batch.size() or alert_ids:
            self._unwritten.append((batch, list(alert_ids)))
            self._unwritten_rows += batch.size()
            self._bound_unwritten()
        while self._unwritten:
            record, ids = self._unwritten[0]
            try:
                self.journal.append(record, ids)
            except OSError as exc:
                self.journal.rotate()  # (a record written in part ends its segment)
                self.counters.inc("journal_write_failures")
                self.journal_error = str(exc)
                if not self._journal_failing:
                    self._journal_failing = True
                    self.log.error(
                        "journal_not_written",
                        error=str(exc),
                        folder=str(self.journal.folder),
                        note="the messages of the steps not written are not acknowledged",
                    )
                return False
            self._unwritten_rows -= record.size()
            self._unwritten.pop(0)
        if self._journal_failing:
            self._journal_failing = False
            self.journal_error = None
            self.log.info("journal_written_again")
        return True

    def _bound_unwritten(self) -> None:
        """Past MAX_UNWRITTEN_ROWS waiting (a feed without acknowledgements, a WebSocket's,
        goes on sending while the disk is full), the oldest records go: counted
        (`journal_rows_dropped`) and logged. They stay in the engine; only a crash before the
        next save that gets through loses them. Memory stays bounded."""
        dropped = 0
        while self._unwritten_rows > MAX_UNWRITTEN_ROWS and len(self._unwritten) > 1:
            record, _ = self._unwritten.pop(0)
            self._unwritten_rows -= record.size()
            dropped += record.size()
        if dropped:
            self.counters.inc("journal_rows_dropped", dropped)
            self.log.error("journal_rows_dropped", rows=dropped, waiting=self._unwritten_rows)

    @property
    def unwritten(self) -> int:
        """Steps whose record waits for the journal to be written again."""
        return len(self._unwritten)

    def save_at_stop(self, snapshot: Callable[[], None]) -> None:
        """The saves of a graceful stop: `snapshot` (the engine's), then `save_now`. StoreError
        (exit 74) when one fails, and naming the journal when steps' records still wait for it
        (a full disk: their messages were not acknowledged, and the broker delivers them
        again), whether the saves got through or not."""
        unwritten = None
        if self._unwritten:  # (before the saves: they rotate the journal)
            unwritten = (
                f"the journal {self.journal.folder} cannot be written ({self.journal_error}):"
                f" the records of {len(self._unwritten)} steps are not on it, and their"
                " messages were not acknowledged (the broker delivers them again)"
            )
        try:
            snapshot()
            self.save_now()
        except StoreError as exc:
            if unwritten is None:
                raise
            raise StoreError(f"{unwritten}; and at the stop: {exc}") from None
        if unwritten is not None:
            raise StoreError(unwritten)

    def save_later(self) -> None:
        """A periodic save, after an engine step: the state is taken now and written by the
        writer thread (skipped while the previous one is still being written). A failure is
        logged and counted; the next interval tries again."""
        if self._pending is not None and not self._pending.done():
            return
        state = self._state()
        covered = self.journal.rotate()  # (what the state holds: the journal up to here)
        if state is None:
            self._pending = self._writer.submit(self._discard, covered)
            return
        watermark = self.engine.watermarks.get("1m")  # (taken with the state)
        self._pending = self._writer.submit(self._write, state, covered, watermark, False)

    def wait(self) -> None:
        """Until the periodic save being written, if any, is done."""
        if self._pending is not None:
            self._pending.result()

    def save_now(self) -> None:
        """The save at a graceful stop, after the last engine step: after any periodic one
        still being written, and raising StoreError when it fails."""
        self.wait()
        self._writer.shutdown()
        state = self._state()
        covered = self.journal.rotate()
        if state is None:
            self.store.discard_intraday()
        else:
            self._write(state, covered, self.engine.watermarks.get("1m"), True)
        self.journal.drop_upto(covered)

    def _state(self) -> BookState | None:
        """The book's sessions, or None when nothing is under way (no file is needed then)."""
        state = self.engine.bar_state()
        if state is None or not (
            state.sessions() or state.open.height or state.daily.height or state.waiting.height
        ):
            return None
        return state

    def _write(
        self, state: BookState, covered: int, watermark: dt.datetime | None, final: bool
    ) -> None:
        """Save `state`, which holds the journal up to segment `covered`, and the engine's
        minute `watermark` when it was taken; those segments go once it is saved (the save at
        a stop deletes them itself)."""
        try:
            self.store.save_intraday(state, covered, watermark)
        except StoreError as exc:
            if final:
                raise
            self._failed(exc)
            return
        if not final:
            self.journal.drop_upto(covered)
        self.counters.inc("intraday_saves")
        event = self.log.info if final else self.log.debug
        event(
            "intraday_bars_saved",
            sessions=[s.isoformat() for s in state.sessions()],
            minute_bars=state.closed.height,
            open_bars=state.open.height,
            duplicate_keys=state.seen.height,
        )

    def _discard(self, covered: int) -> None:
        """No session under way: a file saved earlier must not come back at the next start
        (nor the journal up to `covered`)."""
        try:
            self.store.discard_intraday()
        except StoreError as exc:
            self._failed(exc)
            return
        self.journal.drop_upto(covered)

    def _failed(self, exc: StoreError) -> None:
        """A periodic save that failed: counted and logged; the next interval tries again."""
        self.counters.inc("intraday_save_failures")
        self.log.error("intraday_bars_not_saved", error=str(exc))

    def restore(self, now: dt.datetime) -> None:
        """Continue the sessions under way from the bars saved last, then from the journal's
        ticks and minute bars accepted since (see `take_up_journal`)."""
        self.engine.book.track_changes()  # (a stored bar these change is built again)
        self._restore_saved(now)
        self.take_up_journal(now)
        if self.engine.bar_state() is not None:  # (something was taken up)
            self.engine.book.hold_keys(now)  # (what the broker delivers again: a duplicate)
        self._stored_since(now)  # (which ends the tracking of changes)

    def _stored_since(self, now: dt.datetime) -> None:
        """Sessions closed, their bars not emitted in the saved state, whose bars the store
        holds: they were emitted and stored after the save (the close came, then the crash
        before the next save). They are not emitted again over what the store holds, which
        may be better since: a provider's official bar that came after the close. (A
        symbol's bar the store lacks was held back at that close: it is judged again.)"""
        book = self.engine.book
        closed = book.unemitted(now)
        day = pl.col("session")
        stored = self.engine.daily.filter(day.is_in(closed))
        book.mark_emitted(stored)  # (of those, the bars changed since are built again)
        if stored.height:
            sessions = stored.get_column("session").unique().sort()
            self.log.info("session_bars_already_stored", sessions=[str(d) for d in sessions])

    def take_up_journal(self, now: dt.datetime) -> None:
        """Ingest the journal's records after the segment the saved state covers (all of
        them without one), those of sessions the bar builder still takes at `now`. They go in
        before any tick from the feeds, as they came before the restart; a message the broker
        delivers again is then a duplicate."""
        covered = self.store.intraday_journal()
        if covered is not None:
            self.journal.continue_after(covered)
        ticks = minutes = daily = 0
        newest: list[dt.datetime] = []  # (when each record's data ends)
        for batch in self.journal.read_after(-1 if covered is None else covered):
            keep = self.engine.book.oldest_kept(now)
            if keep is not None:
                batch.ticks = batch.ticks.filter(minute_date(pl.col("ts")) >= keep)
                batch.minute_bars = batch.minute_bars.filter(minute_date(pl.col("start")) >= keep)
            if batch.size():
                self.engine.ingest(batch, taken=True)
                ticks, minutes = ticks + batch.ticks.height, minutes + batch.minute_bars.height
                daily += batch.daily_bars.height
                end = batch.data_end()
                newest += [end] if end is not None else []
        ends = [t for t in newest if t <= now]  # (what came after the state: the gap is later)
        if ends:  # (nothing saved: minutes close from there, see `monitor.close_clock`)
            self.engine.book.resume_close_clock(max(ends))
            self.resumed_from = max([*ends, *([self.resumed_from] if self.resumed_from else [])])
        self.engine.take_accepted()  # (on disk already: not to be journaled again)
        # The alerts those steps emitted: the minutes taken up are evaluated again at the
        # next step, and must not emit them a second time.
        emitted = self.journal.alert_ids_after(-1 if covered is None else covered)
        if emitted:
            self.engine.restore(EngineState(fired=emitted, watermarks={}))
        if ticks or minutes or daily:
            self.log.info("journal_taken_up", ticks=ticks, minute_bars=minutes, daily_bars=daily)

    def _restore_saved(self, now: dt.datetime) -> None:
        """Continue the sessions under way from the bars saved last, unless none of their
        sessions is still open or open to corrections at `now`, or they were saved later than
        `now` (stale: logged and ignored; see `BarBook.restore`)."""
        try:
            saved = self.store.load_intraday()
        except StoreError as exc:
            self.log.warning(
                "intraday_bars_unreadable",
                error=str(exc),
                note="the sessions under way are built from the ticks still to come",
            )
            return
        if saved is None:
            return
        waiting = self.engine.restore_waiting(saved, now)
        if waiting:
            self.log.info("waiting_session_bars_restored", session_bars=waiting)
        if not from_later(saved, now):  # (what came since is fetched by a feed that can)
            self.resumed_from = saved.now
        sessions = [s.isoformat() for s in saved.sessions()]
        if not (sessions or saved.open.height):  # (only session bars waiting for a close)
            return
        if not self.engine.restore_bars(saved, now):
            self.log.info(
                "intraday_bars_stale",
                sessions=sessions,
                saved_at=saved.now.isoformat() if saved.now else None,
                now=now.isoformat(),
                note="ignored: none of their sessions is still open or open to corrections "
                "(or they were saved later than now)",
            )
            return
        watermark = self.store.intraday_watermark()
        if watermark is not None:  # (minutes evaluated before the save: their alerts are out)
            self.engine.restore(EngineState(fired=[], watermarks={"1m": watermark}))
        same_hash = saved.hashed_by == pl.__version__
        self.log.info(
            "intraday_bars_restored",
            sessions=sessions,
            minute_bars=saved.closed.height,
            open_bars=saved.open.height,
            duplicate_keys=saved.seen.height if same_hash else 0,
        )
        if not same_hash and saved.seen.height:
            self.log.warning(
                "duplicate_keys_not_restored",
                keys=saved.seen.height,
                hashed_by=f"polars {saved.hashed_by}",
                note="a trade delivered again across the restart counts twice",
            )
