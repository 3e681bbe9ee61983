"""The daemon's HTTP port as `run` meets it."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from tests.test_commands import cli
from tests.test_service import write_config

pytestmark = pytest.mark.integration


def test_a_port_already_in_use_stops_the_daemon_with_one_line_naming_it(tmp_path: Path) -> None:
    """When another process listens on `[http] port`, `run` exits 74 with one line naming the
    address and why, no traceback (systemd restarts it: the port may free up)."""
    conf = write_config(tmp_path, f"mm-port-{uuid.uuid4().hex[:8]}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = cli(
            "run", "--config", str(conf),
            env={"MARKET_MONITOR__HTTP__PORT": str(port), "MARKET_MONITOR__LOG__LEVEL": "error"},
        )  # fmt: skip
    assert (res.returncode, res.stderr) == (
        74,
        f"market-monitor: error: [http] cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n",
    )
