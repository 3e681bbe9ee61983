"""The service's log lines are JSON, libraries' warnings included: the README's
`journalctl -u market-monitor -o cat | jq .` reads every line (a plain-text line stops jq)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
from monitor import logs
logs.configure(json=True)
logging.getLogger("apprise").warning("Connection error while submitting email to %s", "host")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("apscheduler").exception("job failed")
logging.getLogger("paho").info("below the level: not written")
logs.get("service").info("service_ready", port=9108)
"""


def test_library_warnings_are_json_lines_like_the_services_own() -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in res.stderr.splitlines()]
    assert [(e["level"], e["event"], e.get("logger", e.get("component"))) for e in lines] == [
        ("warning", "Connection error while submitting email to host", "apprise"),
        ("error", "job failed", "apscheduler"),
        ("info", "service_ready", "service"),
    ]
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert all("timestamp" in e for e in lines)


def test_a_level_above_warning_holds_back_libraries_warnings_too() -> None:
    script = (
        "import logging\nfrom monitor import logs\nlogs.configure(level='error', json=True)\n"
        "logging.getLogger('apprise').warning('held back')\n"
        "logging.getLogger('apprise').error('said')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert [json.loads(line)["event"] for line in res.stderr.splitlines()] == ["said"]
