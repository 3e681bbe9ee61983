"""The journal: the ticks and bars the daemon accepted since the sessions under way were last
saved, so that a kill -9 loses none of them.

The pipeline appends each step's accepted ticks, minute bars and session bars here (what the
engine took in: a row it rejected is not taken again after a restart) before it acknowledges the
messages they came in, so that what the broker will not deliver again is on disk, and the ids of
the alerts the step emitted, so that a start re-evaluating the minutes taken up does not emit
them again. A record is a tag (`T` ticks, `M` minute bars, `D` session bars, `A` alert ids, `X`
the cancels and corrections the engine applied, after the step's ticks: a start applies them
again to the same ticks; an `X` record is the last of its segment, see `Journal.append`), the
length of the frame's Arrow IPC stream, then its bytes, in a segment file
`<store>/journal/<seq>.log`, written straight to the file and, with `sync` (`[store]
journal_fsync`, the default), on the disk before `append` returns: fdatasync of the segment, and
of the folder when a segment is created. Without it the kernel keeps what was written when the
process dies, but a power cut can lose the last records.

A save of the sessions under way (`monitor.intraday`) starts a new segment at the moment it
takes the book's state, and records in its file the last segment that state covers; once the
file is written, those segments are deleted. A start takes up the saved state, then the
segments after the one it covers, in order, and appends after them (never at or below the
covered number, though those segments are gone). A record cut short (by a crash, or a write that
failed, after which appends go to a new segment) ends its segment.
"""

from __future__ import annotations

import errno
import io
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from monitor.core.model import CANCEL_SCHEMA, DAILY_SCHEMA, MINUTE_SCHEMA, TICK_SCHEMA, FeedBatch
from monitor.store import StoreError, sync_folder

JOURNAL = "journal"  # its folder in the store
SUFFIX = ".log"
_HEAD = struct.Struct("<cQ")  # tag, length of the IPC bytes


class Journal:
    """Segments of accepted ticks and bars in `folder` (created when missing); `sync`:
    each append on the disk before it returns."""

    def __init__(self, folder: Path, *, sync: bool = True) -> None:
        self.folder = folder
        self.sync = sync
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the journal {folder}: {exc.strerror}") from None
        found = self.segments()
        self.seq = found[-1] + 1 if found else 0  # the segment appended to
        self._fd: int | None = None

    def segments(self) -> list[int]:
        """The numbers of the segments on disk, in order."""
        numbers = []
        for path in self.folder.glob(f"*{SUFFIX}"):
            if path.stem.isdigit() and path.is_file():
                numbers.append(int(path.stem))
        return sorted(numbers)

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:010d}{SUFFIX}"

    def append(self, batch: FeedBatch, alert_ids: Sequence[str] = ()) -> None:
        """The batch's ticks and bars, and the ids of the alerts its step emitted, as one
        write to the current segment; its cancels last, and they end the segment. A version
        before cancels (a rollback's) reads a segment up to a tag it does not know: an `X`
        record before others hid them from it, the ticks after a cancel lost without a word;
        as the segment's last record it hides only itself (cancels that version ignores)."""
        parts = []
        frames = [(b"T", batch.ticks), (b"M", batch.minute_bars), (b"D", batch.daily_bars)]
        if alert_ids:
            frames.append((b"A", pl.DataFrame({"id": list(alert_ids)}, schema={"id": pl.String})))
        frames.append((b"X", batch.cancels))  # (after the ticks, as the engine applied them)
        for tag, frame in frames:
            if frame.height:
                buffer = io.BytesIO()
                frame.write_ipc_stream(buffer, compression="uncompressed")
                data = buffer.getvalue()
                parts += [_HEAD.pack(tag, len(data)), data]
        if not parts:
            return
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._fd = os.open(self._path(self.seq), flags, 0o600)
            if self.sync:
                sync_folder(self.folder)  # (the new segment's name)
        _write_all(self._fd, b"".join(parts))
        if self.sync:
            os.fdatasync(self._fd)
        if batch.cancels.height:
            self.rotate()  # (the next append starts a segment: see above)

    def continue_after(self, covered: int) -> None:
        """Append after segment `covered` (what the saved state covers), whatever is left on
        disk: a start after the segments up to it were deleted must not number new ones at or
        below it, which the next start would take as covered and skip."""
        if self._fd is None and self.seq <= covered:
            self.seq = covered + 1

    def rotate(self) -> int:
        """Start a new segment; the number of the last one before it (what a state of the book
        taken now covers)."""
        self.close()
        covered = self.seq
        self.seq += 1
        return covered

    def drop_upto(self, covered: int) -> None:
        """Delete the segments up to `covered` (a saved state holds what they held)."""
        for seq in self.segments():
            if seq <= covered:
                self._path(seq).unlink(missing_ok=True)

    def read_after(self, covered: int) -> Iterator[FeedBatch]:
        """The batches of the segments after `covered`, in order (a record cut short by a crash
        ends its segment)."""
        for tag, frame in self._records_after(covered):
            if tag != b"A":
                yield _batch(tag, frame)

    def alert_ids_after(self, covered: int) -> list[str]:
        """The ids of the alerts emitted by the steps journaled after segment `covered`."""
        ids: list[str] = []
        for tag, frame in self._records_after(covered):
            if tag == b"A":
                ids += frame.get_column("id").to_list()
        return ids

    def _records_after(self, covered: int) -> Iterator[tuple[bytes, pl.DataFrame]]:
        for seq in self.segments():
            if seq > covered:
                yield from _records(self._path(seq).read_bytes())

    def close(self) -> None:
        """Close the current segment's file (the next append opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd`, or OSError: a write that takes only part of it (a file-size
    limit, a disk filling up) is tried again for the rest, and one that takes nothing fails."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "the journal took no more bytes")
        view = view[written:]


def _records(data: bytes) -> Iterator[tuple[bytes, pl.DataFrame]]:
    at = 0
    while at + _HEAD.size <= len(data):
        tag, length = _HEAD.unpack_from(data, at)
        start = at + _HEAD.size
        if start + length > len(data) or tag not in (b"T", b"M", b"D", b"X", b"A"):
            return  # (cut short)
        try:
            frame = pl.read_ipc_stream(io.BytesIO(data[start : start + length]))
        except (pl.exceptions.PolarsError, OSError):
            return  # (a record written in part)
        yield tag, frame
        at = start + length


def _batch(tag: bytes, frame: pl.DataFrame) -> FeedBatch:
    batch = FeedBatch.empty("journal")
    if tag == b"T":
        batch.ticks = frame.cast(TICK_SCHEMA)  # type: ignore[arg-type]
    elif tag == b"M":
        batch.minute_bars = frame.cast(MINUTE_SCHEMA)  # type: ignore[arg-type]
    elif tag == b"X":
        batch.cancels = frame.cast(CANCEL_SCHEMA)  # type: ignore[arg-type]
    else:
        batch.daily_bars = frame.cast(DAILY_SCHEMA)  # type: ignore[arg-type]
    return batch
