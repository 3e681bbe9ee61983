"""The daemon as a child process (as systemd runs it), its log read by a thread so that a full
pipe can never stall it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import ROOT


class DaemonProcess:
    """`python -m monitor run --config CONF`; `lines` collects its stderr as it comes."""

    def __init__(self, conf: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(conf)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, event: str, timeout_s: float = 60.0) -> str:
        """The first log line with `"event": "<event>"`, waiting up to `timeout_s`."""
        needle = f'"event": "{event}"'
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "".join(self.lines)[-2000:]
                    raise AssertionError(f"no {event} in the daemon's log: {tail}")
                self._changed.wait(min(left, 0.5))

    def signal(self, signum: int) -> None:
        """Send a signal to the daemon."""
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """The exit code, waiting up to `timeout_s`."""
        code = self.proc.wait(timeout_s)
        self._finish()
        return code

    def stop(self, timeout_s: float = 30.0) -> None:
        """If it still runs, SIGTERM, and its exit must be 0 within `timeout_s`; closed either
        way."""
        try:
            if self.proc.poll() is None:
                self.signal(signal.SIGTERM)
                assert self.wait(timeout_s) == 0
        finally:
            self.close()

    def close(self) -> None:
        """Kill it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._finish()

    def _finish(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
