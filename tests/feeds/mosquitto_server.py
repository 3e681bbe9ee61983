"""A private Mosquitto for chaos tests: one loopback port and one persistence dir for its lifetime.

`stop()` is SIGTERM (Mosquitto saves its persistence file), `kill()` is SIGKILL (it saves nothing),
and `start()` again brings it back on the same port with the same persistence dir.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MosquittoServer:
    """Run `mosquitto -c <tmp>/mosquitto.conf` as a subprocess; a context manager that cleans up."""

    def __init__(self, directory: Path, *, max_queued_messages: int = 100_000) -> None:
        self.port = free_port()
        self.directory = directory
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_file = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.data}/",
                    f"max_queued_messages {max_queued_messages}",
                    "sys_interval 1",
                    f"user {pwd.getpwuid(os.getuid()).pw_name}",
                    f"log_dest file {self.log_file}",
                    "",
                ]
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 5.0) -> None:
        """Start the broker and wait until it accepts connections."""
        assert not self.is_running
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_file.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.02)
            else:
                return
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that writes the persistence file."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: sessions and queued messages since the last autosave are lost."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """SIGTERM, then start again on the same port and persistence dir."""
        self.stop()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(sig)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)

    def __enter__(self) -> MosquittoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
