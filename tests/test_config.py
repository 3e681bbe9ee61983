"""Loading the daemon's config: what `config check` accepts, `run` accepts, with the same words."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from monitor import config as cfg
from monitor import credentials
from monitor.errors import ConfigError
from tests.cli_here import cli_here
from tests.conftest import NO_SHORT_INTEREST_NOTE
from tests.security.pki import Pki
from tests.test_service import write_config

FEED_URL = 'url = "mqtt://127.0.0.1:1883"'
REDIS_URL = 'url = "redis://127.0.0.1:6379/0"'
TOPICS = 'topics = ["mm-urls/#"]'
# The mqtt feed of `write_config` for the prefix "mm-urls", whole: a test making it another
# kind of feed drops its mqtt settings (another kind's setting is refused).
MQTT_FEED = (
    'kind = "mqtt"\nname = "broker"\nurl = "mqtt://127.0.0.1:1883"\ntopics = ["{prefix}/#"]\n'
    'qos = 1\nclient_id = "{prefix}-daemon"\nsession_expiry_s = 60\n'
)
FIELD_KEYS = (
    "symbol, ts, price, size, id, timeframe, start, session, open, high, low, close, volume"
)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            'url = "redis://127.0.0.1:6379/0"',
            'url = "http://viewer:s3cret@127.0.0.1:6379/0"',
            "redis.url: must be redis://... or rediss://..., not 'http://127.0.0.1:6379/…'",
        ),
        (
            REDIS_URL,
            'url = "redis://127.0.0.1:116999/0"',
            "redis.url: not a valid url (a port outside 1-65535): 'redis://127.0.0.1:116999/…'",
        ),
        (
            REDIS_URL,
            'url = "rediss://127.0.0.1:0"',
            "redis.url: not a valid url (a port outside 1-65535): 'rediss://127.0.0.1:0'",
        ),
        (
            REDIS_URL,
            'url = "redis://monitor:s3cret@127.0.0.1:63x9/0"',
            "redis.url: not a valid url (a port that is not a number, or a broken [IPv6] host): "
            "'redis://127.0.0.1:63x9/…'",
        ),
        (
            REDIS_URL,
            'url = "redis://:6379/0"',
            "redis.url: must be redis://host[:port][/db], not 'redis://:6379/…'",
        ),
        (
            REDIS_URL,
            'url = "redis://127.0.0.1:6379/0?socket_timeout=soon"',
            "redis.url: not a valid url (Invalid value for 'socket_timeout'): "
            "'redis://127.0.0.1:6379/…'",
        ),
        (
            REDIS_URL,
            'url = "unix:///run/redis/redis.sock"',
            "redis.url: must be redis://... or rediss://..., not 'unix:///…'",
        ),
        (
            'url = "redis://127.0.0.1:6379/0"',
            'url = "redis://127.0.0.1:6379/0"\nca_file = "ca.pem"',
            "redis.ca_file: needs a rediss:// url",
        ),
        (
            FEED_URL,
            'url = "ftp://127.0.0.1:1883"',
            "feeds[0].url: must be mqtt://host[:port] or mqtts://host[:port], "
            "not 'ftp://127.0.0.1:1883'",
        ),
        (
            FEED_URL,
            'url = "mqtt://127.0.0.1:port"',
            "feeds[0].url: not a valid url (a port that is not a number, or a broken [IPv6] "
            "host): 'mqtt://127.0.0.1:port'",
        ),
        (
            FEED_URL,
            'url = "mqtt://127.0.0.1:99999"',
            "feeds[0].url: not a valid url (a port outside 1-65535): 'mqtt://127.0.0.1:99999'",
        ),
        (
            MQTT_FEED.format(prefix="mm-urls"),
            'kind = "websocket"\nurl = "https://stream.example.com/v2"\n',
            "feeds[0].url: must be ws://... or wss://..., not 'https://stream.example.com/…'",
        ),
        (
            TOPICS,
            f'{TOPICS}\nsymbols = ["IWM"]',
            "feeds[0].symbols: a setting of websocket feeds, not of an mqtt feed: remove it",
        ),
        (
            FEED_URL,
            'url = "mqtt://monitor:s3cret@127.0.0.1:1883"',
            "feeds[0].url: credentials belong in username and password_env or password_file, "
            "not the url: 'mqtt://monitor:***@127.0.0.1:1883'",
        ),
        (
            FEED_URL,
            'url = "mqtt://monitor@127.0.0.1:1883"',
            "feeds[0].url: credentials belong in username and password_env or password_file, "
            "not the url: 'mqtt://monitor@127.0.0.1:1883'",
        ),
        (
            TOPICS,
            f'{TOPICS}\nusername = "monitor"\nusername_env = "MQTT_USER"',
            "feeds[0].username: set one of username, username_env, username_file, not username"
            " and username_env",
        ),
        (
            'topics = ["mm-urls/#"]',
            "topics = []",
            "feeds[0].topics: an mqtt feed needs at least one topic",
        ),
        (
            TOPICS,
            f'{TOPICS}\nfield_map = {{sym = "ticker"}}',
            "feeds[0].field_map: unknown key 'sym' (did you mean 'symbol'?); valid keys: "
            f"{FIELD_KEYS}, ts_unit",
        ),
        (
            TOPICS,
            f'{TOPICS}\nfield_map = {{symbol = "S", quantity = "q"}}',
            f"feeds[0].field_map: unknown key 'quantity'; valid keys: {FIELD_KEYS}, ts_unit",
        ),
        (
            TOPICS,
            f'{TOPICS}\nfield_map = {{ts = "t", ts_unit = "us"}}',
            "feeds[0].field_map.ts_unit: Invalid enum value 'us'",
        ),
        (
            'topics = ["mm-urls/#"]',
            'topics = ["mm-urls/ok", "mm-urls/#/x"]',
            "feeds[0].topics: 'mm-urls/#/x' is no topic filter: a wildcard is a whole level, and"
            " # the last one (a/+/c, a/#)",
        ),
        (
            'topics = ["mm-urls/#"]',
            'topics = ["mm-urls/a+b"]',
            "feeds[0].topics: 'mm-urls/a+b' is no topic filter: a wildcard is a whole level, and"
            " # the last one (a/+/c, a/#)",
        ),
        ('topics = ["mm-urls/#"]', 'topics = [""]', "feeds[0].topics: an empty topic"),
        (
            TOPICS,
            f'{TOPICS}\nusername = "u"\npassword_env = "P"\npassword_file = "p.txt"',
            "feeds[0].password_env: set password_env or password_file, not both",
        ),
        (
            TOPICS,
            f"{TOPICS}\nmax_backlog_mb = inf",
            "feeds[0].max_backlog_mb: not a finite number (inf is no setting: write the number"
            " meant)",
        ),
    ],
    ids=[
        "redis-scheme",
        "redis-port-range",
        "redis-port-zero",
        "redis-port-not-a-number",
        "redis-no-host",
        "redis-query",
        "redis-unix",
        "redis-ca-without-tls",
        "mqtt-scheme",
        "mqtt-port",
        "mqtt-port-range",
        "websocket-scheme",
        "mqtt-websocket-setting",
        "mqtt-credentials",
        "mqtt-user",
        "mqtt-username-twice",
        "mqtt-no-topics",
        "field-map-misspelt-key",
        "field-map-unknown-key",
        "field-map-ts-unit",
        "mqtt-topic-hash-inside",
        "mqtt-topic-plus-in-a-level",
        "mqtt-topic-empty",
        "mqtt-password-twice",
        "mqtt-backlog-inf",
    ],
)
def test_a_url_run_would_refuse_fails_config_check_with_the_same_line(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    """A Redis or feed URL the daemon cannot use (a port out of range or not a number, no host),
    an MQTT feed without topics or a `field_map` its decoder does not take fails `config check`
    and `run` alike: exit 78, one line naming the file and field, the URL's password masked, no
    traceback."""
    conf = write_config(tmp_path, "mm-urls")
    text = conf.read_text()
    assert old in text
    conf.write_text(text.replace(old, new))
    want = f"market-monitor: config error: {conf}: {error}\n"
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)


def test_an_error_in_an_environment_override_names_the_variable(tmp_path: Path) -> None:
    """A bad value, an unknown key or an unusable URL set by a `MARKET_MONITOR__...` variable
    is reported under the variable's name, not the file's (which does not hold it); an error in
    the file still names the file and field."""
    conf = write_config(tmp_path, "mm-env")

    def error(**environ: str) -> str:
        with pytest.raises(ConfigError) as caught:
            cfg.load(conf, environ)
        return str(caught.value)

    assert error(MARKET_MONITOR__HTTP__PORT="abc") == (
        "MARKET_MONITOR__HTTP__PORT: Expected `int`, got `str`"
    )
    assert error(MARKET_MONITOR__HTTP__PROT="1") == (
        "MARKET_MONITOR__HTTP__PROT: Object contains unknown field `prot`; did you mean `port`?"
    )
    assert error(MARKET_MONITOR__REDIS__URL="ftp://127.0.0.1") == (
        "MARKET_MONITOR__REDIS__URL: must be redis://... or rediss://..., not 'ftp://127.0.0.1'"
    )
    stream = cfg.load(conf, {"MARKET_MONITOR__REDIS__STREAM": "2024"}).redis.stream
    assert stream == "2024"  # (a text field takes the text written, not an error for an int)
    conf.write_text(conf.read_text().replace("port = 0", 'port = "abc"'))
    assert error() == f"{conf}: http.port: Expected `int`, got `str`"
    res = cli_here(
        "config", "check", "--config", str(conf), env={"MARKET_MONITOR__HTTP__PORT": "x"}
    )
    assert (res.returncode, res.stderr) == (
        78,
        "market-monitor: config error: MARKET_MONITOR__HTTP__PORT: Expected `int`, got `str`\n",
    )


def test_a_url_error_quotes_neither_password_nor_query(tmp_path: Path) -> None:
    """A password with `#` (which a URL parser takes for a fragment, quoting part of the password
    in its error) or a token in a query never reaches the message: scheme and host only."""
    conf = write_config(tmp_path, "mm-url-secrets")
    text = conf.read_text()
    for url in ("mqtt://ops:pa#Sup3rSecret@127.0.0.1:1883", "mqtt://ops:Sup3r/Secret@broker"):
        conf.write_text(text.replace(FEED_URL, f'url = "{url}"'))
        with pytest.raises(ConfigError) as caught:
            cfg.load(conf, {})
        message = str(caught.value)
        assert "Sup3r" not in message and "'pa'" not in message and "ops" not in message
    conf.write_text(
        text.replace(
            'url = "redis://127.0.0.1:6379/0"', 'url = "https://x.example?token=Sup3rSecret"'
        )
    )
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {})
    assert str(caught.value).endswith("not 'https://x.example/…'")


def test_an_unknown_section_set_by_a_variable_names_the_variable(tmp_path: Path) -> None:
    """`MARKET_MONITOR__NOSECTION__X=1`: the unknown key is the section, which the file does not
    hold: the variable is named."""
    conf = write_config(tmp_path, "mm-env-section")
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {"MARKET_MONITOR__NOSECTION__X": "1"})
    assert str(caught.value).startswith("MARKET_MONITOR__NOSECTION__X: Object contains unknown")


def test_the_redis_check_interval_must_be_positive(tmp_path: Path) -> None:
    """`[redis] check_interval_s` defaults to 2 s, takes any positive number of seconds, and 0
    is a config error naming `redis.check_interval_s`."""
    conf = write_config(tmp_path, "mm-check-interval")
    text = conf.read_text()
    stream = 'stream = "mm-check-interval:alerts"'
    assert cfg.load(conf, {}).redis.check_interval_s == 2.0
    conf.write_text(text.replace(stream, f"{stream}\ncheck_interval_s = 0.2"))
    assert cfg.load(conf, {}).redis.check_interval_s == 0.2
    conf.write_text(text.replace(stream, f"{stream}\ncheck_interval_s = 0"))
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {})
    assert str(caught.value) == f"{conf}: redis.check_interval_s: Expected `float` > 0.0"


def test_a_bad_redis_url_from_the_environment_fails_check_and_run_alike() -> None:
    """`MARKET_MONITOR__REDIS__URL` with a port out of range on the shipped example: `config
    check` and `run` both exit 78 with the one line naming the variable (`run` used to die with
    `ValueError: Port out of range`)."""
    env = {"MARKET_MONITOR__REDIS__URL": "redis://127.0.0.1:116999/0"}
    want = (
        "market-monitor: config error: MARKET_MONITOR__REDIS__URL: not a valid url (a port "
        "outside 1-65535): 'redis://127.0.0.1:116999/…'\n"
    )
    example = "config/monitor.example.toml"
    check = cli_here("config", "check", "--config", example, env=env)
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", example, env=env)
    assert (run.returncode, run.stderr) == (78, want)


def test_usable_redis_urls_and_field_maps_still_load(tmp_path: Path) -> None:
    """What the client and the decoder take still loads: rediss:// with a port, a password and a
    database, an IPv6 host, no port at all; a `field_map` of known keys with a `ts_unit`."""
    conf = write_config(tmp_path, "mm-good")
    text = conf.read_text()
    for url in ("rediss://monitor:s3cret@redis.internal:6380/2", "redis://[::1]:6379", "redis://h"):
        conf.write_text(text.replace(REDIS_URL, f'url = "{url}"'))
        assert cfg.load(conf, {}).redis.url == url
    field_map = '{symbol = "S", ts = "t", price = "p", ts_unit = "s"}'
    conf.write_text(
        text.replace('topics = ["mm-good/#"]', f'topics = ["x"]\nfield_map = {field_map}')
    )
    assert cfg.load(conf, {}).feeds[0].field_map == {
        "symbol": "S",
        "ts": "t",
        "price": "p",
        "ts_unit": "s",
    }


def test_a_value_outside_a_set_lists_the_values_the_field_takes(tmp_path: Path) -> None:
    """`level = "loud"` is refused naming the field and the values it takes."""
    path = tmp_path / "monitor.toml"
    path.write_text('[log]\nlevel = "loud"\n')
    with pytest.raises(ConfigError) as caught:
        cfg.load(str(path))
    assert str(caught.value) == (
        f"{path}: log.level: Invalid enum value 'loud'; level is one of debug, info, warning, error"
    )


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (REDIS_URL, 'url = "rediss://127.0.0.1:6379/0"\nca_file = "{ca}"', "redis.ca_file"),
        (FEED_URL, 'url = "mqtts://127.0.0.1:8883"\nca_file = "{ca}"', "feeds[0].ca_file"),
    ],
    ids=["redis", "mqtt-feed"],
)
@pytest.mark.parametrize("ca", ["missing-ca.pem", "{dir}/missing-ca.pem", "{dir}"])
def test_a_ca_file_that_cannot_be_read_fails_check_and_run_naming_the_field(
    tmp_path: Path, old: str, new: str, field: str, ca: str
) -> None:
    """A `ca_file` that is not there (relative to the config file, or absolute) or is a folder
    fails `config check` and `run` alike with exit 78 and one line naming the field and the
    file: the daemon used to start and run degraded, failing every TLS connection with an
    error that did not name `ca_file`."""
    conf = write_config(tmp_path, "mm-ca-file")
    path = ca.format(dir=tmp_path)
    conf.write_text(conf.read_text().replace(old, new.format(ca=path)))
    absolute = str(tmp_path / path)  # (an absolute `path` stays itself)
    why = "Is a directory" if path == str(tmp_path) else "No such file or directory"
    want = f"market-monitor: config error: {conf}: {field}: cannot read {absolute}: {why}\n"
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)


def test_secret_and_ca_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """Relative `password_file`, `key_file`, `secret_file` and `ca_file` are read from the
    config file's folder, not the current one (they were read from wherever the command ran);
    absolute ones are unchanged."""
    conf = write_config(tmp_path, "mm-relative")
    text = conf.read_text().replace(REDIS_URL, 'url = "rediss://127.0.0.1:6379/0"')
    redis = 'password_file = "credentials/redis"\nca_file = "credentials/ca.pem"'
    websocket = (
        '\n[[feeds]]\nkind = "websocket"\nurl = "wss://stream.example.com/v2/iex"\n'
        'key_file = "credentials/key"\nsecret_file = "/run/credentials/market-monitor.service/s"\n'
    )
    conf.write_text(
        text.replace("[redis]\n", f"[redis]\n{redis}\n")
        .replace("qos = 1\n", 'qos = 1\npassword_file = "credentials/mqtt"\n')
        .replace("[redis]\n", f"{websocket}[redis]\n", 1)
    )
    (tmp_path / "credentials").mkdir()
    for name in ("redis", "mqtt", "key"):
        (tmp_path / "credentials" / name).write_text(f"{name}-value\n")
        (tmp_path / "credentials" / name).chmod(0o600)
    shutil.copy(Pki(tmp_path / "pki").ca, tmp_path / "credentials" / "ca.pem")
    loaded = cfg.load(conf, {})
    files = tmp_path / "credentials"
    assert (
        loaded.redis.password_file,
        loaded.redis.ca_file,
        loaded.feeds[0].password_file,
        loaded.feeds[1].key_file,
        loaded.feeds[1].secret_file,
    ) == (
        str(files / "redis"),
        str(files / "ca.pem"),
        str(files / "mqtt"),
        str(files / "key"),
        "/run/credentials/market-monitor.service/s",
    )
    check = cli_here("config", "check", "--config", str(conf))  # (run from the repository's root)
    # (a systemd credential, read only while the unit runs: said, not a failure of the check)
    assert check.returncode == 0
    assert check.stderr.startswith(
        "market-monitor: warning: feeds[1].secret_file: "
        "/run/credentials/market-monitor.service/s not read: a systemd credential"
    )
    conf.write_text(conf.read_text().replace("/run/credentials/market-monitor.service/s", "key"))
    (tmp_path / "key").write_text("secret-value\n")
    (tmp_path / "key").chmod(0o600)
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stderr) == (0, NO_SHORT_INTEREST_NOTE)
    assert check.stdout.endswith(
        "# secrets resolved:\n"
        f"#   redis.password = ***  (file {files / 'redis'})\n"
        f"#   feeds[0].password = ***  (file {files / 'mqtt'})\n"
        f"#   feeds[1].key = ***  (file {files / 'key'})\n"
        f"#   feeds[1].secret = ***  (file {tmp_path / 'key'})\n"
    )


def test_a_feed_entry_set_from_the_environment_is_refused_saying_why(tmp_path: Path) -> None:
    """`MARKET_MONITOR__FEEDS__0__URL` (with or without `[[feeds]]` in the file) is refused
    with one line saying that entries of `[[feeds]]` are set in the file, not "feeds is not a
    table"."""
    want = (
        "MARKET_MONITOR__FEEDS__0__URL: entries of [[feeds]] cannot be overridden from the "
        "environment (set them in the file)"
    )
    with_feeds = write_config(tmp_path, "mm-env-feeds")
    without = tmp_path / "no-feeds.toml"
    without.write_text("[http]\nport = 0\n")
    for conf in (with_feeds, without):
        with pytest.raises(ConfigError) as caught:
            cfg.load(conf, {"MARKET_MONITOR__FEEDS__0__URL": "mqtt://127.0.0.1:1884"})
        assert str(caught.value) == want


def test_a_config_that_is_not_utf8_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    """A Latin-1 byte in a comment of the daemon's or the notifier's config: exit 78 with one
    line naming the file and the byte (it was a UnicodeDecodeError traceback, exit 1); a UTF-8
    byte order mark is no error."""
    conf = write_config(tmp_path, "mm-latin1")
    text = conf.read_bytes()
    conf.write_bytes(b"# caf\xe9\n" + text)
    want = (
        f"market-monitor: config error: {conf}: not UTF-8 text at byte 6 (0xe9): save it as UTF-8\n"
    )
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)
    notifier = tmp_path / "notify.toml"
    notifier.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text at byte 6"):
        cfg.read_toml(notifier, {})
    conf.write_bytes(b"\xef\xbb\xbf" + text)
    assert cli_here("config", "check", "--config", str(conf)).returncode == 0


def test_an_infinite_interval_fails_config_check_and_run_alike(tmp_path: Path) -> None:
    """`snapshot_interval_s = inf` passed the types (greater than 0) and `config check`, then
    `run` died with an OverflowError from the scheduler: now both exit 78 naming the field."""
    conf = write_config(tmp_path, "mm-inf")
    text = conf.read_text()
    assert "[store]\n" in text
    conf.write_text(text.replace("[store]\n", "[store]\nsnapshot_interval_s = inf\n"))
    want = (
        f"market-monitor: config error: {conf}: store.snapshot_interval_s: not a finite number"
        " (inf is no setting: write the number meant)\n"
    )
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)


def test_a_dedupe_ttl_redis_would_refuse_is_a_config_error(tmp_path: Path) -> None:
    """A `dedupe_ttl_s` past Redis' range made every publish fail as if Redis were down
    (`invalid expire time`); ten years is the most it takes."""
    conf = write_config(tmp_path, "mm-ttl")
    variable = "MARKET_MONITOR__REDIS__DEDUPE_TTL_S"
    with pytest.raises(ConfigError, match=f"{variable}: Expected `int` <= 315360000"):
        cfg.load(conf, {variable: "9223372036854775807"})
    assert cfg.load(conf, {variable: "315360000"}).redis.dedupe_ttl_s == 315_360_000


def test_an_override_of_the_feeds_array_or_of_two_lines_is_not_taken_silently(
    tmp_path: Path,
) -> None:
    """`MARKET_MONITOR__FEEDS='[{...}]'` replaced every feed of the file, though [[feeds]] is
    set in the file only; a value with a newline and `x = 2` after it was cut to its first
    line. Both are errors naming the variable now."""
    conf = write_config(tmp_path, "mm-env-array")
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {"MARKET_MONITOR__FEEDS": '[{kind = "replay", data = ["x.csv"]}]'})
    assert str(caught.value) == (
        "MARKET_MONITOR__FEEDS: [[feeds]] cannot be overridden from the environment (set it in"
        " the file)"
    )
    with pytest.raises(ConfigError, match="MARKET_MONITOR__HTTP__PORT"):
        cfg.load(conf, {"MARKET_MONITOR__HTTP__PORT": "1\nx = 2"})


def test_a_secret_named_but_empty_is_a_config_error(tmp_path: Path) -> None:
    """`password_env` naming a variable that is set but empty, or `password_file` naming an
    empty file, resolved as a secret (an empty password: no AUTH at all); it is an error naming
    the field, as a variable not set is."""
    with pytest.raises(ConfigError, match=r"redis\.password_env: environment variable P is empty"):
        credentials.secret("redis.password", env_name="P", file_name="", environ={"P": " "})
    empty = tmp_path / "password.txt"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=re.escape(f"redis.password_file: {empty} is empty")):
        credentials.secret("redis.password", env_name="", file_name=str(empty), environ={})
    assert (
        credentials.secret("redis.password", env_name="P", file_name="", environ={"P": "s3"})
        == "s3"
    )


def test_two_variables_for_one_key_differing_in_case_are_refused(tmp_path: Path) -> None:
    """`MARKET_MONITOR__HTTP__PORT` and `MARKET_MONITOR__http__port` both set: the last one read
    used to win silently; now both are named."""
    conf = write_config(tmp_path, "mm-env-case")
    env = {"MARKET_MONITOR__HTTP__PORT": "9001", "MARKET_MONITOR__http__port": "9002"}
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, env)
    assert str(caught.value) == (
        "MARKET_MONITOR__HTTP__PORT and MARKET_MONITOR__http__port set the same key: unset one"
    )


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            "http://monitor.example.com",
            "'http://monitor.example.com' is not a host: give a name with or without a port"
            " (monitor.example.com, *.example.com, 192.0.2.7:9108)",
        ),
        ("", "'' is not a host: give a name with or without a port"),
        ("monitor.example.com:99999", "'monitor.example.com:99999': the port must be a number"),
        ("monitor.example.com:web", "'monitor.example.com:web': the port must be a number"),
        ("a.*.example.com", "'a.*.example.com' is not a host"),
        ("*", "'*': a * must stand before a domain of two labels at least"),
        ("*.com", "'*.com': a * must stand before a domain of two labels at least"),
        ("[2001:db8::7", "'[2001:db8::7': not an IPv6 address in brackets"),
    ],
)
def test_an_allowed_host_that_is_no_host_fails_check_and_run_naming_the_field(
    tmp_path: Path, entry: str, error: str
) -> None:
    """An `[http] allowed_hosts` entry that is not a host name, `*.` domain or address (a URL,
    a port out of range, a * inside a name or over a top-level domain) fails `config check` and
    `run` alike: exit 78, one line naming the file and field and quoting the entry."""
    conf = write_config(tmp_path, "mm-allowed")
    hosts = f'allowed_hosts = ["monitor.example.com", "{entry}"]'
    conf.write_text(conf.read_text().replace("[http]\n", f"[http]\n{hosts}\n"))
    check = cli_here("config", "check", "--config", str(conf))
    assert check.returncode == 78
    assert check.stderr.startswith(
        f"market-monitor: config error: {conf}: http.allowed_hosts: {error}"
    ), check.stderr
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, check.stderr)


def test_allowed_hosts_are_shown_by_config_check_and_taken_from_the_environment(
    tmp_path: Path,
) -> None:
    """`config check` prints the `[http] allowed_hosts` it read; a variable sets the list as
    a TOML array, and a bad entry in it is reported under the variable's name."""
    conf = write_config(tmp_path, "mm-allowed-env")
    hosts = '["monitor.example.com:9108", "*.board.example"]'
    conf.write_text(conf.read_text().replace("[http]\n", f"[http]\nallowed_hosts = {hosts}\n"))
    check = cli_here("config", "check", "--config", str(conf))
    assert check.returncode == 0, check.stderr
    assert f"allowed_hosts = {hosts}" in check.stdout.splitlines()
    variable = "MARKET_MONITOR__HTTP__ALLOWED_HOSTS"
    loaded = cfg.load(conf, {variable: '["board.example"]'})
    assert loaded.http.allowed_hosts == ["board.example"]
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {variable: '["board.example/api"]'})
    assert str(caught.value) == (
        f"{variable}: 'board.example/api' is not a host: give a name with or without a port"
        " (monitor.example.com, *.example.com, 192.0.2.7:9108)"
    )


@pytest.mark.parametrize("field", ["stream", "channel"])
def test_an_empty_redis_stream_or_channel_is_refused_naming_where_it_was_set(
    tmp_path: Path, field: str
) -> None:
    """`[redis] stream = ""` or `MARKET_MONITOR__REDIS__STREAM=` (a compose file's `${VAR}`
    unset; the same for channel) is refused naming the field or the variable, as the
    notifier's are: before, the daemon sent its alerts to a key named "" that no notifier
    reads."""
    conf = write_config(tmp_path, "mm-empty-stream")
    text = conf.read_text()
    line = f'{field} = "mm-empty-stream:alerts"'
    assert line in text
    conf.write_text(text.replace(line, f'{field} = ""'))
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {})
    assert str(caught.value) == f"{conf}: redis.{field}: Expected `str` of length >= 1"
    conf.write_text(text)
    variable = f"MARKET_MONITOR__REDIS__{field.upper()}"
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {variable: ""})
    assert str(caught.value) == f"{variable}: Expected `str` of length >= 1"
