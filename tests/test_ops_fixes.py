"""What an operator's review found: systemd credentials and `config check`, where each of two
Redis password settings came from, `tail` refused for its password, compose secrets and the
credential warning, a port in use, and the alert's rule and symbol in `alert_published`."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor import config as cfg
from monitor import credentials
from monitor.alerts.outbox import Outbox
from monitor.alerts.redis_sink import AUTH_FIX, RedisPublisher
from monitor.config_check import config_check
from monitor.errors import EX_OSERR, ConfigError
from monitor.http import PortUnavailable, check_listen
from tests.alerts.redis_server import RedisServer
from tests.alerts.test_redis_sink import make_alerts
from tests.cli_here import cli_here
from tests.conftest import DATA, ROOT, RULES
from tests.test_commands import cli
from tests.test_service import write_config

README = ROOT / "README.md"
DAEMON_UNIT = ROOT / "deploy" / "systemd" / "market-monitor.service"
MQTT = 'kind = "mqtt"\nurl = "mqtt://127.0.0.1:1883"\ntopics = ["market/#"]\nusername = "monitor"'


def write(tmp: Path, body: str) -> Path:
    """A daemon config of mode 0600 in tmp with this body and the shipped rules."""
    path = tmp / "monitor.toml"
    path.write_text(f'{body}\n[rules]\nfile = "{RULES}"\n')
    path.chmod(0o600)
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str], fmt: str = "toml") -> tuple[int, str]:
    """`config check --config path`: exit code and stderr (stdout is read and dropped)."""
    code = config_check(argparse.Namespace(config=str(path), format=fmt))
    return code, capsys.readouterr().err


# ---- 1. systemd credentials: `config check` before the unit runs ------------------------------


def test_config_check_warns_of_a_credential_of_a_unit_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A feed's `password_file` under /run/credentials/UNIT/ while that folder does not exist
    (systemd makes it only while the unit runs): `config check` exits 0 with one warning
    saying so and how to check it in the unit, and lists the secret as not read (it exited 78
    "cannot read", though the README says to check before any start)."""
    unit = f"mm-test-{uuid.uuid4().hex[:8]}.service"
    file = f"/run/credentials/{unit}/mqtt-password"
    conf = write(tmp_path, f'[[feeds]]\n{MQTT}\npassword_file = "{file}"')
    code, err = check(conf, capsys)
    assert code == 0, err
    assert err.splitlines()[0] == (
        f"market-monitor: warning: feeds[0].password_file: {file} not read: a systemd "
        f"credential: systemd creates /run/credentials/{unit}/ from the unit's LoadCredential= "
        f"only while {unit} runs. Check the file LoadCredential= reads it from, then `systemctl "
        f"start {unit}` and `systemctl status {unit}`: a missing source fails the start "
        "(status=243/CREDENTIALS), an empty one exits 78 naming feeds[0].password_file "
        f"(`journalctl -u {unit} -n 20`)"
    )
    config_check(argparse.Namespace(config=str(conf), format="json"))
    shown = json.loads(capsys.readouterr().out)["secrets"]
    assert shown == {"feeds[0].password_file": f"not read: {file} exists only while {unit} runs"}


def test_a_missing_credential_of_a_unit_not_running_still_stops_run_saying_why() -> None:
    """The daemon itself cannot run without the secret: its error (exit 78) names the field and
    the file, and says the folder exists only while the unit runs."""
    unit = f"mm-test-{uuid.uuid4().hex[:8]}.service"
    file = f"/run/credentials/{unit}/mqtt-password"
    with pytest.raises(ConfigError) as raised:
        credentials.secret("feeds[0].password", env_name="", file_name=file)
    assert str(raised.value) == (
        f"feeds[0].password_file: cannot read {file}: No such file or directory (a systemd "
        f"credential: systemd creates /run/credentials/{unit}/ from the unit's LoadCredential= "
        f"only while {unit} runs)"
    )


def test_tail_refused_for_want_of_a_password_says_what_supplies_it(tmp_path: Path) -> None:
    """`tail --config` against a Redis that requires a password the config does not give (the
    systemd setup, run from a shell): exit 78 with Redis's refusal and the daemon's fix, naming
    the variable the unit supplies the password by; with a wrong password from a file, the fix
    names that file and where it was set."""
    password = secrets.token_hex(12)
    with RedisServer(None, "--requirepass", password) as redis:
        conf = write(tmp_path, f'[redis]\nurl = "{redis.url}"')
        res = cli_here("tail", "--config", str(conf), "--count", "1")
        variable = "MARKET_MONITOR__REDIS__PASSWORD_FILE"
        assert (res.returncode, res.stderr.partition("; fix: ")[2]) == (
            78,
            f"{AUTH_FIX}: {conf} sets none, nor does a MARKET_MONITOR__REDIS__PASSWORD_ENV or "
            f"{variable} variable here (the shipped systemd unit sets {variable} in its own "
            f"environment, which a shell does not have; as root: {variable}="
            f"/etc/market-monitor/credentials/redis-password market-monitor tail --config "
            f"{conf})\n",
        )
        assert res.stderr.startswith(f"market-monitor: config error: redis at {redis.url}: ")
        wrong = tmp_path / "redis-password"
        wrong.write_text("not-the-password\n")
        wrong.chmod(0o600)
        res = cli_here("tail", "--config", str(conf), env={variable: str(wrong)})
        assert (res.returncode, res.stderr.partition("; fix: ")[2]) == (
            78,
            f"{AUTH_FIX}: tail sent the password of [redis] password_file = '{wrong}' "
            f"({variable})\n",
        )
        # A wrong password in --url: the fix is about that password, not --config's keys.
        url = redis.url.replace("redis://", "redis://:not-the-password@")
        res = cli_here("tail", "--url", url, "--count", "1")
        assert res.returncode == 78
        assert "the password in --url was refused" in res.stderr.partition("; fix: ")[2]
        assert "not-the-password" not in res.stderr
    assert password not in res.stderr


# ---- 2. password_env in the file, password_file from the unit's environment --------------------


def test_both_redis_passwords_say_where_each_was_set(tmp_path: Path) -> None:
    """`password_env` in the file and the unit's MARKET_MONITOR__REDIS__PASSWORD_FILE: the
    error names the file for the one and the variable for the other (it named the file only);
    both in the file keep the one-place message. The unit no longer says password_env wins."""
    conf = write(tmp_path, '[redis]\npassword_env = "REDIS_PASSWORD"')
    variable = "MARKET_MONITOR__REDIS__PASSWORD_FILE"
    with pytest.raises(ConfigError) as raised:
        cfg.load(conf, {variable: "/run/credentials/market-monitor.service/redis-password"})
    assert str(raised.value) == (
        f"redis.password_env (set in {conf}) and redis.password_file (set by {variable}): "
        "set password_env or password_file, not both"
    )
    conf = write(tmp_path, '[redis]\npassword_env = "REDIS_PASSWORD"\npassword_file = "p"')
    with pytest.raises(ConfigError) as raised:
        cfg.load(conf, {})
    assert str(raised.value) == (
        f"{conf}: redis.password_env: set password_env or password_file, not both"
    )
    assert "wins over" not in DAEMON_UNIT.read_text()


# ---- 3. compose secrets and `credential_readable_by_others` ------------------------------------


def test_only_a_credential_of_the_daemons_own_user_is_too_open(tmp_path: Path) -> None:
    """A 0644 credential file of the process's own user is too open (it can chmod go-rwx and
    still read it); one of another owner (a compose secret, the host user's file) is not: its
    chmod would lock the daemon out. A 0600 file is fine either way."""
    if os.geteuid() != 0:
        print("skipped: giving a file to another user needs root")
        pytest.skip("needs root to chown a file")
    mine, theirs, tight = (tmp_path / name for name in ("mine", "theirs", "tight"))
    for path, mode in ((mine, 0o644), (theirs, 0o644), (tight, 0o600)):
        path.write_text("secret\n")
        path.chmod(mode)
    os.chown(theirs, 10001, 10001)
    found = {p.name: credentials.credential_too_open(p) for p in (mine, theirs, tight)}
    assert found == {"mine": True, "theirs": False, "tight": False}


@pytest.mark.integration
@pytest.mark.parametrize(("owner", "warned"), [("self", True), ("other", False)])
def test_run_warns_of_an_open_credential_only_when_its_user_owns_it(
    tmp_path: Path, owner: str, warned: bool
) -> None:
    """A 0644 Redis password file: the daemon warns `credential_readable_by_others` with its
    chmod fix when it owns the file; for a file of another user (the compose setup: the host
    user's secret, uid 10001 reading it as "others") it says nothing, on every start."""
    if os.geteuid() != 0:
        print("skipped: giving a file to another user needs root")
        pytest.skip("needs root to chown a file")
    password = secrets.token_hex(12)
    file = tmp_path / "redis-password"
    file.write_text(password + "\n")
    file.chmod(0o644)
    if owner == "other":
        os.chown(file, 10001, 10001)
    name = f"mm-ops-{uuid.uuid4().hex[:8]}"
    with RedisServer(None, "--requirepass", password) as redis:
        conf = write(
            tmp_path,
            f'[store]\npath = "{tmp_path / "store"}"\n'
            f'[[feeds]]\nkind = "replay"\nname = "history"\n'
            f'data = ["IWM={DATA / "iwm_daily_adj_2023_2024.csv"}"]\nstart = "2024-12-24"\n'
            "speed = 3456000\nexit_when_done = true\n"
            f'[redis]\nurl = "{redis.url}"\nstream = "{name}"\nchannel = "{name}"\n'
            f'password_file = "{file}"\n[http]\nport = 0\n[shutdown]\ngrace_s = 2\n'
            '[log]\njson = true\nlevel = "warning"',
        )
        res = cli("run", "--config", str(conf), timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    logged = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    said = [(e["path"], e["fix"]) for e in logged if e["event"] == "credential_readable_by_others"]
    assert said == ([(str(file), f"chmod go-rwx {file}")] if warned else [])
    assert password not in res.stderr + res.stdout


# ---- 4. a port in use ------------------------------------------------------------------------


def test_a_port_in_use_exits_71_before_the_history_is_loaded(tmp_path: Path) -> None:
    """`[http] port` taken: `run` exits 71 (EX_OSERR, restarted by systemd; not 74, a store's)
    with one line naming the address, before reading the store: a corrupt bar history there
    is not reached (with the port free, it is: exit 74)."""
    conf = write_config(tmp_path, f"mm-port-{uuid.uuid4().hex[:8]}")
    bars = tmp_path / "store" / "bars_daily.parquet"
    bars.parent.mkdir()
    bars.write_bytes(b"PAR1 not parquet at all")
    quiet = {"MARKET_MONITOR__LOG__LEVEL": "error"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = cli_here(
            "run", "--config", str(conf), env={**quiet, "MARKET_MONITOR__HTTP__PORT": str(port)}
        )
        with pytest.raises(PortUnavailable) as raised:
            check_listen("127.0.0.1", port)
    line = f"[http] cannot listen on 127.0.0.1:{port}: Address already in use"
    assert (res.returncode, res.stderr) == (EX_OSERR, f"market-monitor: error: {line}\n")
    assert str(raised.value) == line
    res = cli_here("run", "--config", str(conf), env=quiet)
    assert res.returncode == 74 and str(bars) in res.stderr


def test_a_family_the_machine_cannot_open_is_skipped_as_the_server_skips_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IPv6 off (kernel, or a unit's RestrictAddressFamilies=): the check of a host that
    resolves to both passes on IPv4, as asyncio's server listens there (it raised EAFNOSUPPORT,
    a traceback, where the daemon would have started)."""
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", no_ipv6)
    check_listen("", 0)  # (every address of the machine, both families)


def test_troubleshooting_documents_exit_71_and_the_unit_restarts_it() -> None:
    """The README's Troubleshooting has a row for status 71 (the port) apart from 74's store
    problem, and the unit does not keep systemd from restarting 71."""
    table = README.read_text().split("### Troubleshooting", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `status=71/OSERR`")]
    assert len(rows) == 1 and "[http] cannot listen on" in rows[0]
    prevent = [
        line.partition("=")[2].split()
        for line in DAEMON_UNIT.read_text().splitlines()
        if line.startswith("RestartPreventExitStatus=")
    ]
    assert prevent == [["65", "78"]]


# ---- 5. the README's backfill example --------------------------------------------------------


def test_the_readmes_backfill_example_names_files_that_exist() -> None:
    """Every `--data` file of the backfill command in "Point it at a real broker and Redis" is
    in the repository (it named rut.csv and iwm.csv, which are not), and the section says what
    the files are."""
    section = README.read_text().split("## Point it at a real broker and Redis", 1)[1]
    section = section.split("\n## ", 1)[0]
    command = section.split("backfill --config", 1)[1].split("\n.venv/bin/", 1)[0]
    paths = [arg.partition("=")[2] for arg in command.split() if "=" in arg]
    assert paths and [(p, (ROOT / p).is_file()) for p in paths] == [(p, True) for p in paths]
    text = " ".join(section.split())
    assert "The `--data` files are your own daily history" in text
    assert "as `replay` reads them" in text


# ---- 6. `alert_published` names the alert's rule and symbol ------------------------------------


@pytest.mark.integration
async def test_alert_published_logs_the_rule_and_symbol(tmp_path: Path) -> None:
    """The publisher's `alert_published` line carries the alert's id, seq, rule and symbol, so
    on-call can grep the journal for an alert by what it is about."""
    prefix = f"test:ops:{uuid.uuid4().hex[:12]}"
    alerts = make_alerts(prefix, 0, 2)
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        async with RedisPublisher(
            "redis://127.0.0.1:6379/0", f"{prefix}:ch", f"{prefix}:stream", outbox
        ) as publisher:
            publisher.submit(alerts)
            with capture_logs() as logs:
                assert await publisher.flush(5.0) is True
    import redis

    client = redis.Redis()
    try:
        client.delete(f"{prefix}:stream", *(f"{prefix}:stream:published:{a.id}" for a in alerts))
    finally:
        client.close()
    published = [
        {k: e[k] for k in ("id", "seq", "rule", "symbol")}
        for e in logs
        if e["event"] == "alert_published"
    ]
    assert published == [
        {"id": a.id, "seq": i + 1, "rule": "surge.volume", "symbol": a.symbol}
        for i, a in enumerate(alerts)
    ]
