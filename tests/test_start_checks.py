"""`config check` refuses what `run` (and `notify`) refuse at start beyond the config's values,
with their line and exit code: a store folder that cannot be made (78), an `[http] host` that
does not resolve or is no address of this machine (the daemon's 71, the notifier's 74); and it
leaves no folder behind (monitor/start_checks.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path

import pytest

from monitor.start_checks import store_problem
from tests.alerts.redis_server import free_port
from tests.cli_here import cli_here
from tests.test_service import write_config


def test_a_store_folder_run_cannot_make_fails_the_check_with_runs_line(tmp_path: Path) -> None:
    """`store.path = "/proc/mm"` passed the check and `run` exited 78 "cannot create": now
    both exit 78 with that line; a folder that can be made passes and is not left behind."""
    conf = write_config(tmp_path, "mm-start-store")
    text = conf.read_text()
    conf.write_text(text.replace(f'path = "{tmp_path / "store"}"', 'path = "/proc/mm"'))
    want = (
        "market-monitor: config error: store.path: cannot create /proc/mm: No such file or"
        " directory\n"
    )
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)
    conf.write_text(text.replace(f'path = "{tmp_path / "store"}"', 'path = "new/store"'))
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, (tmp_path / "new").exists()) == (0, False), check.stderr


def test_a_store_folder_another_user_may_make_is_a_warning() -> None:
    """A store folder this user may not make (a folder of mode 0555 in the way) is a warning,
    not a failure, when this is not root: the daemon's own user (or systemd's
    StateDirectory=) may make it. Run as root, the check runs in a child that is nobody."""
    top = Path(tempfile.mkdtemp(prefix="mm-start-"))  # (pytest's own folder is 0700)
    try:
        top.chmod(0o755)
        (top / "locked").mkdir(mode=0o555)
        store = top / "locked" / "store"
        found = store_problem(store) if os.geteuid() != 0 else _as_nobody(store)
    finally:
        (top / "locked").chmod(0o755)
        shutil.rmtree(top)
    assert found == (
        None,
        f"store.path: cannot create {store}: Permission denied as this user; check it as the"
        " daemon's user",
    )


def _as_nobody(store: Path) -> tuple[str | None, str | None]:
    """`store_problem(store)` in a forked child whose effective user and group are nobody's
    (the interpreter itself may be in a folder nobody cannot read, so no new process)."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # (3.12: fork of a process with threads; the child execs
        warnings.simplefilter("ignore", DeprecationWarning)  # nothing and exits at once)
        child = os.fork()
    if child == 0:
        try:
            os.setegid(65534)
            os.seteuid(65534)
            os.write(write, json.dumps(store_problem(store)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(child, 0)
    error, warning = json.loads(said)
    return error, warning


@pytest.mark.parametrize(
    ("host", "reason"),
    [("999.1.1.1", "Name or service not known"), ("192.0.2.1", "Cannot assign requested address")],
)
def test_an_http_host_run_cannot_listen_on_fails_the_check_with_runs_line_and_code(
    tmp_path: Path, host: str, reason: str
) -> None:
    """`http.host` that does not resolve or is no address of this machine passed the check and
    `run` exited 71 (restarted by systemd five times): now the check exits 71 with run's line.
    A port a running daemon holds does not fail it."""
    conf = write_config(tmp_path, "mm-start-http")
    text = conf.read_text()
    port = free_port()
    conf.write_text(text.replace("port = 0", f'host = "{host}"\nport = {port}'))
    want = f"market-monitor: error: [http] cannot listen on {host}:{port}: {reason}\n"
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (71, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr.splitlines()[-1] + "\n") == (71, want)
    with socket.create_server(("127.0.0.1", 0)) as held:
        taken = held.getsockname()[1]
        conf.write_text(text.replace("port = 0", f'host = "127.0.0.1"\nport = {taken}'))
        check = cli_here("config", "check", "--config", str(conf))
    assert check.returncode == 0, check.stderr


def test_a_notifier_http_host_it_cannot_listen_on_fails_the_check_with_its_74(
    tmp_path: Path,
) -> None:
    """The notifier's `[http]` enabled on a host that does not resolve: `config check` exits
    74 with the line `notify` gives (it passed, and notify exited 74)."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        '[http]\nenabled = true\nhost = "999.1.1.1"\nport = 9109\n[[receivers]]\nname = "hook"\n'
        'url = "json://127.0.0.1:9/a"\n[route]\nreceivers = ["hook"]\n'
    )
    want = (
        "market-monitor: error: [http] cannot listen on 999.1.1.1:9109: Name or service not known\n"
    )
    check = cli_here("config", "check", "--config", str(conf))
    notify = cli_here("notify", "--config", str(conf))
    assert (check.returncode, check.stderr) == (notify.returncode, notify.stderr) == (74, want)
