"""The notifier's file paths: `ca_file`, `password_file` and receivers' `url_file` are relative to
its config file, and a `ca_file` that cannot be read is a config error naming it (exit 78), not
an unreachable Redis (69, which systemd retries for ever)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.notify import config as ncfg
from monitor.notify.cli import main as notify_main
from tests.cli_here import cli_here
from tests.security.pki import Pki


def write(tmp: Path, redis: str, receiver: str = 'url = "json://127.0.0.1:9/alerts"') -> Path:
    """A notifier config in tmp with these `[redis]` lines and one receiver."""
    path = tmp / "notify.toml"
    path.write_text(
        f"[redis]\n{redis}\n"
        f'[[receivers]]\nname = "hook"\n{receiver}\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    return path


def test_a_missing_ca_file_exits_78_naming_it(tmp_path: Path) -> None:
    """`[redis] ca_file` naming no file: `notify` exits 78 with one line naming the field and
    the file (resolved beside the config), before any connection is tried."""
    conf = write(tmp_path, 'url = "rediss://127.0.0.1:6380/0"\nca_file = "ca.pem"')
    res = cli_here("notify", "--config", str(conf), entry=notify_main)
    assert (res.returncode, res.stdout, res.stderr) == (
        78,
        "",
        f"market-monitor: config error: {conf}: redis.ca_file: cannot read "
        f"{tmp_path / 'ca.pem'}: No such file or directory\n",
    )


def test_a_ca_file_that_is_a_folder_is_refused_when_the_config_loads(tmp_path: Path) -> None:
    """A `ca_file` that is a folder cannot be read as a certificate: `load` raises ConfigError
    naming the file and `redis.ca_file`."""
    conf = write(tmp_path, f'url = "rediss://127.0.0.1:6380/0"\nca_file = "{tmp_path}"')
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {})
    assert str(caught.value) == (f"{conf}: redis.ca_file: cannot read {tmp_path}: Is a directory")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "unix:///run/redis.sock"])
def test_a_ca_file_without_a_rediss_url_exits_78_naming_it(tmp_path: Path, url: str) -> None:
    """`[redis] ca_file` with a redis:// or unix:// URL: `notify` exits 78 naming the field, as
    the daemon does (it crashed with a TypeError traceback, exit 1, and the check passed)."""
    ca = Pki(tmp_path / "pki").ca
    conf = write(tmp_path, f'url = "{url}"\nca_file = "{ca}"')
    want = f"market-monitor: config error: {conf}: redis.ca_file: needs a rediss:// url\n"
    for command in (["notify"], ["config", "check"]):
        res = cli_here(*command, "--config", str(conf))
        assert (res.returncode, res.stdout, res.stderr) == (78, "", want)


def test_a_ca_file_that_holds_no_certificate_is_refused_naming_it(tmp_path: Path) -> None:
    """A notifier `ca_file` that can be read but holds no certificate is a config error naming
    `redis.ca_file`, as the daemon's (every connection failed, "unreachable", retried)."""
    note = tmp_path / "ca.pem"
    note.write_text("not a certificate\n")
    conf = write(tmp_path, f'url = "rediss://127.0.0.1:6380/0"\nca_file = "{note}"')
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {})
    assert str(caught.value) == (
        f"{conf}: redis.ca_file: {note} holds no CA certificate (PEM: -----BEGIN CERTIFICATE-----"
        " ...)"
    )


def test_relative_files_are_read_beside_the_config_file(tmp_path: Path) -> None:
    """Relative `password_file`, `ca_file` and `url_file` are taken from the config file's folder
    (they were read from the current one), absolute ones as they are; the receiver's URL is read
    from its file there."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hook").write_text("json://127.0.0.1:9/from-file\n")
    shutil.copy(Pki(tmp_path / "pki").ca, credentials / "ca.pem")
    conf = write(
        tmp_path,
        'url = "rediss://127.0.0.1:6380/0"\npassword_file = "credentials/redis"\n'
        'ca_file = "credentials/ca.pem"',
        receiver='url_file = "credentials/hook"',
    )
    config = ncfg.load(conf, {})
    assert (config.redis.password_file, config.redis.ca_file, config.receivers[0].url_file) == (
        str(credentials / "redis"),
        str(credentials / "ca.pem"),
        str(credentials / "hook"),
    )
    url = ncfg.resolve_url(config.receivers[0], "receivers[0].url", {})
    assert str(url) == "json://127.0.0.1:9/from-file"


def test_a_receiver_set_from_the_environment_is_refused_saying_why(tmp_path: Path) -> None:
    """`MARKET_MONITOR_NOTIFY__RECEIVERS__0__URL` is refused: entries of `[[receivers]]` are set
    in the file."""
    conf = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"')
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {"MARKET_MONITOR_NOTIFY__RECEIVERS__0__URL": "json://127.0.0.1:9/x"})
    assert str(caught.value) == (
        "MARKET_MONITOR_NOTIFY__RECEIVERS__0__URL: entries of [[receivers]] cannot be overridden "
        "from the environment (set them in the file)"
    )


@pytest.mark.parametrize(
    ("variable", "array"),
    [
        ("MARKET_MONITOR_NOTIFY__RECEIVERS", "receivers"),
        ("MARKET_MONITOR_NOTIFY__ROUTE__ROUTES", "route.routes"),
    ],
)
def test_a_whole_array_of_tables_set_from_the_environment_is_refused(
    tmp_path: Path, variable: str, array: str
) -> None:
    """`MARKET_MONITOR_NOTIFY__RECEIVERS='[{...}]'` replaced every receiver of the file (and
    `...__ROUTE__ROUTES` the routes), though the docs say they are set in the file only, as
    the daemon refuses `MARKET_MONITOR__FEEDS`: a config error naming the variable now."""
    conf = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"')
    value = '[{name = "hook", url = "json://evil.example/x", receivers = ["hook"]}]'
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {variable: value})
    assert str(caught.value) == (
        f"{variable}: [[{array}]] cannot be overridden from the environment (set it in the file)"
    )


def test_an_infinite_interval_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """`claim_interval_s = inf` passed the types (greater than 0) and would break the timers:
    one line naming the field (from the file, or the variable that set it)."""
    path = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"\nclaim_interval_s = inf')
    with pytest.raises(ConfigError) as caught:
        ncfg.load(path, {})
    assert str(caught.value).endswith(
        "redis.claim_interval_s: not a finite number (inf is no setting: write the number meant)"
    )
    path = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"')
    variable = "MARKET_MONITOR_NOTIFY__REDIS__CLAIM_IDLE_S"
    with pytest.raises(ConfigError, match=variable):
        ncfg.load(path, {variable: "inf"})


def test_a_route_severity_no_alert_has_is_refused_naming_it(tmp_path: Path) -> None:
    """`match.severity = ["urgent"]` (no alert's severity: the route never matched) is refused
    naming the route; a glob that meets one (`"crit*"`) and the four severities load."""
    conf = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"')
    route = '\n[[route.routes]]\nreceivers = ["hook"]\nmatch = {{ severity = {} }}\n'
    text = conf.read_text()
    conf.write_text(text + route.format('["warning", "urgent"]'))
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {})
    assert str(caught.value) == (
        f"{conf}: route.routes[0].match.severity: 'urgent' matches no severity: an alert's is one"
        " of info, notice, warning, critical"
    )
    conf.write_text(text + route.format('["crit*", "info", "notice", "warning", "critical"]'))
    assert ncfg.load(conf, {}).route.routes[0].match.severity[0] == "crit*"


def test_quiet_hours_of_no_length_are_refused_naming_the_receiver(tmp_path: Path) -> None:
    """`quiet_hours = { start = "00:00", end = "00:00" }` (meant as all day, or a slip: they
    never applied, and config check passed them) is refused naming the receiver; hours that
    span midnight load."""
    hours = 'quiet_hours = {{ start = "{}", end = "{}", tz = "America/New_York" }}'
    url = 'url = "json://127.0.0.1:9/alerts"\n'
    conf = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"', url + hours.format("00:00", "00:00"))
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {})
    assert str(caught.value) == (
        f"{conf}: receivers[0].quiet_hours: start and end are both 00:00: quiet hours of no"
        " length, which never apply (they are from start to end, and may span midnight: 22:00"
        " to 07:00)"
    )
    conf = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"', url + hours.format("22:00", "07:00"))
    assert ncfg.load(conf, {}).receivers[0].quiet_hours is not None


@pytest.mark.parametrize("field", ["stream", "group"])
def test_an_empty_stream_or_group_is_refused_naming_where_it_was_set(
    tmp_path: Path, field: str
) -> None:
    """`[redis] stream = ""` or `MARKET_MONITOR_NOTIFY__REDIS__STREAM=` (a compose file's
    `${VAR}` unset; the same for group) is refused naming the field or the variable: before, the
    notifier read a stream named "" and told nothing of the daemon's alerts."""
    conf = write(tmp_path, f'url = "redis://127.0.0.1:6379/0"\n{field} = ""')
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {})
    assert str(caught.value) == f"{conf}: redis.{field}: Expected `str` of length >= 1"
    conf = write(tmp_path, 'url = "redis://127.0.0.1:6379/0"')
    variable = f"MARKET_MONITOR_NOTIFY__REDIS__{field.upper()}"
    with pytest.raises(ConfigError) as caught:
        ncfg.load(conf, {variable: ""})
    assert str(caught.value) == f"{variable}: Expected `str` of length >= 1"
