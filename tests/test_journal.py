"""The journal of accepted ticks and minute bars: segments written, read back in order, cut
at a save, and a record cut short by a crash."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from monitor.core.model import CANCEL_SCHEMA, MINUTE_SCHEMA, FeedBatch, Tick, ticks_frame
from monitor.journal import Journal

T0 = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)


def batch(n: int, minutes: int = 0) -> FeedBatch:
    """`n` ticks of AAA a second apart from T0 + n minutes (ids `t{n}-{i}`), and `minutes`
    minute bars of BBB."""
    out = FeedBatch.empty("t")
    start = T0 + dt.timedelta(minutes=n)
    ticks = [
        Tick("AAA", start + dt.timedelta(seconds=i), 10.0 + i, 100.0, f"t{n}-{i}") for i in range(n)
    ]
    out.ticks = ticks_frame(ticks)
    rows = [
        ("BBB", start + dt.timedelta(minutes=m), 5.0, 5.0, 5.0, 5.0, 1.0) for m in range(minutes)
    ]
    out.minute_bars = pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")
    return out


def same(got: list[FeedBatch], written: list[FeedBatch]) -> None:
    """The ticks and the minute bars of `got` are those of `written`, in order."""
    for name in ("ticks", "minute_bars"):
        assert pl.concat([getattr(b, name) for b in got]).equals(
            pl.concat([getattr(b, name) for b in written])
        ), name


def test_batches_come_back_in_order_after_a_covered_segment(tmp_path: Path) -> None:
    """Ticks and minute bars appended, a rotation between: read after the first segment, the
    second's come back as written; after none, all of them, in order; a journal opened again
    on the folder appends to a new segment after them."""
    journal = Journal(tmp_path)
    first, second, third = batch(3, 2), batch(5), batch(2, 1)
    journal.append(first)
    covered = journal.rotate()
    journal.append(second)
    journal.append(third)
    journal.close()
    same(list(journal.read_after(covered)), [second, third])
    same(list(journal.read_after(-1)), [first, second, third])
    assert Journal(tmp_path).seq == journal.segments()[-1] + 1


def test_the_ids_of_the_alerts_a_step_emitted_come_back_apart_from_its_batches(
    tmp_path: Path,
) -> None:
    """A step's alert ids are journaled with its batch (or alone, for a step that took nothing
    in): read back after a segment, only the later ids, in order; the batches as written."""
    journal = Journal(tmp_path)
    journal.append(batch(2), ["early"])
    covered = journal.rotate()
    journal.append(batch(3), ["a", "b"])
    journal.append(FeedBatch.empty("t"), ["c"])
    journal.append(batch(1))
    assert journal.alert_ids_after(covered) == ["a", "b", "c"]
    assert journal.alert_ids_after(-1) == ["early", "a", "b", "c"]
    same(list(journal.read_after(covered)), [batch(3), batch(1)])


def test_segments_a_save_covers_are_dropped(tmp_path: Path) -> None:
    """drop_upto deletes the segments up to the one a saved state covers, not the later."""
    journal = Journal(tmp_path)
    for n in (1, 2, 3):
        journal.append(batch(n))
        journal.rotate()
    assert journal.segments() == [0, 1, 2]
    journal.drop_upto(1)
    assert journal.segments() == [2]
    same(list(journal.read_after(-1)), [batch(3)])


def test_a_record_cut_short_by_a_crash_ends_its_segment(tmp_path: Path) -> None:
    """The last record of a segment cut in the middle (the process killed while writing) is
    left out; the records before it, and the next segment's, come back."""
    journal = Journal(tmp_path)
    journal.append(batch(2))
    journal.append(batch(4))
    journal.close()
    path = tmp_path / f"{0:010d}.log"
    path.write_bytes(path.read_bytes()[:-7])
    journal.rotate()
    journal.append(batch(3))
    journal.close()
    got = list(journal.read_after(-1))
    assert [b.ticks.height for b in got] == [2, 3]


def earlier_reader(folder: Path) -> list[tuple[bytes, int]]:
    """(tag, rows) of each record of the segments in `folder`, read as a version before cancels
    (6100aa6) reads them: in order of the segments, each up to a tag other than T, M, D or A."""
    head = struct.Struct("<cQ")
    records = []
    for path in sorted(folder.glob("*.log")):
        data, at = path.read_bytes(), 0
        while at + head.size <= len(data):
            tag, length = head.unpack_from(data, at)
            if tag not in (b"T", b"M", b"D", b"A"):
                break
            frame = pl.read_ipc_stream(io.BytesIO(data[at + head.size : at + head.size + length]))
            records.append((tag, frame.height))
            at += head.size + length
    return records


def test_a_rollback_after_a_crash_reads_every_record_but_the_cancels(tmp_path: Path) -> None:
    """A step's cancels (X), its alert ids and the steps after it journaled, then a crash: the
    version before cancels, started on that journal (a rollback), still reads every tick and
    alert id, and only the cancels, which it ignores, are lost to it (it stopped at the X
    record: the 4 ticks and the alert id after it were dropped without a word); this version
    reads the cancels after their step's ticks, in order."""
    journal = Journal(tmp_path)
    cancelling = batch(2)
    row = {"symbol": "AAA", "ts": T0, "id": "t2-0"}
    cancelling.cancels = pl.DataFrame([row], schema=CANCEL_SCHEMA)
    journal.append(batch(1))
    journal.append(cancelling, ["alert-1"])
    journal.append(batch(4), ["alert-2"])
    journal.close()
    assert earlier_reader(tmp_path) == [(b"T", 1), (b"T", 2), (b"A", 1), (b"T", 4), (b"A", 1)]
    got = [(b.ticks.height, b.cancels.height) for b in journal.read_after(-1)]
    assert got == [(1, 0), (2, 0), (0, 1), (4, 0)]
    assert journal.alert_ids_after(-1) == ["alert-1", "alert-2"]


def test_a_journal_that_cannot_be_written_is_logged_once_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    """Segments that cannot be written (here folders stand where the files go, as a full disk
    would refuse them): the error is logged once and counted per failure, nothing raises, each
    failure moves on to a new segment, and `append` says the records are not on disk (the
    pipeline holds their messages' acks back); once a write succeeds again, that is logged too
    and every batch is in the journal, in order, the ones that waited first. Before, the
    batches whose write failed were dropped from the journal and their messages acked."""
    from structlog.testing import capture_logs

    from monitor import logs
    from monitor.calendar import nyse_sessions
    from monitor.core.counters import Counters
    from monitor.core.engine import Engine
    from monitor.core.rules.spec import RulesFile
    from monitor.intraday import Intraday
    from monitor.store import Store

    journal = Journal(tmp_path / "journal")
    counters = Counters()
    engine = Engine(RulesFile(), nyse_sessions(dt.date(2024, 1, 1)))
    intraday = Intraday(Store(tmp_path), engine, logs.get("test"), counters, journal)
    for seq in (journal.seq, journal.seq + 1):  # (a failed write moves to the next segment)
        (tmp_path / "journal" / f"{seq:010d}.log").mkdir()
    with capture_logs() as events:
        written = [intraday.append(batch(n)) for n in (2, 3)]
        assert (written, intraday.unwritten, intraday.journal_error is not None) == (
            [False, False],
            2,
            True,
        )
        assert intraday.append(batch(4))
    assert [(e["event"], e["log_level"]) for e in events] == [
        ("journal_not_written", "error"),
        ("journal_written_again", "info"),
    ]
    assert counters.get("journal_write_failures") == 2
    assert (intraday.unwritten, intraday.journal_error) == (0, None)
    same(list(journal.read_after(-1)), [batch(2), batch(3), batch(4)])


def test_appends_and_new_segments_reach_the_disk_before_append_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `sync` (the default, `[store] journal_fsync`), every append is followed by an
    fdatasync of its segment, and a new segment by an fsync of the folder (its name); without
    it, neither. What is synced is what was written: the file holds the record then."""
    import os

    synced: list[tuple[str, int]] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        synced.append(("data", os.fstat(fd).st_size))
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        synced.append(("folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file", 0))
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    journal = Journal(tmp_path / "on")
    journal.append(batch(3))
    journal.append(batch(2))
    journal.rotate()
    journal.append(batch(1))
    journal.close()
    sizes = [p.stat().st_size for p in sorted((tmp_path / "on").glob("*.log"))]
    assert [kind for kind, _ in synced] == ["folder", "data", "data", "folder", "data"]
    first_two = [size for kind, size in synced if kind == "data"][:2]
    assert first_two[1] == sizes[0] > first_two[0] > 0  # (each after its own write)

    synced.clear()
    quiet = Journal(tmp_path / "off", sync=False)
    quiet.append(batch(3))
    quiet.close()
    assert synced == []


def test_journal_fsync_is_on_unless_the_config_turns_it_off(tmp_path: Path) -> None:
    """`[store] journal_fsync` defaults to true; false is taken, a word is refused."""
    from monitor.config import load as load_config
    from monitor.errors import ConfigError

    def config(extra: str) -> Path:
        path = tmp_path / "monitor.toml"
        path.write_text(f'[store]\npath = "{tmp_path}"\n{extra}\n')
        return path

    assert load_config(config("")).store.journal_fsync is True
    assert load_config(config("journal_fsync = false")).store.journal_fsync is False
    with pytest.raises(ConfigError, match="journal_fsync"):
        load_config(config('journal_fsync = "sometimes"'))


_SHORT_WRITE = """
import resource, signal, sys
from pathlib import Path
from monitor import logs
from monitor.calendar import nyse_sessions
from monitor.core.counters import Counters
from monitor.core.engine import Engine
from monitor.core.rules.spec import RulesFile
from monitor.intraday import Intraday
from monitor.journal import Journal
from tests.test_journal import batch

journal = Journal(Path(sys.argv[1]), sync=False)
counters = Counters()
engine = Engine(RulesFile(), nyse_sessions(__import__("datetime").date(2024, 1, 1)))
intraday = Intraday(None, engine, logs.get("test"), counters, journal)
intraday.append(batch(1))
size = (Path(sys.argv[1]) / f"{journal.seq:010d}.log").stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (past the limit: EFBIG, not a signal)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(size * 1.5), resource.RLIM_INFINITY))
intraday.append(batch(1))  # (half of it fits)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
intraday.append(batch(3))
print(int(counters.get("journal_write_failures")), journal.segments())
"""


def test_a_write_the_disk_takes_only_part_of_is_a_failure_not_a_torn_record(
    tmp_path: Path,
) -> None:
    """A write that takes only part of a record (a file-size limit here; a disk filling up
    does the same) is tried again for the rest, and the failure of that is a failed append:
    counted, the segment left behind. The record that failed and the next batch go to a new
    segment and are read back (appended after the torn record, they would be lost with it)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    folder = tmp_path / "journal"
    res = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE, str(folder)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    *logged, last = res.stdout.splitlines()
    assert last == "1 [0, 1]"
    assert "journal_not_written" in logged[0] and "File too large" in logged[0]
    same(list(Journal(folder).read_after(-1)), [batch(1), batch(1), batch(3)])


def test_records_waiting_for_a_full_disk_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the journal cannot be written, the records waiting for it are kept up to
    MAX_UNWRITTEN_ROWS rows: past it the oldest go, counted and logged (a feed without acks
    would otherwise grow the daemon without end); the newest are written once the disk is
    back."""
    from structlog.testing import capture_logs

    from monitor import intraday as intraday_module
    from monitor import logs
    from monitor.calendar import nyse_sessions
    from monitor.core.counters import Counters
    from monitor.core.engine import Engine
    from monitor.core.rules.spec import RulesFile
    from monitor.intraday import Intraday
    from monitor.store import Store

    monkeypatch.setattr(intraday_module, "MAX_UNWRITTEN_ROWS", 10)
    journal = Journal(tmp_path / "journal")
    counters = Counters()
    engine = Engine(RulesFile(), nyse_sessions(dt.date(2024, 1, 1)))
    intraday = Intraday(Store(tmp_path), engine, logs.get("test"), counters, journal)
    with full_disk(journal, 10), capture_logs() as events:
        for n in (2, 3, 4, 5):  # (14 rows: the 2 and the 3 go)
            assert intraday.append(batch(n)) is False
    assert intraday.unwritten == 2
    assert counters.get("journal_rows_dropped") == 5
    assert [e["rows"] for e in events if e["event"] == "journal_rows_dropped"] == [5]
    assert intraday.append(batch(0)) is True
    same(list(journal.read_after(-1)), [batch(4), batch(5)])


@contextlib.contextmanager
def full_disk(journal: Journal, segments: int = 50) -> Iterator[None]:
    """Within the block the journal's next `segments` segments cannot be written: a folder
    stands where each file goes, as a full disk refuses them (a failed write moves on to the
    next segment, so one blocked segment is not enough)."""
    paths = [journal.folder / f"{journal.seq + n:010d}.log" for n in range(segments)]
    for path in paths:
        path.mkdir(parents=True)
    try:
        yield
    finally:
        for path in paths:
            path.rmdir()
