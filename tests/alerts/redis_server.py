"""A private `redis-server` on a free loopback port, for tests that stop, kill or restart Redis.

    with RedisServer() as server:      # started, answering PING
        server.kill()                  # SIGKILL, like a crash
        server.start()                 # again, on the same port (empty: no persistence)

Import it from any test folder as `tests.alerts.redis_server`.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One `redis-server` on 127.0.0.1 without persistence; `args` are extra server options."""

    def __init__(self, port: int | None = None, *args: str, ready_timeout_s: float = 5.0) -> None:
        self.port = port if port is not None else free_port()
        self.args = args
        self.ready_timeout_s = ready_timeout_s
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="redis-test-")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def is_running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (it must not be running) and wait until it answers PING."""
        if self.is_running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self._dir,
            *self.args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                self._reap()
                raise RuntimeError(f"redis-server on port {self.port} exited: {err}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} not ready in {self.ready_timeout_s}s")

    def kill(self) -> None:
        """SIGKILL the server, like a crash, and reap it (no-op if it is not running)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the server and wait for it to exit (no-op if it is not running)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
        self._reap()

    def _reap(self) -> None:
        if self._proc is None:
            return
        self._proc.wait(timeout=10)
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))  # NOAUTH: serving, with requirepass
