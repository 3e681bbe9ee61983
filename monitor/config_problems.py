"""What a config's types cannot say and the daemon would refuse at start.

`problem(config)` gives (field, message) for the first such thing, so that `config check` fails
where `run` would, with the same one line: a float that is not finite, a Redis URL the client
would refuse, both of two passwords, a `ca_file` that holds no certificate (or without TLS), and
per feed a setting of another kind of feed, a URL of the wrong scheme or port, credentials in a
URL, an MQTT topic that is no filter, a `field_map` key the generic decoder does not have, a
WebSocket provider's symbols, key or secret missing, a `rest_url` that is no http(s) URL; and
two feeds of one name or one MQTT `client_id`; an `[http] allowed_hosts` entry that is no host.
The notifier's config shares the URL, `inf`, file and `allowed_hosts` checks.
"""

from __future__ import annotations

import difflib
import math
import re
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import msgspec

from monitor.core.symbols import named_symbol_problem
from monitor.request_head import allowed_host_problem
from monitor.urls import host_only, mask_url, not_valid, split_url

if TYPE_CHECKING:
    from monitor.config import Config, FeedConfig

BOTH_PASSWORDS = "set password_env or password_file, not both"
_DB_PATH = re.compile(r"/[0-9]+")


def problem(config: Config) -> tuple[str, str] | None:
    """What the types cannot say and the daemon would refuse at start, as (field, message):
    `config check` must fail where `run` would, with the same one line. A `ca_file` is read
    here (its paths made absolute first): one that cannot be read would fail every TLS
    connection with an error that does not name it."""
    endless = infinite(msgspec.to_builtins(config))
    if endless is not None:
        return endless, INFINITE
    problem = redis_url_problem(config.redis.url)
    if problem is not None:
        return "redis.url", problem
    if config.redis.password_env and config.redis.password_file:
        return "redis.password_env", BOTH_PASSWORDS
    for name in config.engine.universe:  # (no file or feed brings it: `bad_symbol` in replay)
        problem = named_symbol_problem(name)
        if problem is not None:
            return "engine.universe", f"{name!r} is no symbol: it {problem}"
    twice = two_usernames(
        config.redis.username, config.redis.username_env, config.redis.username_file
    )
    if twice is not None:
        return f"redis.{twice[0]}", twice[1]
    problem = redis_ca_problem(config.redis.url, config.redis.ca_file)
    if problem is not None:
        return "redis.ca_file", problem
    problem = allowed_hosts_problem(config.http.allowed_hosts)
    if problem is not None:
        return "http.allowed_hosts", problem
    for i, feed in enumerate(config.feeds):
        problem_at = _feed_problem(feed)
        if problem_at is None and feed.ca_file:
            problem = ca_problem(feed.ca_file)
            problem_at = None if problem is None else ("ca_file", problem)
        if problem_at is not None:
            return f"feeds[{i}].{problem_at[0]}", problem_at[1]
    return _feeds_twice(config.feeds)


def _feeds_twice(feeds: list[FeedConfig]) -> tuple[str, str] | None:
    """(field, message) for a feed whose name (`label`: metrics, /healthz, logs and owed
    backfills go by it) is an earlier feed's too, or an mqtt feed whose `client_id` is an
    earlier one's: two connections with one id take the session from each other."""
    labels = [feed.label(i) for i, feed in enumerate(feeds)]
    ids = [feed.client_id if feed.kind == "mqtt" else "" for feed in feeds]
    for i, label in enumerate(labels):
        first = labels.index(label)
        if first != i:
            return f"feeds[{i}].name", f"{label!r} is feeds[{first}]'s name too: name each feed"
        if ids[i] and ids.index(ids[i]) != i:
            first = ids.index(ids[i])
            return f"feeds[{i}].client_id", (
                f"{ids[i]!r} is feeds[{first}]'s client_id too: two connections with one id take"
                " the broker's session from each other"
            )
    return None


INFINITE = "not a finite number (inf is no setting: write the number meant)"


def infinite(data: Any, at: str = "") -> str | None:
    """The path (`store.snapshot_interval_s`, `feeds[0].max_backlog_mb`) of the first float in
    `data` (a config as plain data) that is not finite: the types take `inf` as greater than
    0, and a timer or a byte count made of it fails at start with a traceback."""
    if isinstance(data, float) and not math.isfinite(data):
        return at
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        path = f"{at}[{key}]" if isinstance(key, int) else f"{at}.{key}" if at else str(key)
        found = infinite(value, path)
        if found is not None:
            return found
    return None


def _topic_problem(topic: str) -> str | None:
    """Why `topic` is no MQTT topic filter (None: it is one): empty, a NUL, past 65,535 bytes,
    or a wildcard that is not a whole level (`#` the last one only)."""
    if not topic:
        return "an empty topic"
    if "\x00" in topic or len(topic.encode()) > 65_535:
        return f"{topic[:40]!r} is no topic filter (a NUL, or past 65,535 bytes)"
    levels = topic.split("/")
    for n, level in enumerate(levels):
        if ("#" in level and (level != "#" or n != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            return (
                f"{topic!r} is no topic filter: a wildcard is a whole level, and # the last one"
                " (a/+/c, a/#)"
            )
    return None


def allowed_hosts_problem(hosts: list[str]) -> str | None:
    """What is wrong with the first bad entry of `[http] allowed_hosts` (daemon and notifier);
    None when each is a host name, `*.` domain or IP address, with or without a port."""
    for entry in hosts:
        problem = allowed_host_problem(entry)
        if problem is not None:
            return problem
    return None


def unreadable(path: str) -> str | None:
    """Why the file at `path` cannot be read (`cannot read PATH: No such file or directory`),
    or None when it can."""
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return None


def ca_problem(path: str) -> str | None:
    """Why the `ca_file` at `path` cannot serve to verify a server (it cannot be read, or holds
    no PEM certificate: a key, a DER file, a wrong path's other file), or None when it can.
    Read as every TLS connection reads it, so that a bad one fails at start naming the field,
    not each connection with a traceback that does not."""
    problem = unreadable(path)
    if problem is not None:
        return problem
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError):  # (the library's words name no file)
        return f"{path} holds no CA certificate (PEM: -----BEGIN CERTIFICATE----- ...)"
    return None


def redis_ca_problem(url: str, ca_file: str | None) -> str | None:
    """Why a Redis `ca_file` cannot serve with `url` (the daemon's and the notifier's): on a
    url that is not rediss:// (the client's TypeError at the first connection), or one that
    holds no certificate (`ca_problem`); None when it can, or there is none."""
    if not ca_file:
        return None
    if not url.startswith("rediss://"):
        return "needs a rediss:// url"
    return ca_problem(ca_file)


def redis_url_problem(url: str, schemes: tuple[str, ...] = ("redis", "rediss")) -> str | None:
    """What is wrong with a Redis URL the client would refuse at start (with a traceback, not a
    connection error), as a message; None when it can be used. `schemes`: those the caller takes
    (the notifier's client also takes unix://). redis:// and rediss:// need a host, and a port,
    when given, of 1-65535 (the client takes `:0` for its default port: surely a mistake)."""
    scheme = url.partition("://")[0] if "://" in url else ""  # (case-sensitive, as the client)
    if scheme not in schemes:
        *others, last = (f"{s}://..." for s in schemes)
        return _expected(url, f"{', '.join(others)} or {last}" if others else last)
    parts = split_url(url, port=scheme != "unix")  # (a unix:// url's host and port are not read)
    if isinstance(parts, str):
        return parts
    if scheme != "unix":
        if parts.port == 0:
            return not_valid(url, "a port outside 1-65535")
        if not parts.hostname:
            return _expected(url, f"{scheme}://host[:port][/db]")
        if unquote(parts.path) not in ("", "/") and not _DB_PATH.fullmatch(unquote(parts.path)):
            # (the client took `/abc` for database 0, and `/1/2` for 12, without a word)
            return not_valid(url, "a database that is no number: the path is /0, /1, ...")
    from redis.connection import parse_url  # (the client's own reading of the query: db=...)

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:  # ("Invalid value for 'db' in connection URL.": no secret in it)
        return not_valid(url, str(exc).rstrip(".").replace(" in connection URL", ""))
    return None


# The settings each kind of feed reads: one of another kind's, set, is refused (it was ignored,
# and an operator's `stale_after_s` on an mqtt feed, say, did nothing).
FEED_SETTINGS = {
    "mqtt": {
        "url", "topics", "qos", "client_id", "session_expiry_s", "mqtt_version", "username",
        "username_env", "username_file", "password_env", "password_file", "ca_file",
        "stale_after_s", "watch_broker_drops", "max_backlog_mb", "field_map",
    },
    "websocket": {
        "url", "provider", "symbols", "key_env", "key_file", "secret_env", "secret_file",
        "stale_after_s", "rest_url", "backfill_tail_delay_s",
    },
    "replay": {"data", "speed", "start", "end", "exit_when_done"},
}  # fmt: skip


def _foreign_setting(feed: FeedConfig) -> tuple[str, str] | None:
    """(field, message) for a setting of another kind of feed, set on this one."""
    unset = type(feed)(kind=feed.kind)
    mine = FEED_SETTINGS[feed.kind] | {"kind", "name"}
    for field in feed.__struct_fields__:
        if field not in mine and getattr(feed, field) != getattr(unset, field):
            kinds = " and ".join(k for k, names in FEED_SETTINGS.items() if field in names)
            a = "an" if feed.kind == "mqtt" else "a"  # ("an em-cue-tee-tee feed")
            return field, f"a setting of {kinds} feeds, not of {a} {feed.kind} feed: remove it"
    return None


def _feed_problem(feed: FeedConfig) -> tuple[str, str] | None:
    """(field, message) for a feed the daemon would refuse to start."""
    foreign = _foreign_setting(feed)
    if foreign is not None:
        return foreign
    if feed.kind == "replay":
        return None if feed.data else ("data", "a replay feed needs data files")
    if not feed.url:
        return "url", f"required for a {feed.kind} feed"
    if feed.kind == "websocket":
        return _websocket_problem(feed)
    parts = split_url(feed.url)
    if isinstance(parts, str):
        return "url", parts
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return "url", _expected(feed.url, "mqtt://host[:port] or mqtts://host[:port]")
    if parts.port == 0:  # (the client takes it for 1883: another broker, surely a mistake)
        return "url", not_valid(feed.url, "a port outside 1-65535")
    if feed.ca_file and parts.scheme != "mqtts":  # (TLS is mqtts://: it was ignored)
        return "ca_file", "needs an mqtts:// url"
    if parts.username or parts.password:
        where = "username and password_env or password_file"
        return "url", f"credentials belong in {where}, not the url: {mask_url(feed.url)!r}"
    twice = two_usernames(feed.username, feed.username_env, feed.username_file)
    if twice is not None:
        return twice
    if feed.password_env and feed.password_file:
        return "password_env", BOTH_PASSWORDS
    if len(feed.client_id.encode()) > 65_535:  # (MQTT's string: the connect failed, for ever)
        return "client_id", "past 65,535 bytes (UTF-8), the longest MQTT takes"
    if not feed.topics:
        return "topics", "an mqtt feed needs at least one topic"
    for topic in feed.topics:
        problem = _topic_problem(topic)
        if problem is not None:
            return "topics", problem
    return _field_map_problem(feed.field_map)


def _websocket_problem(feed: FeedConfig) -> tuple[str, str] | None:
    """(field, message) for a WebSocket feed the daemon would refuse: a URL not ws(s)://, a
    provider's feed without the symbols, key or secret it logs in and subscribes with, a
    `rest_url` that is no http(s) URL, or one on a feed that fetches no backfill."""
    if not feed.url.startswith(("ws://", "wss://")):
        return "url", _expected(feed.url, "ws://... or wss://...")
    provider = feed.provider
    if provider != "generic":
        if not feed.symbols:
            return "symbols", f"{provider} needs at least one symbol to subscribe to"
        if not (feed.key_env or feed.key_file):
            return "key_env", f"{provider} needs an API key: set key_env or key_file"
        if provider == "alpaca" and not (feed.secret_env or feed.secret_file):
            return "secret_env", "alpaca needs the API secret: set secret_env or secret_file"
    if not feed.rest_url:
        return None
    if provider not in ("alpaca", "polygon"):  # (a backfill is fetched from these: ignored)
        return "rest_url", f"a backfill comes from alpaca and polygon only, not {provider}"
    parts = split_url(feed.rest_url)
    if isinstance(parts, str):
        return "rest_url", parts
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "rest_url", _expected(feed.rest_url, "https://host[/path] or http://...")
    return None


def two_usernames(name: str, env_name: str, file_name: str) -> tuple[str, str] | None:
    """(field, message) when more than one of username, username_env, username_file is set."""
    given = [f for f, v in zip(USERNAMES, (name, env_name, file_name), strict=True) if v]
    if len(given) > 1:
        return given[0], f"set one of {', '.join(USERNAMES)}, not {' and '.join(given)}"
    return None


USERNAMES = ("username", "username_env", "username_file")


def _field_map_problem(field_map: dict[str, str]) -> tuple[str, str] | None:
    """(field, message) for a `field_map` the generic decoder's FieldMap does not take: a key
    it does not have (the message lists those it has), or a `ts_unit` it does not know."""
    if not field_map:
        return None
    from monitor.feeds.generic import FieldMap  # (polars: only for a feed that maps fields)

    keys = FieldMap.__struct_fields__
    for key in field_map:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return "field_map", f"unknown key {key!r}{hint}; valid keys: {', '.join(keys)}"
    try:
        msgspec.convert(field_map, FieldMap)
    except msgspec.ValidationError as exc:  # a value of the wrong kind: `ts_unit`
        message, _, at = str(exc).partition(" - at `$")
        return f"field_map{at.rstrip('`')}", message
    return None


def _expected(url: str, shape: str) -> str:
    return f"must be {shape}, not {host_only(url)!r}"
