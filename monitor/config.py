"""The daemon's configuration: TOML, environment overrides, typed and checked.

Decoded into frozen structs that refuse unknown fields; every error names the field path (or
the environment variable that set it) and the CLI exits 78. Each component receives only its
own slice. Beside this module: `config_env` (`MARKET_MONITOR__SECTION__KEY=value` overrides),
`config_problems` (what the types cannot say and `run` would refuse), `credentials` (secrets:
never in the file, but `password_env = "NAME"` or `password_file = PATH`, resolved into
`Secret` values masked in every repr and log) and `rules_config` (the rules and short-interest
files the config names). Paths are relative to the config file's folder: `load` makes every
`*_file` absolute (secrets and `ca_file`), and `resolve` does it for the others.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from monitor.config_env import ENV_PREFIX, Overrides, apply_env, env_overrides
from monitor.config_problems import BOTH_PASSWORDS, INFINITE, problem
from monitor.core.fields import field_message
from monitor.errors import ConfigError
from monitor.urls import mask_url

S = TypeVar("S", bound=msgspec.Struct)
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`")
# Upper bounds, so that a finite but absurd number is a config error naming its field, not a
# crash at run (APScheduler's interval past ~8.6e13 s, a timedelta past 999,999,999 days, Redis
# refusing an integer past 2^63 - 1, MQTT 5 a session expiry past 2^32 - 1 s).
LONGEST_S = 366 * 86_400.0  # every duration and interval in seconds: a year at most
REDIS_INT_MAX = 2**63 - 1


class Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Config structs: frozen, unknown fields refused."""


class StoreConfig(Base, frozen=True):
    path: str = "var/market-monitor"
    snapshot_interval_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 300.0
    intraday_interval_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 60.0
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
    session_expiry_s: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = 3600  # (MQTT 5: 4 bytes)
    mqtt_version: Literal["3.1.1", "5"] = "3.1.1"
    provider: Literal["generic", "alpaca", "polygon", "finnhub"] = "generic"
    symbols: list[str] = []
    username: str = ""
    username_env: str = ""
    username_file: str = ""
    password_env: str = ""
    password_file: str = ""
    key_env: str = ""
    key_file: str = ""
    secret_env: str = ""
    secret_file: str = ""
    ca_file: str = ""
    stale_after_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 60.0
    rest_url: str = ""
    # websocket with rest_url: the minute a reconnect falls in is fetched over REST this long
    # after it ends (a provider publishes a minute's bar a few seconds after), its close held
    # until then (see `monitor.feeds.tail_minutes`)
    backfill_tail_delay_s: Annotated[float, Meta(ge=0, le=300)] = 5.0
    watch_broker_drops: bool = True
    # mqtt: received but unprocessed messages held at most; past it the socket is not read
    max_backlog_mb: Annotated[float, Meta(gt=0, le=1_048_576)] = 16.0  # (a TiB at most)
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
    # (not empty: `MARKET_MONITOR__REDIS__STREAM=${UNSET}` wrote the alerts to a key named "",
    # which no notifier reads, and published them on a channel no subscriber listens to)
    channel: Annotated[str, Meta(min_length=1)] = "market-monitor:alerts"
    stream: Annotated[str, Meta(min_length=1)] = "market-monitor:alerts"
    maxlen: Annotated[int, Meta(ge=1, le=REDIS_INT_MAX)] = 100_000
    # an alert id published is not published again for this long (a restart that evaluates a
    # period again, a batch resent after a lost reply)
    # (at most ten years: Redis refuses an expiry past its clock's range, as if it were down)
    dedupe_ttl_s: Annotated[int, Meta(ge=1, le=10 * 365 * 86_400)] = 30 * 86_400
    # between PINGs, which make /healthz follow Redis (going away, coming back) within about this
    check_interval_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 2.0
    username: str = ""  # an ACL user; or from the environment or a file:
    username_env: str = ""
    username_file: str = ""
    password_env: str = ""
    password_file: str = ""
    ca_file: str = ""


class RulesConfig(Base, frozen=True):
    file: str = "rules.toml"
    short_interest: str = ""


class HttpConfig(Base, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 9108
    # the names (with or without a port, `*.example.com`) a request's Host may be, beside the
    # loopback ones, whatever `host` is; empty: loopback names only on a loopback host, any else
    allowed_hosts: list[str] = []


class EngineConfig(Base, frozen=True):
    queue_size: Annotated[int, Meta(ge=1, le=10_000_000)] = 10_000
    batch_max_rows: Annotated[int, Meta(ge=1, le=10_000_000)] = 50_000
    batch_max_age_ms: Annotated[float, Meta(gt=0, le=60_000)] = 25.0  # (a minute at most)
    # a feed catching up on a backlog (its data well behind the clock, coming in many batches)
    # holds the minutes open until its data is in, for this long at most (0: never holds;
    # see `monitor.close_clock`)
    catch_up_hold_s: Annotated[float, Meta(ge=0, le=3600)] = 60.0
    late_ticks: Literal["correct", "reject"] = "correct"
    # a session's bar is built of its ticks this long after its close (a minute's, 2 s after
    # its end): closing prints that come a few seconds late are in it, not a correction after
    # the daily rules fired (a movers rule ranked without them)
    session_close_delay_s: Annotated[float, Meta(ge=2, le=3600)] = 10.0
    # a copy of a trade is recognised within this of the trade's time (or of the first copy's
    # arrival, for a trade that came later than that)
    dedup_window_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 3600.0
    # duplicate-tick keys held at most (8 bytes each); past it the window shrinks
    dedup_max_keys: Annotated[int, Meta(ge=1000, le=1_000_000_000)] = 8_000_000
    # a feed's cancel or correction of a trade taken this recently (its minute starting at
    # most this long before the latest closed one) takes it out of its bars (0: cancels are
    # counted, not applied); the ticks of that long are kept in memory to build bars again
    cancel_window_s: Annotated[float, Meta(ge=0, le=86_400)] = 900.0
    extended_hours: bool = False
    # hold back a session bar whose minutes look cut short at the close (a feed down through
    # it) until minutes that make it whole come (a backfill); false: build it of what came
    hold_cut_short: bool = True
    # minute bars kept per symbol for minute rules (their windows, largest-since and history);
    # unset: two sessions' worth, 780 (regular hours) or 1920 (with extended_hours)
    minute_history: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    universe: list[str] = []
    max_jump: Annotated[float, Meta(gt=1)] = 10.0
    # prints in a row out of band of the reference, agreeing with each other, that make the
    # last of them the reference (the market moved, or the reference was a bad print)
    max_jump_confirm: Annotated[int, Meta(ge=2, le=1000)] = 5


class ShutdownConfig(Base, frozen=True):
    grace_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 10.0


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
    apply_env(raw, environ, prefix)
    if "base_dir" in raw:  # (it was overwritten: paths go by where the file is)
        where = env_overrides(environ, prefix).get(("base_dir",), f"{path}: base_dir")
        raise ConfigError(f"{where}: not a setting: paths are relative to the config file's folder")
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
    found = problem(config)
    if found is not None:
        field, message = found
        if message == BOTH_PASSWORDS and field == "redis.password_env":
            raise ConfigError(_both_passwords(path, variables))
        where = variables.get(tuple(field.split(".")), f"{path}: {field}")
        raise ConfigError(f"{where}: {message}")
    return config


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
            if _is_endless(raw, at.rstrip("`")):  # (`inf` past a bound: said as `inf`)
                error = f"{INFINITE} - at `${at}"
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


def _is_endless(raw: Any, at: str) -> bool:
    """Whether the value at `at` (`.feeds[0].max_backlog_mb`, as msgspec names a field) of the
    plain data `raw` is a float that is not finite."""
    node = raw
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", at):
        if index:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = node.get(name) if isinstance(node, dict) else None
    return isinstance(node, float) and not math.isfinite(node)


def _invalid(
    path: str | Path,
    error: str,
    raw: dict[str, Any],
    variables: Overrides,
    schema: type[msgspec.Struct] = Config,
) -> str:
    """A msgspec error as "FILE: field: message", or "VARIABLE: message" when an environment
    override set the field (or added the unknown key) it is about."""
    text = field_message(error, schema, raw, hidden=("base_dir",))
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


def resolve(config: Config, relative: str) -> Path:
    """A path from the config, relative to the config file's folder."""
    p = Path(relative)
    return p if p.is_absolute() else Path(config.base_dir) / p


def credential_files(config: Config) -> list[str]:
    """Every `*_file` secret the config names."""
    files = [config.redis.password_file, config.redis.username_file]
    for feed in config.feeds:
        files += [feed.password_file, feed.username_file, feed.key_file, feed.secret_file]
    return [f for f in files if f]


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, credentials masked (for `config check`)."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    for section in [data.get("redis", {}), *data.get("feeds", [])]:
        for field, value in section.items():  # (url, rest_url: a token may sit in a query)
            if field.endswith("url") and isinstance(value, str):
                section[field] = mask_url(value)
    return data
