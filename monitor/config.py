"""The daemon's configuration: TOML, environment overrides, secrets resolved here.

Decoded into frozen structs that refuse unknown fields; every error names the field path and the
CLI exits 78. Each component receives only its own slice.

Environment overrides: `MARKET_MONITOR__SECTION__KEY=value` sets `[section] key` (values parsed as
TOML scalars when they parse, else taken as strings, and taken as the text written where the key
takes text: `STREAM=2024` is the stream "2024"), e.g. `MARKET_MONITOR__REDIS__URL`; an error in a
value set so names the variable instead of the file. Entries of `[[feeds]]` cannot be set so
(set them in the file).
Secrets are never in the file: `password_env = "NAME"` reads an environment variable,
`password_file = "/run/credentials/market-monitor.service/redis"` reads a file (systemd
LoadCredential=). Paths are relative to the config file's folder: `load` makes every `*_file`
absolute (secrets and `ca_file`), and `resolve` does it for the others. Resolved secrets are
`Secret` values, masked in every repr and log.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from monitor.core.fields import field_message
from monitor.errors import ConfigError
from monitor.urls import host_only, mask_url, not_valid, split_url

if TYPE_CHECKING:  # (the rules pull in polars: the notifier and `config check` need not)
    from monitor.core.rules.spec import RulesFile
    from monitor.short_interest_io import ShortInterestFile

ENV_PREFIX = "MARKET_MONITOR__"
S = TypeVar("S", bound=msgspec.Struct)
Overrides = dict[tuple[str, ...], str]  # a key's path -> the environment variable that sets it
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`")


class Secret(str):
    """A string that never shows itself in a repr, a log line or `config check`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def masked(self) -> str:
        """What to print instead of the value."""
        return "***"


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Config structs: frozen, unknown fields refused."""


class StoreConfig(Base, frozen=True):
    path: str = "var/market-monitor"
    snapshot_interval_s: Annotated[float, Meta(gt=0)] = 300.0
    intraday_interval_s: Annotated[float, Meta(gt=0)] = 60.0
    # Each journal record on the disk itself (fdatasync) before its messages are acknowledged:
    # a power cut or a kernel panic then loses nothing acknowledged either. false: the page
    # cache keeps it when the process dies, not when the machine does.
    journal_fsync: bool = True


class FeedConfig(Base, frozen=True):
    """One inbound feed. `kind`: mqtt, websocket or replay."""

    kind: Literal["mqtt", "websocket", "replay"]
    name: str = ""
    url: str = ""
    topics: list[str] = []
    qos: Literal[0, 1] = 1
    client_id: str = ""
    session_expiry_s: Annotated[int, Meta(ge=0)] | None = 3600
    mqtt_version: Literal["3.1.1", "5"] = "3.1.1"
    provider: Literal["generic", "alpaca", "polygon", "finnhub"] = "generic"
    symbols: list[str] = []
    username: str = ""
    username_env: str = ""
    password_env: str = ""
    password_file: str = ""
    key_env: str = ""
    key_file: str = ""
    secret_env: str = ""
    secret_file: str = ""
    ca_file: str = ""
    stale_after_s: Annotated[float, Meta(gt=0)] = 60.0
    rest_url: str = ""
    watch_broker_drops: bool = True
    # mqtt: received but unprocessed messages held at most; past it the socket is not read
    max_backlog_mb: Annotated[float, Meta(gt=0)] = 16.0
    # replay feed: a history file streamed as if live on an accelerated clock
    data: list[str] = []
    speed: Annotated[float, Meta(gt=0)] = 86400.0
    start: str = ""
    end: str = ""
    exit_when_done: bool = False
    field_map: dict[str, str] = {}

    def label(self, i: int) -> str:
        """The feed's name: `name`, else kind and position (`mqtt0`), in metrics and logs."""
        return self.name or f"{self.kind}{i}"


class RedisConfig(Base, frozen=True):
    url: str = "redis://127.0.0.1:6379/0"
    channel: str = "market-monitor:alerts"
    stream: str = "market-monitor:alerts"
    maxlen: Annotated[int, Meta(ge=1)] = 100_000
    # an alert id published is not published again for this long (a restart that evaluates a
    # period again, a batch resent after a lost reply)
    # (at most ten years: Redis refuses an expiry past its clock's range, as if it were down)
    dedupe_ttl_s: Annotated[int, Meta(ge=1, le=10 * 365 * 86_400)] = 30 * 86_400
    # between PINGs, which make /healthz follow Redis (going away, coming back) within about this
    check_interval_s: Annotated[float, Meta(gt=0)] = 2.0
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    ca_file: str = ""


class RulesConfig(Base, frozen=True):
    file: str = "rules.toml"
    short_interest: str = ""


class HttpConfig(Base, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 9108


class EngineConfig(Base, frozen=True):
    queue_size: Annotated[int, Meta(ge=1)] = 10_000
    batch_max_rows: Annotated[int, Meta(ge=1)] = 50_000
    batch_max_age_ms: Annotated[float, Meta(gt=0)] = 25.0
    late_ticks: Literal["correct", "reject"] = "correct"
    # a copy of a trade is recognised within this of the trade's time (or of the first copy's
    # arrival, for a trade that came later than that)
    dedup_window_s: Annotated[float, Meta(gt=0)] = 3600.0
    # duplicate-tick keys held at most (8 bytes each); past it the window shrinks
    dedup_max_keys: Annotated[int, Meta(ge=1000)] = 8_000_000
    extended_hours: bool = False
    # minute bars kept per symbol for minute rules (their windows, largest-since and history);
    # unset: two sessions' worth, 780 (regular hours) or 1920 (with extended_hours)
    minute_history: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    universe: list[str] = []
    max_jump: Annotated[float, Meta(gt=1)] = 10.0
    # prints in a row out of band of the reference, agreeing with each other, that make the
    # last of them the reference (the market moved, or the reference was a bad print)
    max_jump_confirm: Annotated[int, Meta(ge=2)] = 5


class ShutdownConfig(Base, frozen=True):
    grace_s: Annotated[float, Meta(gt=0)] = 10.0


class ConsoleConfig(Base, frozen=True):
    """Print alerts for people on stdout as they fire."""

    enabled: bool = False


class LogConfig(Base, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool | None = None


class Config(Base, frozen=True):
    """The whole daemon configuration (`market-monitor run --config FILE`)."""

    store: StoreConfig = StoreConfig()
    feeds: list[FeedConfig] = []
    redis: RedisConfig = RedisConfig()
    rules: RulesConfig = RulesConfig()
    http: HttpConfig = HttpConfig()
    engine: EngineConfig = EngineConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    log: LogConfig = LogConfig()
    console: ConsoleConfig = ConsoleConfig()
    base_dir: str = "."


def read_toml(
    path: str | Path, environ: dict[str, str], prefix: str = ENV_PREFIX
) -> dict[str, Any]:
    """A config file as plain data, with `PREFIX SECTION__KEY` environment overrides applied and
    `base_dir` set to the file's folder. ConfigError when it cannot be read or parsed."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_bytes().decode("utf-8-sig"))  # (a UTF-8 BOM is no error)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start + 1} (0x{exc.object[exc.start]:02x})"
        raise ConfigError(f"{path}: not UTF-8 text at {where}: save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _apply_env(raw, environ, prefix)
    raw["base_dir"] = str(p.resolve().parent)
    return raw


def load(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment, validate. Raises ConfigError naming the field, or
    the environment variable that set it."""
    env = dict(os.environ if environ is None else environ)
    raw = read_toml(path, env)
    variables = env_overrides(env)
    config = convert(raw, Config, path, env, variables)
    config = msgspec.structs.replace(
        config,
        redis=absolute_files(config.redis, config.base_dir),
        feeds=[absolute_files(feed, config.base_dir) for feed in config.feeds],
    )
    problem = _problem(config)
    if problem is not None:
        field, message = problem
        if message == BOTH_PASSWORDS and field == "redis.password_env":
            raise ConfigError(_both_passwords(path, variables))
        where = variables.get(tuple(field.split(".")), f"{path}: {field}")
        raise ConfigError(f"{where}: {message}")
    return config


BOTH_PASSWORDS = "set password_env or password_file, not both"


def _both_passwords(path: str | Path, variables: Overrides) -> str:
    """`[redis] password_env` and `password_file` both set, saying where each was set: the
    file, or the variable that set it (a systemd unit sets password_file so; password_env
    left in the file is then refused, and a message naming only the file would hide why)."""
    fields = ("password_env", "password_file")
    origins = [variables.get(("redis", name)) for name in fields]
    if not any(origins):
        return f"{path}: redis.password_env: {BOTH_PASSWORDS}"
    said = " and ".join(
        f"redis.{name} (set by {origin})" if origin else f"redis.{name} (set in {path})"
        for name, origin in zip(fields, origins, strict=True)
    )
    return f"{said}: {BOTH_PASSWORDS}"


def convert(
    raw: dict[str, Any],
    schema: type[S],
    path: str | Path,
    env: dict[str, str],
    variables: Overrides,
) -> S:
    """`raw` (a config file's data, with `env`'s overrides) as `schema`, or ConfigError naming
    the file and field, or the variable (`variables`) that set the field. A variable's value
    is read as a TOML scalar when it is one; where the field takes text and that scalar is not
    text (`MARKET_MONITOR_NOTIFY__REDIS__START=0`, a stream named `2024`), it is the
    variable's text as written."""
    while True:
        try:
            return msgspec.convert(raw, schema)
        except msgspec.ValidationError as exc:
            error = str(exc)
            message, _, at = error.partition(" - at `$")
            key = tuple(at.rstrip("`").lstrip(".").split("."))
            variable = variables.get(key)
            node: Any = raw
            for part in key[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            text = env.get(variable, "") if variable is not None else ""
            if (
                variable is None
                or not message.startswith("Expected `str")
                or not isinstance(node, dict)
                or node.get(key[-1]) == text
            ):
                raise ConfigError(_invalid(path, error, raw, variables, schema)) from None
            node[key[-1]] = text


def _invalid(
    path: str | Path,
    error: str,
    raw: dict[str, Any],
    variables: Overrides,
    schema: type[msgspec.Struct] = Config,
) -> str:
    """A msgspec error as "FILE: field: message", or "VARIABLE: message" when an environment
    override set the field (or added the unknown key) it is about."""
    text = field_message(error, schema, raw)
    message, _, at = error.partition(" - at `$")
    printed = at.rstrip("`").lstrip(".")
    field = printed.split(".") if printed else []
    unknown = _UNKNOWN.match(message)
    key = (*field, unknown[1]) if unknown else tuple(field)
    # An unknown key (a section, say) set by a variable: the variable set a key below it.
    variable = variables.get(key) or next(
        (name for path, name in variables.items() if unknown and path[: len(key)] == key), None
    )
    if variable is None:
        return f"{path}: {text}"
    return f"{variable}: {text.removeprefix(f'{printed}: ') if printed else text}"


def _problem(config: Config) -> tuple[str, str] | None:
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
    if config.redis.ca_file:
        if not config.redis.url.startswith("rediss://"):
            return "redis.ca_file", "needs a rediss:// url"
        problem = unreadable(config.redis.ca_file)
        if problem is not None:
            return "redis.ca_file", problem
    for i, feed in enumerate(config.feeds):
        problem_at = _feed_problem(feed)
        if problem_at is None and feed.ca_file:
            problem = unreadable(feed.ca_file)
            problem_at = None if problem is None else ("ca_file", problem)
        if problem_at is not None:
            return f"feeds[{i}].{problem_at[0]}", problem_at[1]
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


def unreadable(path: str) -> str | None:
    """Why the file at `path` cannot be read (`cannot read PATH: No such file or directory`),
    or None when it can."""
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return None


def absolute_files(section: S, base_dir: str) -> S:
    """`section` with each of its `*_file` paths (secrets, `ca_file`) relative to `base_dir`,
    the config file's folder, as the README and the example config say; absolute ones and
    unset ones unchanged."""
    changed = {
        name: str(Path(base_dir) / value)
        for name in section.__struct_fields__
        if name.endswith("_file")
        and isinstance(value := getattr(section, name), str)
        and value
        and not Path(value).is_absolute()
    }
    return msgspec.structs.replace(section, **changed) if changed else section


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
        "username_env", "password_env", "password_file", "ca_file", "stale_after_s",
        "watch_broker_drops", "max_backlog_mb", "field_map",
    },
    "websocket": {
        "url", "provider", "symbols", "key_env", "key_file", "secret_env", "secret_file",
        "stale_after_s", "rest_url",
    },
    "replay": {"data", "speed", "start", "end", "exit_when_done"},
}  # fmt: skip


def _foreign_setting(feed: FeedConfig) -> tuple[str, str] | None:
    """(field, message) for a setting of another kind of feed, set on this one."""
    unset = FeedConfig(kind=feed.kind)
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
        if not feed.url.startswith(("ws://", "wss://")):
            return "url", _expected(feed.url, "ws://... or wss://...")
        backfill = feed.rest_url and feed.provider in ("alpaca", "polygon")
        if backfill and not (feed.key_env or feed.key_file):
            return "rest_url", "needs key_env or key_file"
        return None
    parts = split_url(feed.url)
    if isinstance(parts, str):
        return "url", parts
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return "url", _expected(feed.url, "mqtt://host[:port] or mqtts://host[:port]")
    if parts.username or parts.password:
        where = "username and password_env or password_file"
        return "url", f"credentials belong in {where}, not the url: {mask_url(feed.url)!r}"
    if feed.username and feed.username_env:
        return "username", "set username or username_env, not both"
    if feed.password_env and feed.password_file:
        return "password_env", BOTH_PASSWORDS
    if not feed.topics:
        return "topics", "an mqtt feed needs at least one topic"
    for topic in feed.topics:
        problem = _topic_problem(topic)
        if problem is not None:
            return "topics", problem
    return _field_map_problem(feed.field_map)


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


def resolve(config: Config, relative: str) -> Path:
    """A path from the config, relative to the config file's folder."""
    p = Path(relative)
    return p if p.is_absolute() else Path(config.base_dir) / p


def secret(
    where: str,
    *,
    env_name: str,
    file_name: str,
    environ: dict[str, str] | None = None,
    fields: tuple[str, str] | None = None,
) -> Secret | None:
    """Resolve a secret from `*_env` or `*_file`; None when neither is set. ConfigError when
    the variable or file is missing or empty, naming `{where}_env` or `{where}_file` (or
    `fields`, the names of the two, e.g. a command's options). A relative `file_name` is read
    from the current folder: `load` has made a config's absolute."""
    env = os.environ if environ is None else environ
    env_field, file_field = fields or (f"{where}_env", f"{where}_file")
    if env_name:
        if env_name not in env:
            raise ConfigError(f"{env_field}: environment variable {env_name} is not set")
        if not env[env_name].strip():  # (a secret named but empty: a unit or a mount gone wrong)
            raise ConfigError(f"{env_field}: environment variable {env_name} is empty")
        return Secret(env[env_name])
    if file_name:
        try:
            text = Path(file_name).read_text().strip()
        except OSError as exc:
            unit = absent_unit_credential(file_name)
            hint = f" ({UNIT_ONLY.format(unit=unit)})" if unit is not None else ""
            raise ConfigError(
                f"{file_field}: cannot read {file_name}: {exc.strerror}{hint}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file_field}: {file_name} is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"{file_field}: {file_name} is empty")
        return Secret(text)
    return None


def readable_by_others(path: str | Path) -> bool:
    """True when a config or credential file can be read by group or others."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


def credential_too_open(path: str | Path) -> bool:
    """True when a credential file can be read by group or others AND is this process's user's
    own, so that its `chmod go-rwx` is a fix the user can make and still read the file. A file
    of another owner is read through group or others on purpose (a compose secret is a bind
    mount of the host user's file, 0644 so that the container's user can read it, guarded by
    its 0700 folder on the host): tightening it would lock the daemon out (exit 78)."""
    try:
        owner = Path(path).stat().st_uid
    except OSError:
        return False
    return owner == os.geteuid() and readable_by_others(path)


CREDENTIALS = Path("/run/credentials")  # systemd's $CREDENTIALS_DIRECTORY is CREDENTIALS/UNIT
UNIT_ONLY = (
    "a systemd credential: systemd creates /run/credentials/{unit}/ from the unit's "
    "LoadCredential= only while {unit} runs"
)


def absent_unit_credential(path: str) -> str | None:
    """The unit (`market-monitor.service`) whose systemd credential `path` is, when it is one
    (`/run/credentials/UNIT/NAME`) and that unit's credentials folder does not exist: systemd
    makes it only while the unit runs, so outside the unit (`config check` from a shell, before
    the first start) the file cannot be there. None for any other path, or when the folder is
    there (the unit runs, or this is the unit: then the file is read as any other)."""
    try:
        parts = Path(path).relative_to(CREDENTIALS).parts
    except ValueError:
        return None
    if len(parts) < 2 or ".." in parts:
        return None
    try:
        (CREDENTIALS / parts[0]).stat()
    except FileNotFoundError:
        return parts[0]
    except OSError:  # (there, but not ours to look into: read the file as any other)
        return None
    return None


def writable_by_others(path: str | Path) -> bool:
    """True when a config file can be changed by group or others."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def credential_files(config: Config) -> list[str]:
    """Every `*_file` secret the config names."""
    files = [config.redis.password_file]
    for feed in config.feeds:
        files += [feed.password_file, feed.key_file, feed.secret_file]
    return [f for f in files if f]


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, credentials masked (for `config check`)."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    for section in [data.get("redis", {}), *data.get("feeds", [])]:
        url = section.get("url")
        if isinstance(url, str):
            section["url"] = mask_url(url)
    return data


def env_overrides(env: dict[str, str], prefix: str = ENV_PREFIX) -> Overrides:
    """The keys the environment overrides, each a path of lower-case names, and the variable
    that sets it: `MARKET_MONITOR__HTTP__PORT` -> {("http", "port"): "MARKET_MONITOR__HTTP__PORT"}.
    """
    found: Overrides = {}
    for key in sorted(env):
        if key.startswith(prefix):
            path = tuple(p.lower() for p in key[len(prefix) :].split("__") if p)
            if path in found:  # (names differ in case only: which one is meant?)
                raise ConfigError(f"{found[path]} and {key} set the same key: unset one")
            if path:
                found[path] = key
    return found


def _apply_env(raw: dict[str, Any], env: dict[str, str], prefix: str) -> None:
    for path, key in env_overrides(env, prefix).items():
        if path == ("feeds",):  # (the whole array, as one TOML value: as its entries, refused)
            raise ConfigError(
                f"{key}: [[feeds]] cannot be overridden from the environment (set it in the file)"
            )
        node = raw
        for n, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if isinstance(node, list) or path[n + 1].isdigit():  # FEEDS__0__URL: an entry
                table = ".".join(path[: n + 1])
                raise ConfigError(
                    f"{key}: entries of [[{table}]] cannot be overridden from the environment "
                    "(set them in the file)"
                )
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a table")
        node[path[-1]] = _scalar(env[key])


def _scalar(text: str) -> Any:
    """A variable's value read as a TOML value; as text when it is none, or more than one (a
    value with a newline and another `key = value` after it is not cut to its first line)."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["v"] if len(parsed) == 1 else text


def outside_universe(config: Config, rules: RulesFile) -> list[str]:
    """A line for each rule naming symbols that `[engine] universe` (when set) leaves out: their
    prices are rejected as unknown, so the rule cannot fire on them."""
    from monitor.core.rules.spec import unknown_symbols

    if not config.engine.universe:
        return []
    return [
        f"rule {rule_id} names {', '.join(missing)}, outside [engine] universe: it never sees "
        f"{'its' if len(missing) == 1 else 'their'} prices"
        for rule_id, missing in unknown_symbols(rules.enabled, set(config.engine.universe)).items()
    ]


def never_fire(config: Config, rules: RulesFile) -> list[str]:
    """A line for each rule that can fire on no data the daemon may get: a breadth rule given
    fewer symbols than its `min_symbols`, or, with `[engine] universe`, a universe rule left
    with none (or too few) once `exclude` goes. Symbols outside the universe, and squeeze rules
    without short interest, have lines of their own (`outside_universe`, NO_SHORT_INTEREST).
    `replay` says the same of the data it reads."""
    from monitor.core.rules.spec import NO_SHORT_INTEREST, cannot_fire, named_symbols

    universe = set(config.engine.universe)
    # (without [engine] universe, a universe rule's symbols are whatever the feeds send)
    checked = [r for r in rules.enabled if universe or not r.universe]
    known = universe or {s for r in checked for s in named_symbols(r)}
    source = "[engine] universe" if universe else None
    found = cannot_fire(checked, known, minute_bars=True, short_interest=True, source=source)
    return [
        f"rule {rule_id} cannot fire: {why}"
        for rule_id, why in found.items()
        if why != NO_SHORT_INTEREST and "not in the data" not in why
    ]


def load_short_interest(config: Config) -> ShortInterestFile | None:
    """The `[rules] short_interest` file, relative to the config file (None when unset), and
    its rows left out; DataError (exit 65) naming the file when it cannot be read, has a
    malformed cell or no usable row."""
    if not config.rules.short_interest:
        return None
    from monitor.short_interest_io import read_short_interest

    return read_short_interest(resolve(config, config.rules.short_interest))


def load_rules_file(config: Config) -> RulesFile:
    """The rules file `[rules] file` names; ConfigError says what is wrong with it."""
    from monitor.core.rules.spec import RuleError, parse_rules

    path = resolve(config, config.rules.file)
    try:
        return parse_rules(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"rules.file: cannot read {path}: {exc.strerror}") from None
    except RuleError as exc:
        raise ConfigError(f"rules.file {path}: {exc}") from None
