"""The SQLite outbox: idempotent, ordered, durable across reopening, loud when it cannot write."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor.alerts.outbox import Outbox, OutboxError
from monitor.core.model import Alert, encode_alert


def make_alert(alert_id: str, text: str = "ABC closed up 5 weeks in a row") -> Alert:
    return Alert(
        id=alert_id,
        rule="streak.weekly",
        kind="streak",
        symbol="ABC",
        timeframe="1w",
        session="2024-05-03",
        ts="2024-05-03T20:00:00Z",
        severity="notice",
        title="ABC: 5 up weeks",
        text=text,
        metrics={"weeks": 5, "return": 0.21},
        history=None,
    )


def test_put_is_idempotent_by_id(tmp_path: Path) -> None:
    """Putting an id that is already pending, or already published, adds nothing."""
    with Outbox(tmp_path / "outbox.db") as outbox:
        assert outbox.put([make_alert("a"), make_alert("b"), make_alert("a")]) == 2
        assert outbox.put([make_alert("b"), make_alert("c")]) == 1
        outbox.mark_published(["a"])
        assert outbox.put([make_alert("a")]) == 0
        assert [alert_id for _, alert_id, _ in outbox.pending(10)] == ["b", "c"]
        assert outbox.depth() == 2


def test_pending_is_oldest_first_with_payloads(tmp_path: Path) -> None:
    """`pending` returns (seq, id, payload) in arrival order, across puts, up to the limit."""
    alerts = [make_alert(f"id-{i}") for i in (3, 1, 2, 0)]
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.put(alerts[:2])
        outbox.put(alerts[2:])
        assert outbox.pending(3) == [
            (1, "id-3", encode_alert(alerts[0])),
            (2, "id-1", encode_alert(alerts[1])),
            (3, "id-2", encode_alert(alerts[2])),
        ]
        outbox.mark_published(["id-3", "id-2"])
        assert outbox.pending(10) == [
            (2, "id-1", encode_alert(alerts[1])),
            (4, "id-0", encode_alert(alerts[3])),
        ]
        assert (outbox.was_published("id-3"), outbox.was_published("id-1")) == (True, False)
        assert outbox.was_published("never-seen") is False


def test_reopening_keeps_pending_and_published(tmp_path: Path) -> None:
    """After closing and reopening the file, pending alerts and published ids are remembered."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        outbox.put([make_alert("a"), make_alert("b"), make_alert("c")])
        outbox.mark_published(["a"])
    with Outbox(path) as outbox:
        assert [(seq, alert_id) for seq, alert_id, _ in outbox.pending(10)] == [(2, "b"), (3, "c")]
        assert [outbox.was_published(i) for i in "abc"] == [True, False, False]
        assert outbox.put([make_alert("a"), make_alert("d")]) == 1
        assert [alert_id for _, alert_id, _ in outbox.pending(10)] == ["b", "c", "d"]


def test_prune_drops_old_published_ids_but_never_pending(tmp_path: Path) -> None:
    """Pruning forgets published ids older than `keep_ids_days`; pending ones stay, however old."""
    now = [1_000_000.0]
    with Outbox(tmp_path / "outbox.db", keep_ids_days=10, clock=lambda: now[0]) as outbox:
        outbox.put([make_alert("old-published"), make_alert("old-pending")])
        outbox.mark_published(["old-published"])
        now[0] += 11 * 86_400
        assert outbox.prune() == 1
        assert outbox.was_published("old-published") is False
        assert [alert_id for _, alert_id, _ in outbox.pending(10)] == ["old-pending"]


def test_full_outbox_raises_and_keeps_what_it_had(tmp_path: Path) -> None:
    """When the outbox cannot grow (disk full, here `max_bytes`), `put` raises and stores none."""
    with Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024) as outbox:
        outbox.put([make_alert("first")])
        big = "x" * 4000
        stored = 1
        with pytest.raises(OutboxError) as caught:
            for i in range(100):
                stored += outbox.put([make_alert(f"big-{i}-a", big), make_alert(f"big-{i}-b", big)])
        assert caught.value.reason == "full"
        assert outbox.depth() == stored
        assert outbox.pending(1)[0][1] == "first"


def test_missing_directory_gives_a_clear_error(tmp_path: Path) -> None:
    """An outbox path in a directory that does not exist raises OutboxError, not sqlite3.Error."""
    path = tmp_path / "missing" / "outbox.db"
    with pytest.raises(OutboxError) as caught:
        Outbox(path)
    assert (caught.value.reason, str(caught.value)) == (
        "no_directory",
        f"outbox {path}: cannot open: no_directory (unable to open database file);"
        " its directory does not exist",
    )


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make `path` read-only for this process: chmod, or `chattr +i` as root (who ignores modes)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a path read-only for root")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("case", ["file", "directory"])
def test_read_only_location_gives_a_clear_error(tmp_path: Path, case: str) -> None:
    """Opening an outbox in a read-only file or directory raises OutboxError(reason='read_only')."""
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        outbox.put([make_alert("a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox.db"]
    with read_only(path if case == "file" else tmp_path), pytest.raises(OutboxError) as caught:
        Outbox(path)
    detail = (
        "attempt to write a readonly database" if case == "file" else "unable to open database file"
    )
    assert (caught.value.reason, str(caught.value)) == (
        "read_only",
        f"outbox {path}: cannot open: read_only ({detail});"
        " the file or its directory is read-only for this user",
    )
    with Outbox(path) as outbox:
        assert [alert_id for _, alert_id, _ in outbox.pending(10)] == ["a"]
