"""What `config check` and `run` refuse alike in a feed and a `ca_file`: a WebSocket provider's
feed without what it logs in and subscribes with, a `rest_url` that is no http(s) URL, an MQTT
port 0, a CA file that holds no certificate or goes with no TLS (monitor/config_problems.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import config as cfg
from monitor.errors import ConfigError
from tests.cli_here import cli_here
from tests.security.pki import Pki
from tests.test_service import write_config

MQTT_FEED = (
    'kind = "mqtt"\nname = "broker"\nurl = "mqtt://127.0.0.1:1883"\ntopics = ["{prefix}/#"]\n'
    'qos = 1\nclient_id = "{prefix}-daemon"\nsession_expiry_s = 60\n'
)
STREAM = 'kind = "websocket"\nurl = "ws://127.0.0.1:1/"\n'
KEYS = 'key_env = "MM_TEST_KEY"\nsecret_env = "MM_TEST_SECRET"\n'


def with_feed(tmp: Path, prefix: str, feed: str) -> Path:
    """A daemon config (`write_config`) whose one feed is `feed` instead of its mqtt feed."""
    conf = write_config(tmp, prefix)
    text = conf.read_text()
    assert MQTT_FEED.format(prefix=prefix) in text
    conf.write_text(text.replace(MQTT_FEED.format(prefix=prefix), feed))
    return conf


def refused(conf: Path) -> str:
    """The ConfigError `cfg.load` (what `run` and `config check` start with) raises."""
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {"MM_TEST_KEY": "k", "MM_TEST_SECRET": "s"})
    return str(caught.value)


@pytest.mark.parametrize(
    ("feed", "error"),
    [
        (f'{STREAM}provider = "alpaca"\n{KEYS}',
         "feeds[0].symbols: alpaca needs at least one symbol to subscribe to"),
        (f'{STREAM}provider = "polygon"\nsymbols = ["IWM"]\n',
         "feeds[0].key_env: polygon needs an API key: set key_env or key_file"),
        (f'{STREAM}provider = "finnhub"\nsymbols = ["IWM"]\nrest_url = "https://x.example"\n',
         "feeds[0].key_env: finnhub needs an API key: set key_env or key_file"),
        (f'{STREAM}provider = "alpaca"\nsymbols = ["IWM"]\nkey_env = "MM_TEST_KEY"\n',
         "feeds[0].secret_env: alpaca needs the API secret: set secret_env or secret_file"),
        (f'{STREAM}provider = "alpaca"\nsymbols = ["IWM"]\nkey_env = "MM_TEST_KEY"\n'
         'rest_url = "https://data.example"\n',
         "feeds[0].secret_env: alpaca needs the API secret: set secret_env or secret_file"),
        (f'{STREAM}provider = "alpaca"\nsymbols = ["IWM"]\n{KEYS}rest_url = "not a url"\n',
         "feeds[0].rest_url: must be https://host[/path] or http://..., not '(no scheme)'"),
        (f'{STREAM}provider = "polygon"\nsymbols = ["IWM"]\n{KEYS}'
         'rest_url = "ws://data.example/v2?apiKey=K"\n',
         "feeds[0].rest_url: must be https://host[/path] or http://..., not 'ws://data.example/…'"),
        (f'{STREAM}provider = "finnhub"\nsymbols = ["IWM"]\n{KEYS}rest_url = "https://x.example"\n',
         "feeds[0].rest_url: a backfill comes from alpaca and polygon only, not finnhub"),
    ],
    ids=["no-symbols", "no-key", "rest-no-key", "no-secret", "rest-no-secret", "rest-not-a-url",
         "rest-not-http", "rest-finnhub"],
)  # fmt: skip
def test_a_websocket_feed_run_would_refuse_fails_config_check_with_the_same_line(
    tmp_path: Path, feed: str, error: str
) -> None:
    """A provider's WebSocket feed without symbols, key or secret, or with a `rest_url` that is
    no http(s) URL or that no backfill reads, fails `config check` and `run` alike: exit 78,
    one line naming the config path (`feeds[0].symbols`; check passed them, and run named
    `feeds.websocket0.symbols`, or failed only at the first backfill)."""
    conf = with_feed(tmp_path, "mm-ws-problems", feed)
    want = f"market-monitor: config error: {conf}: {error}\n"
    env = {"MM_TEST_KEY": "k", "MM_TEST_SECRET": "s"}
    check = cli_here("config", "check", "--config", str(conf), env=env)
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf), env=env)
    assert (run.returncode, run.stderr) == (78, want)


def test_a_websocket_feed_with_what_its_provider_needs_loads(tmp_path: Path) -> None:
    """Symbols, key and secret (and a https `rest_url`) given: the feed loads as it did; a
    generic feed needs none of them."""
    feed = f'{STREAM}provider = "alpaca"\nsymbols = ["IWM"]\n{KEYS}rest_url = "https://d.example"\n'
    conf = with_feed(tmp_path, "mm-ws-ok", f'{feed}\n[[feeds]]\n{STREAM}name = "generic"\n')
    loaded = cfg.load(conf, {})
    assert [(f.provider, f.symbols, f.rest_url) for f in loaded.feeds] == [
        ("alpaca", ["IWM"], "https://d.example"),
        ("generic", [], ""),
    ]


@pytest.mark.parametrize(
    ("feed", "error"),
    [
        (MQTT_FEED.replace("1883", "0"),
         "feeds[0].url: not a valid url (a port outside 1-65535): 'mqtt://127.0.0.1:0'"),
        (f'{MQTT_FEED}ca_file = "{{ca}}"\n', "feeds[0].ca_file: needs an mqtts:// url"),
    ],
    ids=["port-zero", "ca-without-tls"],
)  # fmt: skip
def test_an_mqtt_port_0_or_a_ca_file_without_tls_is_refused(
    tmp_path: Path, feed: str, error: str
) -> None:
    """`mqtt://host:0` (which the client took for 1883: another broker) and a `ca_file` on a
    plain `mqtt://` feed (ignored) are refused naming the field, as Redis refuses both."""
    ca = Pki(tmp_path / "pki").ca
    conf = with_feed(tmp_path, "mm-mqtt-problems", feed.format(prefix="mm-mqtt-problems", ca=ca))
    assert refused(conf) == f"{conf}: {error}"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('url = "redis://127.0.0.1:6379/0"', 'url = "rediss://127.0.0.1:6379/0"\nca_file = "{ca}"',
         "redis.ca_file"),
        ('url = "mqtt://127.0.0.1:1883"', 'url = "mqtts://127.0.0.1:8883"\nca_file = "{ca}"',
         "feeds[0].ca_file"),
    ],
    ids=["redis", "mqtt-feed"],
)  # fmt: skip
def test_a_ca_file_that_holds_no_certificate_fails_check_and_run_naming_the_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """A `ca_file` that can be read but holds no certificate (a key, a note) fails `config
    check` and `run` with exit 78 naming the field (it passed, and an MQTT feed then
    crash-looped with an ssl.SSLError traceback at every attempt); a real CA loads."""
    conf = write_config(tmp_path, "mm-ca-cert")
    text = conf.read_text()
    key = tmp_path / "ca.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a certificate\n-----END PRIVATE KEY-----\n")
    conf.write_text(text.replace(old, new.format(ca=key)))
    want = (
        f"market-monitor: config error: {conf}: {field}: {key} holds no CA certificate (PEM:"
        " -----BEGIN CERTIFICATE----- ...)\n"
    )
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)
    conf.write_text(text.replace(old, new.format(ca=Pki(tmp_path / "pki").ca)))
    assert cfg.load(conf, {}).feeds[0].kind == "mqtt"


MQTT = 'kind = "mqtt"\nurl = "mqtt://127.0.0.1:1883"\ntopics = ["mm-twice/#"]\n'


@pytest.mark.parametrize(
    ("second", "error"),
    [
        (f'{MQTT}name = "broker"\n',
         "feeds[1].name: 'broker' is feeds[0]'s name too: name each feed"),
        (f'{MQTT}client_id = "mm-twice-daemon"\n',
         "feeds[1].client_id: 'mm-twice-daemon' is feeds[0]'s client_id too: two connections with"
         " one id take the broker's session from each other"),
    ],
    ids=["name", "client-id"],
)  # fmt: skip
def test_two_feeds_of_one_name_or_one_client_id_are_refused(
    tmp_path: Path, second: str, error: str
) -> None:
    """Two feeds named alike (/healthz said the working one was down too, and /metrics had one
    feed_connected{feed} for both), or two mqtt feeds sharing a `client_id` (they took the
    session from each other at run), are refused naming the second one's field."""
    conf = write_config(tmp_path, "mm-twice")
    conf.write_text(conf.read_text().replace("[redis]\n", f"[[feeds]]\n{second}[redis]\n", 1))
    assert refused(conf) == f"{conf}: {error}"


def test_a_name_given_that_is_another_feeds_default_name_is_refused(tmp_path: Path) -> None:
    """A feed named `mqtt1` beside an unnamed mqtt feed in second place (whose name is `mqtt1`
    by default) is refused; two unnamed feeds without a `client_id` load, as `mqtt0`, `mqtt1`."""
    feeds = f'[[feeds]]\n{MQTT}name = "mqtt1"\n[[feeds]]\n{MQTT}'
    conf = tmp_path / "monitor.toml"
    conf.write_text(feeds)
    assert refused(conf) == f"{conf}: feeds[1].name: 'mqtt1' is feeds[0]'s name too: name each feed"
    conf.write_text(feeds.replace('name = "mqtt1"\n', ""))
    loaded = cfg.load(conf, {})
    assert [f.label(i) for i, f in enumerate(loaded.feeds)] == ["mqtt0", "mqtt1"]


@pytest.mark.parametrize("path", ["/abc", "/1/2", "/-1"])
def test_a_redis_database_that_is_no_number_is_refused(tmp_path: Path, path: str) -> None:
    """`redis://host/abc` (and `/1/2`, `/-1`) in the daemon's or the notifier's `[redis] url`
    is refused naming the field, as a bad `?db=` is (the client took `/abc` for database 0 and
    `/1/2` for 12, silently)."""
    from monitor.notify import config as ncfg

    url = f"redis://127.0.0.1:6379{path}"
    want = "redis.url: not a valid url (a database that is no number: the path is /0, /1, ...):"
    conf = write_config(tmp_path, "mm-db-path")
    conf.write_text(conf.read_text().replace('url = "redis://127.0.0.1:6379/0"', f'url = "{url}"'))
    assert refused(conf) == f"{conf}: {want} 'redis://127.0.0.1:6379/…'"
    notify = tmp_path / "notify.toml"
    notify.write_text(
        f'[redis]\nurl = "{url}"\n[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/a"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        ncfg.load(notify, {})
    assert str(caught.value) == f"{notify}: {want} 'redis://127.0.0.1:6379/…'"
