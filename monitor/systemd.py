"""systemd's notify protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

Active only when systemd (or a test) sets NOTIFY_SOCKET; otherwise every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable


def notifier(environ: dict[str, str] | None = None) -> Callable[[str], None] | None:
    """A function sending one notify message, or None outside systemd."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        address = "\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(message: str) -> None:
        with contextlib.suppress(OSError):  # systemd went away: nothing useful to do
            sock.sendto(message.encode(), address)

    return send


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of WatchdogSec (from WATCHDOG_USEC), or None when no watchdog is set."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 2_000_000
