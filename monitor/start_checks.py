"""What `run` (and `notify`) refuse at start beyond the config's own values, checked by `config
check` without side effects: the store folder `Store` makes (`mkdir -p`), and the `[http]`
host it listens on.

Apart from `monitor.config_check` (its printing and exit codes) because each answers one
question about this machine, not about the file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from monitor.http import PortUnavailable, check_listen


def store_problem(path: Path) -> tuple[str | None, str | None]:
    """(error, warning) for the store folder `path` as `Store` makes it at start: the line
    `run` gives (`store.path: cannot create /proc/mm: No such file or directory`), or, for a
    folder this user may not make while another may (not root: the daemon's user, systemd's
    StateDirectory=), a warning saying so. Found without a trace: the first folder missing is
    made and removed again."""
    missing = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    try:
        if missing is None:
            if not path.is_dir():  # (a file in the way: `mkdir -p` says "File exists")
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
            return None, None
        missing.mkdir()
        missing.rmdir()
    except OSError as exc:
        said = f"store.path: cannot create {path}: {exc.strerror}"
        if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
            return None, f"{said} as this user; check it as the daemon's user"
        return said, None
    return None, None


def http_problem(host: str, port: int) -> str | None:
    """The line `run` gives for an `[http] host` that does not resolve or is no address of
    this machine (`[http] cannot listen on 999.1.1.1:9108: ...`); None when it is one. The
    port is not tried: a running daemon holds it."""
    try:
        check_listen(host, port, any_port=True)
    except PortUnavailable as exc:
        return str(exc)
    return None
