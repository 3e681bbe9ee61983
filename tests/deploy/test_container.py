"""The container files: compose validates, the image is built as documented, Mosquitto's config
is one Mosquitto 2 runs with."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONTAINER = ROOT / "deploy" / "container"
SECRETS = ("redis-password", "mqtt-password", "mosquitto-passwd", "notify-url")


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever runs here."""
    docker = shutil.which("docker")
    if docker is not None:
        res = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if res.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 is not None else None


def test_compose_file_validates(tmp_path: Path) -> None:
    """`docker compose config` (no engine needed) accepts compose.yaml, with the four services,
    their health-gated start order, secrets as files and the daemon's state on a volume."""
    import yaml

    command = compose_command()
    if command is None:
        print("skipped: neither `docker compose` nor `docker-compose` runs here")
        pytest.skip("no docker compose client")
    # A copy with the secret files present, laid out as in the repository (../../config).
    project = tmp_path / "repo"
    shutil.copytree(CONTAINER, project / "deploy" / "container")
    (project / "config").mkdir()
    shutil.copy2(ROOT / "config" / "rules.toml", project / "config" / "rules.toml")
    (project / "deploy" / "container" / "secrets").mkdir()
    for name in SECRETS:
        (project / "deploy" / "container" / "secrets" / name).write_text("x\n")
    res = subprocess.run(
        [*command, "-p", "market-monitor", "-f",
         str(project / "deploy" / "container" / "compose.yaml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=project,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout)
    services = config["services"]
    assert sorted(services) == ["market-monitor", "mosquitto", "notifier", "redis"]
    monitor = services["market-monitor"]
    assert monitor["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "mosquitto": {"condition": "service_healthy"},
    }
    assert services["notifier"]["depends_on"]["market-monitor"] == {"condition": "service_healthy"}
    assert all("healthcheck" in s for s in services.values())
    checks = [" ".join(s["healthcheck"]["test"][1:]) for s in services.values()]
    assert [password_arguments(check) for check in checks] == [[]] * len(checks)
    assert sorted(config["secrets"]) == sorted(SECRETS)
    assert [s["source"] for s in monitor["secrets"]] == ["redis-password", "mqtt-password"]
    assert "monitor-data:/var/lib/market-monitor:rw" in monitor["volumes"]
    assert services["notifier"]["command"][:1] == ["notify"]


def test_dockerfile_builds_in_two_stages_and_runs_as_a_user() -> None:
    """The image: a builder stage making wheels, a slim final stage without build tools running
    as a non-root user, a /healthz health check, port 9108 and the documented command."""
    text = (CONTAINER / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM python:3.11-slim AS builder", "FROM python:3.11-slim"]
    final = text.split("FROM python:3.11-slim\n", 1)[1]
    assert "pip wheel --no-deps -w /wheels ." in text
    assert "-c constraints.txt" in text
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final
    assert "\nUSER market-monitor\n" in final
    assert "HEALTHCHECK_URL=http://127.0.0.1:9108/healthz" in final
    assert "\nEXPOSE 9108\n" in final
    assert '\nENTRYPOINT ["market-monitor"]\n' in final
    assert '\nCMD ["run", "--config", "/etc/market-monitor/monitor.toml"]\n' in final


@pytest.fixture
def shipped_mosquitto(tmp_path: Path) -> Iterator[int]:
    """Mosquitto running the shipped mosquitto.conf (port, paths and user adapted, a password
    file with user `monitor`, password `pw`); yields its port."""
    from tests.feeds.mosquitto_server import MOSQUITTO, free_port

    passwd = shutil.which("mosquitto_passwd")
    if not Path(MOSQUITTO).exists() or passwd is None:
        print("skipped: mosquitto or mosquitto_passwd is not installed")
        pytest.skip("no mosquitto")
    port = free_port()
    subprocess.run([passwd, "-c", "-b", str(tmp_path / "passwd"), "monitor", "pw"], check=True)
    (tmp_path / "data").mkdir()
    conf = (CONTAINER / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/run/secrets/mosquitto-passwd", str(tmp_path / "passwd"))
    conf = conf.replace("/mosquitto/data/", f"{tmp_path / 'data'}/")
    user = pwd.getpwuid(os.getuid()).pw_name
    (tmp_path / "mosquitto.conf").write_text(f"{conf}user {user}\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.integration
async def test_mosquitto_conf_runs_on_mosquitto_2_and_refuses_anonymous_clients(
    shipped_mosquitto: int,
) -> None:
    """The shipped mosquitto.conf starts Mosquitto 2, which lets the daemon's user in and
    refuses a client without a password."""
    import aiomqtt

    async with aiomqtt.Client(
        "127.0.0.1", shipped_mosquitto, username="monitor", password="pw"
    ) as client:
        await client.publish("market/check", b"{}", qos=1)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", shipped_mosquitto):
            pass


# Options that put a password on a client's command line (`ps`, `docker inspect` show it).
PASSWORD_OPTIONS = {
    "mosquitto_sub": ("-P", "--pw", "-L", "--url"),
    "mosquitto_pub": ("-P", "--pw", "-L", "--url"),
    "mosquitto_rr": ("-P", "--pw", "-L", "--url"),
    "redis-cli": ("-a", "--pass", "--user", "-u"),
}


def password_arguments(command: str) -> list[str]:
    """The arguments of the MQTT and Redis clients in a shell command that give a password
    (`-P`, a `-L mqtt://user:pass@` URL, `redis-cli -a`), each as `client option`."""
    import shlex

    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    found: list[str] = []
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|()"):  # (the end of one simple command)
            while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words = words[1:]  # (VAR=x prefixes)
            names = words
            if names and names[0].rsplit("/", 1)[-1] in PASSWORD_OPTIONS:
                client = names[0].rsplit("/", 1)[-1]
                found += [
                    f"{client} {w}"
                    for w in names[1:]
                    if w in PASSWORD_OPTIONS[client] or w.startswith(("--pw=", "--pass="))
                ]
            words = []
        else:
            words.append(token)
    return found


def test_no_healthcheck_puts_a_password_on_a_command_line() -> None:
    """No compose healthcheck gives an MQTT or Redis client its password as an argument
    (mosquitto_sub's `-P` did: the password showed in `ps` on the host while the check ran);
    the checker itself finds `-P` after a variable prefix and in a pipeline."""
    import yaml

    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    checks = {
        name: " ".join(service["healthcheck"]["test"][1:])
        for name, service in compose["services"].items()
    }
    assert {name: password_arguments(check) for name, check in checks.items()} == {
        name: [] for name in checks
    }
    assert password_arguments(
        'A=1 mosquitto_sub -t x -u monitor -P "$$(cat /s)" | grep -q x; redis-cli -a pw ping;'
        " d=1 && mosquitto_pub --pw=x -t y"
    ) == ["mosquitto_sub -P", "redis-cli -a", "mosquitto_pub --pw=x"]


@pytest.mark.integration
def test_the_mosquitto_healthcheck_logs_in_with_the_secret_file(
    shipped_mosquitto: int, tmp_path: Path
) -> None:
    """compose.yaml's Mosquitto healthcheck, run by a POSIX shell against the shipped
    mosquitto.conf, passes with the right password in the secret file, fails with a wrong
    one, and leaves no options file behind."""
    import yaml

    if shutil.which("mosquitto_sub") is None:
        print("skipped: mosquitto_sub is not installed")
        pytest.skip("no mosquitto_sub")
    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    test = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    secret = tmp_path / "mqtt-password"
    command = (
        test[1]
        .replace("$$", "$")  # (compose's escape of a `$` for the shell)
        .replace("/run/secrets/mqtt-password", str(secret))
        .replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {shipped_mosquitto}")
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    codes = []
    for password in ("pw\n", "wrong\n"):
        secret.write_text(password)
        run = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30)
        codes.append(run.returncode)
    assert codes[0] == 0 and codes[1] != 0, codes
    assert list(temp.iterdir()) == []
