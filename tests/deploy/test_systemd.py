"""The systemd units: the daemon speaks the notify protocol they rely on, and they verify."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import DEMO, ROOT

UNITS = ROOT / "deploy" / "systemd"
DAEMON_UNIT = UNITS / "market-monitor.service"
NOTIFY_UNIT = UNITS / "market-monitor-notify.service"
BINARY = "/opt/market-monitor/bin/market-monitor"


def unit_settings(path: Path) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value the unit file gives it, in order (keys may repeat)."""
    settings: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET (short path: 108 max)."""
    folder = tempfile.mkdtemp(prefix="mm-notify-")
    path = os.path.join(folder, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def receive_until(
    sock: socket.socket,
    proc: subprocess.Popen[bytes],
    done: Callable[[list[str]], bool],
    timeout_s: float,
) -> list[str]:
    """Notify messages until `done(messages)` is true, the child exits, or the time is up."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(messages):
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            if proc.poll() is not None:
                break
    return messages


@pytest.mark.integration
def test_daemon_sends_ready_watchdog_status_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """Run as systemd runs it (NOTIFY_SOCKET, WATCHDOG_USEC=1 s), the daemon sends READY=1 first,
    then WATCHDOG=1 and STATUS= lines, STOPPING=1 on SIGTERM, and exits 0."""
    import redis

    sock, address = notify_socket
    prefix = f"mm-sd-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "monitor.toml"
    conf.write_text(
        f"""
[store]
path = "{tmp_path / "store"}"
[[feeds]]
kind = "replay"
name = "history"
data = ["^RUT={DEMO / "rut_index_daily_1987_2026.csv"}"]
start = "2024-07-01"
end = "2024-07-31"
speed = 345600
[redis]
url = "redis://127.0.0.1:6379/0"
channel = "{prefix}:alerts"
stream = "{prefix}:alerts"
[rules]
file = "{ROOT / "config" / "rules.toml"}"
[http]
port = 0
[shutdown]
grace_s = 3.0
[log]
level = "warning"
"""
    )
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(conf)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        running = receive_until(
            sock,
            proc,
            lambda ms: ms.count("WATCHDOG=1") >= 2 and any(m.startswith("STATUS=") for m in ms),
            timeout_s=60,
        )
        assert proc.poll() is None, proc.communicate(timeout=10)[1].decode()[-2000:]
        assert running[0] == "READY=1"
        assert running.count("WATCHDOG=1") >= 2
        status = next(m for m in running if m.startswith("STATUS="))
        assert re.fullmatch(r"STATUS=ticks \d+, bars \d+, alerts \d+, outbox \d+", status)

        proc.send_signal(signal.SIGTERM)
        stopping = receive_until(sock, proc, lambda ms: "STOPPING=1" in ms, timeout_s=20)
        assert "STOPPING=1" in stopping
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        redis.Redis().delete(f"{prefix}:alerts")


def test_units_run_the_commands_with_the_settings_the_daemon_needs() -> None:
    """Both units are Type=notify with a 30 s watchdog, stop time above the shutdown grace, the
    store in the state directory, the Redis password as a credential, and the polars CPU check
    off wherever W+X memory is denied."""
    from monitor.config import ShutdownConfig

    for unit, command, prefix in (
        (DAEMON_UNIT, "run --config /etc/market-monitor/monitor.toml", "MARKET_MONITOR__"),
        (NOTIFY_UNIT, "notify --config /etc/market-monitor/notify.toml", "MARKET_MONITOR_NOTIFY__"),
    ):
        s = unit_settings(unit)
        assert s[("Service", "ExecStart")] == [f"{BINARY} {command}"]
        assert s[("Service", "Type")] == ["notify"]
        assert s[("Service", "NotifyAccess")] == ["main"]
        assert s[("Service", "WatchdogSec")] == ["30"]
        assert s[("Service", "Restart")] == ["on-failure"]
        assert s[("Service", "RestartPreventExitStatus")] == ["65 78"]  # data error, config
        assert int(s[("Service", "TimeoutStopSec")][0]) > ShutdownConfig().grace_s + 5
        assert s[("Service", "LoadCredential")] == [
            "redis-password:/etc/market-monitor/credentials/redis-password"
        ]
        env = s[("Service", "Environment")]
        assert f"{prefix}REDIS__PASSWORD_FILE=%d/redis-password" in env
        assert s[("Service", "MemoryDenyWriteExecute")] == ["yes"]
        assert "POLARS_SKIP_CPU_CHECK=1" in env
        assert s[("Service", "CapabilityBoundingSet")] == [""]
        assert s[("Service", "SystemCallFilter")] == ["@system-service"]
    daemon = unit_settings(DAEMON_UNIT)
    assert daemon[("Service", "ExecReload")] == ["/bin/kill -HUP $MAINPID"]  # (rules reload)
    assert daemon[("Service", "StateDirectory")] == ["market-monitor"]
    assert "MARKET_MONITOR__STORE__PATH=%S/market-monitor" in daemon[("Service", "Environment")]
    assert daemon[("Service", "MemoryMax")] == ["2G"]


ENV_FILE = "/etc/market-monitor/notify.env"


def test_the_notifier_unit_reads_an_optional_root_only_environment_file(tmp_path: Path) -> None:
    """The notifier's unit reads the receivers' `{NAME}` secrets from an optional
    EnvironmentFile (`-`: none is no error) that the README installs 0600 and root's; the
    README's root-shell recipe gives `config check` the same variables, so the example config
    (`{SLACK_TOKEN}`, `{SMTP_USER}`, `{SMTP_PASSWORD}`) checks with them and not without."""
    notify = unit_settings(NOTIFY_UNIT)
    assert notify[("Service", "EnvironmentFile")] == [f"-{ENV_FILE}"]
    readme = (ROOT / "README.md").read_text()
    assert f"install -m 0600 -o root -g root /dev/null {ENV_FILE}" in readme
    assert f"EnvironmentFile=-{ENV_FILE}" in readme
    recipe = re.search(
        r"\(set -a; \. (\S+); set \+a\n\s+(\S+) (config check --config \S+)\)", readme
    )
    assert recipe is not None
    assert recipe[1] == ENV_FILE and recipe[2] == BINARY
    env_file = tmp_path / "notify.env"
    env_file.write_text(
        "# the receivers' secrets\nSLACK_TOKEN=TokenA/TokenB/TokenC\n"
        "SMTP_USER=alerts@example.com\nSMTP_PASSWORD='p@ss #1 $x'\n"
    )
    example = ROOT / "config" / "notify.example.toml"
    command = recipe[3].replace("/etc/market-monitor/notify.toml", str(example))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SMTP_"))}
    results = []
    (tmp_path / "empty.env").write_text("")
    for source in (env_file, tmp_path / "empty.env"):
        script = f"set -a; . {source}; set +a; {sys.executable} -m monitor {command}"
        run = subprocess.run(
            ["sh", "-c", script], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        results.append((run.returncode, run.stderr.strip().rsplit(": ", 1)[-1]))
    assert results[0] == (0, "")
    assert results[1][0] == 78 and "SLACK_TOKEN" in results[1][1], results[1]


def verifiable_copies(folder: Path) -> list[Path]:
    """The units with ExecStart's binary replaced by one that exists (verify checks it)."""
    copies = []
    for unit in (DAEMON_UNIT, NOTIFY_UNIT):
        copy = folder / unit.name
        copy.write_text(unit.read_text().replace(f"ExecStart={BINARY}", "ExecStart=/bin/true"))
        copies.append(copy)
    return copies


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts both units without a single warning (it exits 0 on
    unknown keys and bad values, so its output must be empty of them too)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        print("skipped: systemd-analyze is not on PATH (apt-get install systemd)")
        pytest.skip("systemd-analyze is not on PATH")
    res = subprocess.run(
        [tool, "verify", "--man=no", *map(str, verifiable_copies(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    ours = [line for line in (res.stdout + res.stderr).splitlines() if "market-monitor" in line]
    assert ours == []


def test_units_are_well_sandboxed_by_systemd_analyze_security(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates both units' exposure 2.5 or lower ("OK")."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        print("skipped: systemd-analyze is not on PATH (apt-get install systemd)")
        pytest.skip("systemd-analyze is not on PATH")
    for copy in verifiable_copies(tmp_path):
        res = subprocess.run(
            [tool, "security", "--offline=yes", "--no-pager", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "--offline" in res.stderr and res.returncode != 0:
            print(f"skipped: this systemd-analyze has no --offline: {res.stderr.strip()}")
            pytest.skip("systemd-analyze security --offline is not supported")
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
        assert found is not None, res.stdout + res.stderr
        assert float(found.group(1)) <= 2.5, res.stdout


MDWE_SCRIPT = """
import ctypes, mmap, runpy, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(76)
except PermissionError:
    pass
sys.argv = ["market-monitor", "demo"]
runpy.run_module("monitor", run_name="__main__")
"""


def test_the_demo_runs_where_writable_executable_memory_is_denied(tmp_path: Path) -> None:
    """With W+X memory denied (the kernel's MDWE, as MemoryDenyWriteExecute=yes does) and
    POLARS_SKIP_CPU_CHECK=1 as the units set it, the whole demo still runs."""
    env = {**os.environ, "POLARS_SKIP_CPU_CHECK": "1"}
    res = subprocess.run(
        [sys.executable, "-c", MDWE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    if res.returncode == 77:
        print("skipped: this kernel has no PR_SET_MDWE (Linux 6.3+)")
        pytest.skip("no PR_SET_MDWE on this kernel")
    assert res.returncode != 76, "PR_SET_MDWE did not deny W+X memory"
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Russell 2000 rose 11.5% in 5 sessions" in res.stdout
