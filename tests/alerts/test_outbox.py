"""The SQLite outbox: idempotent, ordered, durable across reopening, loud when it cannot write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from monitor.alerts.outbox import Outbox, OutboxError
from monitor.core.model import Alert, encode_alert

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


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
    """After closing and reopening the file, pending alerts and published ids are both remembered."""
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
    """Pruning forgets published ids older than `keep_ids_days`; pending alerts stay, however old."""
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
    assert str(caught.value) == (
        f"outbox {path}: cannot open: cannot_open (unable to open database file);"
        " does the directory exist, and may this user write to it?"
    )


# Run as an unprivileged user: root may write to read-only files and directories.
_OPEN_AS_NOBODY = """
import json, sys
from monitor.alerts.outbox import Outbox, OutboxError
try:
    Outbox(sys.argv[1]).close()
    print(json.dumps(None))
except OutboxError as exc:
    print(json.dumps([type(exc).__name__, exc.reason, exc.action, str(exc)]))
"""


def _open_unprivileged(path: Path) -> list[str] | None:
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_AS_NOBODY, str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        check=True,
        timeout=30,
        **user,  # type: ignore[arg-type]
    )
    result: list[str] | None = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("case", ["read_only_file", "read_only_directory"])
def test_read_only_location_gives_a_clear_error(case: str) -> None:
    """Opening an outbox this user cannot write raises OutboxError naming the path and the reason."""
    # Not tmp_path: its parents are private to root, and the check runs as nobody when root.
    with tempfile.TemporaryDirectory(prefix="outbox-ro-") as top:
        _check_read_only(Path(top), case)


def _check_read_only(top: Path, case: str) -> None:
    top.chmod(0o755)
    directory = top / "state"
    directory.mkdir()
    path = directory / "outbox.db"
    with Outbox(path) as outbox:
        outbox.put([make_alert("a")])
    assert sorted(p.name for p in directory.iterdir()) == ["outbox.db"]
    if case == "read_only_file":
        directory.chmod(0o777)
        path.chmod(0o444)
    else:
        directory.chmod(0o555)
        path.chmod(0o666)
    try:
        expected = (
            f"outbox {path}: cannot open: read_only (attempt to write a readonly database);"
            " the file or its directory is read-only for this user"
        )
        assert _open_unprivileged(path) == ["OutboxError", "read_only", "open", expected]
    finally:
        directory.chmod(0o755)
        path.chmod(0o644)
    with Outbox(path) as outbox:
        assert [alert_id for _, alert_id, _ in outbox.pending(10)] == ["a"]
