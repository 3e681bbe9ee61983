"""`market-monitor config check` given the notifier's config (it has `[[receivers]]`) checks it
as the notifier reads it, instead of refusing it as a daemon config with a misleading error."""

from __future__ import annotations

from pathlib import Path

from tests.cli_here import cli_here
from tests.conftest import ROOT

EXAMPLE = ROOT / "config" / "notify.example.toml"
SECRETS = {"SLACK_TOKEN": "a/b/c", "SMTP_USER": "u", "SMTP_PASSWORD": "p"}


def test_config_check_reads_a_notifier_config_as_the_notifier_does(tmp_path: Path) -> None:
    ok = cli_here("config", "check", "--config", str(EXAMPLE), env=SECRETS)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert "is a notifier config ([[receivers]]) and reads as one: receivers chat, email," in (
        ok.stdout
    )

    typo = tmp_path / "notify.toml"
    typo.write_text(
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:8080/a"\nmax_attempt = 3\n'
    )
    bad = cli_here("config", "check", "--config", str(typo), env=SECRETS)
    assert bad.returncode == 78
    assert bad.stderr.startswith("market-monitor: config error: ")
    assert "max_attempt" in bad.stderr

    unset = cli_here("config", "check", "--config", str(EXAMPLE), env={})
    assert (unset.returncode, unset.stderr.strip()) == (
        78,
        f"market-monitor: config error: {EXAMPLE}: receivers[0].url: environment variable"
        " SLACK_TOKEN is not set",
    )

    unusable = tmp_path / "unusable.toml"
    unusable.write_text(
        '[[receivers]]\nname = "x"\nurl = "mailto://u@h?api_base=http://h"\n'
        '[route]\nreceivers = ["x"]\n'
    )
    res = cli_here("config", "check", "--config", str(unusable), env={})
    assert res.returncode == 78 and "receivers[0].url" in res.stderr, res.stderr


def test_config_check_of_a_notifier_config_with_unit_credentials_warns_not_fails(
    tmp_path: Path,
) -> None:
    """The systemd layout the notify unit's header gives (a receiver's `url_file` under
    /run/credentials/market-monitor-notify.service/, which exists only while the unit runs),
    checked from a shell: a warning saying so, exit 0, as the daemon's config check does."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        '[[receivers]]\nname = "ops"\n'
        'url_file = "/run/credentials/market-monitor-notify.service/ops"\n'
        '[route]\nreceivers = ["ops"]\n'
    )
    res = cli_here("config", "check", "--config", str(conf), env={})
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith(
        "market-monitor: warning: receivers[0].url_file: "
        "/run/credentials/market-monitor-notify.service/ops not read: a systemd credential"
    )


def test_config_check_of_a_notifier_config_resolves_its_redis_login(tmp_path: Path) -> None:
    """The notifier's `[redis] password_env` naming no variable and `password_file` naming no
    file fail the check with notify's own line (exit 78; it said "reads as one", exit 0); a
    `password_file` that is a credential of a unit not running is a warning, exit 0."""
    conf = tmp_path / "notify.toml"
    receiver = '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/a"\n'
    receiver += '[route]\nreceivers = ["hook"]\n'
    missing = tmp_path / "no-such-pw"
    for login, said in (
        ('password_env = "MM_TEST_NO_SUCH_PW"', "redis.password_env: environment variable "
         "MM_TEST_NO_SUCH_PW is not set"),
        (f'password_file = "{missing}"', f"redis.password_file: cannot read {missing}: "
         "No such file or directory"),
        ('username_env = "MM_TEST_NO_SUCH_USER"', "redis.username_env: environment variable "
         "MM_TEST_NO_SUCH_USER is not set"),
    ):  # fmt: skip
        conf.write_text(f"[redis]\n{login}\n{receiver}")
        check = cli_here("config", "check", "--config", str(conf), env={})
        notify = cli_here("notify", "--config", str(conf), env={})
        line = f"market-monitor: config error: {said}\n"
        assert (check.returncode, check.stderr) == (notify.returncode, notify.stderr) == (78, line)
    unit = "mm-test-not-running.service"
    conf.write_text(f'[redis]\npassword_file = "/run/credentials/{unit}/redis"\n{receiver}')
    res = cli_here("config", "check", "--config", str(conf), env={})
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith(
        f"market-monitor: warning: redis.password_file: /run/credentials/{unit}/redis not read:"
        " a systemd credential"
    )


def test_config_check_of_a_notifier_config_with_a_misspelt_section_says_notifys_error(
    tmp_path: Path,
) -> None:
    """`[[receiver]]` for `[[receivers]]`: config check reads the file as the notifier's and
    gives notify's line, "did you mean `receivers`?" (it read it as the daemon's: "did you
    mean `rules`?"); a daemon config's misspelt `[stor]` is still read as the daemon's."""
    conf = tmp_path / "notify.toml"
    conf.write_text('[[receiver]]\nname = "hook"\nurl = "json://127.0.0.1:9/a"\n')
    check = cli_here("config", "check", "--config", str(conf), env={})
    notify = cli_here("notify", "--config", str(conf), env={})
    want = (
        f"market-monitor: config error: {conf}: Object contains unknown field `receiver`; did"
        " you mean `receivers`?\n"
    )
    assert (check.returncode, check.stderr) == (notify.returncode, notify.stderr) == (78, want)
    daemon = tmp_path / "monitor.toml"
    daemon.write_text('[stor]\npath = "x"\n')
    res = cli_here("config", "check", "--config", str(daemon), env={})
    assert (res.returncode, res.stderr) == (
        78,
        f"market-monitor: config error: {daemon}: Object contains unknown field `stor`; did you"
        " mean `store`?\n",
    )


def test_a_notifier_allowed_host_that_is_no_host_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    """The notifier's `[http] allowed_hosts` is checked as the daemon's: a URL in it fails
    `config check` (exit 78) naming the file and field; host names pass."""
    conf = tmp_path / "notify.toml"
    base = (
        '[[receivers]]\nname = "x"\nurl = "json://127.0.0.1:8080/a"\n[route]\nreceivers = ["x"]\n'
    )
    conf.write_text(base + '[http]\nenabled = true\nallowed_hosts = ["https://notify.example"]\n')
    bad = cli_here("config", "check", "--config", str(conf), env={})
    assert (bad.returncode, bad.stderr) == (
        78,
        f"market-monitor: config error: {conf}: http.allowed_hosts: 'https://notify.example' is"
        " not a host: give a name with or without a port (monitor.example.com, *.example.com,"
        " 192.0.2.7:9108)\n",
    )
    conf.write_text(base + '[http]\nenabled = true\nallowed_hosts = ["notify.example", "*.a.b"]\n')
    assert cli_here("config", "check", "--config", str(conf), env={}).returncode == 0


def test_config_check_warns_of_http_settings_with_the_port_switched_off(tmp_path: Path) -> None:
    """`[http] port = 19109` without `enabled = true` (the notifier's port is off by default,
    the daemon's on): config check warns that nothing is served, and still exits 0. Nothing
    said so: the notifier ran without a port, and `status --url` at it said "down"."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:8080/a"\n'
        '[route]\nreceivers = ["hook"]\n[http]\nport = 19109\n'
    )
    res = cli_here("config", "check", "--config", str(conf), env={})
    assert (res.returncode, res.stderr) == (
        0,
        "market-monitor: warning: http: host, port or allowed_hosts is set but enabled is false"
        " (the default): no /healthz or /metrics is served; set enabled = true\n",
    )
    conf.write_text(conf.read_text() + "enabled = true\n")
    assert cli_here("config", "check", "--config", str(conf), env={}).stderr == ""


def test_config_check_json_of_a_notifier_config_is_its_configuration_as_json(
    tmp_path: Path,
) -> None:
    """`--format json` of a notifier config printed the line for people, which a script reading
    JSON fails on: it is now the effective configuration, secrets masked (a receiver's URL
    written out whole past its scheme, a template kept; the Redis password), with where each
    secret was read from."""
    import json

    ok = cli_here("config", "check", "--config", str(EXAMPLE), "--format", "json", env=SECRETS)
    assert (ok.returncode, ok.stderr) == (0, "")
    data = json.loads(ok.stdout)
    assert [r["name"] for r in data["receivers"]][:2] == ["chat", "email"]
    assert data["receivers"][0]["url"] == "slack://{SLACK_TOKEN}/#market-alerts"
    assert data["redis"]["stream"] == "market-monitor:alerts"

    whole = tmp_path / "notify.toml"
    whole.write_text(
        '[redis]\nurl = "redis://u:hunter2@127.0.0.1:6379/0"\npassword_env = "RPW"\n'
        '[[receivers]]\nname = "hook"\nurl = "jsons://hooks.example.com/services/T0/B0/s3cr3t"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    out = cli_here("config", "check", "--config", str(whole), "--format", "json", env={"RPW": "pw"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["receivers"][0]["url"] == "jsons://***"
    assert data["redis"]["url"] == "redis://u:***@127.0.0.1:6379/0"
    assert data["secrets"] == {"redis.password": "*** (environment RPW)"}
    assert "s3cr3t" not in out.stdout and "hunter2" not in out.stdout
