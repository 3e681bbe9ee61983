"""The store as the commands meet it: one process at a time, and unreadable files named."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.cli_here import cli_here
from tests.conftest import RUT
from tests.daemon_process import DaemonProcess
from tests.test_service import write_config

pytestmark = pytest.mark.integration


def test_a_second_daemon_or_a_backfill_into_a_running_daemons_store_stops_at_once(
    tmp_path: Path,
) -> None:
    """While a daemon runs, a second `run` and a `backfill` with the same store each exit 75
    with one line naming the store and the daemon's pid, and write nothing: the daemon's files
    stay its own. Once it has stopped, the backfill goes through."""
    conf = write_config(tmp_path, f"mm-lock-{uuid.uuid4().hex[:8]}")
    store = tmp_path / "store"
    daemon = DaemonProcess(conf)
    try:
        daemon.wait_for("service_ready")
        pid = daemon.proc.pid
        held = (
            f"market-monitor: store {store}: another market-monitor process (pid {pid}) holds it\n"
        )
        second = cli_here("run", "--config", str(conf))
        assert (second.returncode, second.stderr) == (75, held)
        backfill = cli_here("backfill", "--config", str(conf), "--data", f"^RUT={RUT}")
        assert (backfill.returncode, backfill.stdout, backfill.stderr) == (75, "", held)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        daemon.close()
    backfill = cli_here("backfill", "--config", str(conf), "--data", f"^RUT={RUT}")
    assert backfill.returncode == 0, backfill.stderr
    assert f"into {store}" in backfill.stdout


@pytest.mark.parametrize(
    ("name", "garbage", "reason"),
    [
        ("engine_state.json", b'{"fired": ["a"', "Input data was truncated"),
        (
            "bars_daily.parquet",
            b"PAR1 not parquet at all",
            "parquet: File out of specification: The file must end with PAR1 or PARE",
        ),
    ],
)
def test_an_unreadable_store_file_stops_the_daemon_with_one_line_naming_it(
    tmp_path: Path, name: str, garbage: bytes, reason: str
) -> None:
    """A corrupt engine state or bar history stops `run` (and `backfill`, for the bars) with
    exit 74 and one line naming the file, why, and what to do; the file is left as it was."""
    conf = write_config(tmp_path, f"mm-corrupt-{uuid.uuid4().hex[:8]}")
    file = tmp_path / "store" / name
    file.parent.mkdir()
    file.write_bytes(garbage)
    want = (
        f"market-monitor: error: store file {file} is unreadable ({reason}); "
        "move it aside to start without it\n"
    )
    res = cli_here("run", "--config", str(conf), env={"MARKET_MONITOR__LOG__LEVEL": "error"})
    assert (res.returncode, res.stderr) == (74, want)
    if name == "bars_daily.parquet":
        res = cli_here("backfill", "--config", str(conf), "--data", f"^RUT={RUT}")
        assert (res.returncode, res.stderr) == (74, want)
    assert file.read_bytes() == garbage


def test_a_store_file_the_daemon_cannot_write_stops_it_with_one_line_naming_it(
    tmp_path: Path,
) -> None:
    """When the engine state cannot be saved once bars have closed (here a folder stands where
    the file goes; a full disk says so the same way), the running daemon stops with exit 74
    and one line naming the file and why, not a traceback and exit 1."""
    import asyncio

    from tests.test_daemon_faults import publish, rut_bars

    prefix = f"mm-unwritable-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    daemon = DaemonProcess(conf)
    try:
        daemon.wait_for("service_ready")
        state = tmp_path / "store" / "engine_state.json"
        state.unlink(missing_ok=True)
        state.mkdir()
        asyncio.run(publish(f"{prefix}/bars", rut_bars("2024-07-10", "2024-07-12")))
        assert daemon.wait(30) == 74
    finally:
        daemon.close()
    text = "".join(daemon.lines)
    assert "Traceback" not in text
    assert f"store {tmp_path / 'store'}: cannot write engine_state.json: Is a directory" in text
