"""`market-monitor config check --config FILE`: would the daemon start with this configuration?

Loads the file with the environment overrides applied (which reads every `ca_file`), reads the
rules file, the replay feeds' data files and the short-interest file through the functions the
daemon reads them with (a squeeze rule whose symbols that file has no figure for is warned of,
as the daemon logs it), resolves every secret (`*_env`, `*_file`) the daemon would, and prints the
effective configuration with secrets masked. Exit 0 when the daemon would start with it; else the
line and exit code `run` gives: 78 naming the field path (a store folder that cannot be made
too), 65 (a data error) naming a data file, 71 for an `[http] host` that is no address of this
machine (`monitor.start_checks`).
A secret file that is a systemd credential of a unit not running (`/run/credentials/UNIT/NAME`,
which systemd makes only while the unit runs) is not read: a warning says how to check it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tomllib
from typing import Any

import msgspec

from monitor import config as cfg
from monitor import credentials, rules_config
from monitor.core.rules.spec import NO_SHORT_INTEREST, no_short_interest, rule_warnings
from monitor.errors import EX_CONFIG, EX_DATAERR, EX_IOERR, EX_OSERR, ConfigError, DataError
from monitor.replay_data import read_replay_feeds
from monitor.start_checks import http_problem, store_problem
from monitor.urls import mask_url

MASK = "***"


def config_check(args: argparse.Namespace) -> int:
    """Entry point of `config check`."""
    path = str(args.config)
    if _is_notifier_config(path):
        return _notifier_check(path, getattr(args, "format", "toml"))
    try:
        config = cfg.load(path)
        rules = rules_config.load_rules_file(config)
        rejected = []
        for feed in read_replay_feeds(config):  # (read and let go, one feed at a time)
            rejected += [f"feed {feed.name}: {line}" for line in feed.rejected]
        figures = rules_config.load_short_interest(config)
        for line in figures.said() if figures is not None else ():
            rejected.append(f"rules.short_interest {config.rules.short_interest}: {line}")
        sources, unread = resolve_secrets(config)
        store_error, store_warning = store_problem(cfg.resolve(config, config.store.path))
        if store_error is not None:
            raise ConfigError(store_error)
    except ConfigError as exc:
        print(f"market-monitor: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except DataError as exc:
        print(f"market-monitor: data error: {exc}", file=sys.stderr)
        return EX_DATAERR
    listen = http_problem(config.http.host, config.http.port)
    if listen is not None:  # (run's line and exit code: 71, which systemd restarts)
        print(f"market-monitor: error: {listen}", file=sys.stderr)
        return EX_OSERR
    for line in [*rejected, *([store_warning] if store_warning else [])]:
        print(f"market-monitor: warning: {line}", file=sys.stderr)
    if credentials.writable_by_others(path):
        print(
            f"market-monitor: warning: {path} is writable by others (chmod go-w)", file=sys.stderr
        )
    for file in cfg.credential_files(config):
        if credentials.credential_too_open(file):
            print(
                f"market-monitor: warning: {file} is readable by others (chmod go-rwx)",
                file=sys.stderr,
            )
    for field, (file, unit) in unread.items():
        print(f"market-monitor: warning: {unit_only(field, file, unit)}", file=sys.stderr)
    for line in [
        *rules_config.outside_universe(config, rules),
        *rules_config.never_fire(config, rules),
    ]:
        print(f"market-monitor: warning: {line}", file=sys.stderr)
    for line in rule_warnings(rules, session_minutes=rules_config.session_minutes(config)):
        print(f"market-monitor: warning: rules.file: {line}", file=sys.stderr)
    if not config.rules.short_interest:
        for rule_id in no_short_interest(rules.enabled):
            print(
                f"market-monitor: warning: rule {rule_id} cannot fire: {NO_SHORT_INTEREST}",
                file=sys.stderr,
            )
    elif figures is not None:
        history = rules_config.history_symbols(config) if not config.engine.universe else set()
        covered = rules_config.short_interest_coverage(config, rules, figures.figured(), history)
        for _, line in covered:
            print(f"market-monitor: warning: {line}", file=sys.stderr)
    data = cfg.masked(config)
    not_read = {
        field: f"not read: {file} exists only while {unit} runs"
        for field, (file, unit) in unread.items()
    }
    if getattr(args, "format", "toml") == "json":
        data["secrets"] = {field: f"{MASK} ({source})" for field, source in sources.items()}
        data["secrets"].update(not_read)
        print(json.dumps(data, indent=2))
    else:
        print(f"# market-monitor: effective configuration of {path}")
        print("# (environment overrides applied, secrets masked; the daemon would start with it)")
        print(to_toml(data), end="")
        if sources:
            print("\n# secrets resolved:")
            for field, source in sources.items():
                print(f"#   {field} = {MASK}  ({source})")
        if not_read:
            print("\n# secrets not read (systemd credentials of a unit not running):")
            for field, why in not_read.items():
                print(f"#   {field}: {why}")
    return 0


# The sections only the notifier's config has, and those only the daemon's has.
NOTIFIER_ONLY = ("receivers", "route", "delivery", "runaway", "charts", "digest", "templates")
DAEMON_ONLY = ("store", "feeds", "rules", "engine", "shutdown", "console")


def _is_notifier_config(path: str) -> bool:
    """Whether `path` is the notifier's config, not the daemon's: it has a section only the
    notifier's has (`[[receivers]]`, `[route]`, ...), or one misspelt from those
    (`[[receiver]]`: the notifier's reading then names the typo, not the daemon's)."""
    try:
        with open(path, "rb") as f:
            keys = list(tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False  # (the daemon's reading of it says what is wrong)
    return any(
        key in NOTIFIER_ONLY
        or (
            key not in DAEMON_ONLY
            and difflib.get_close_matches(key, NOTIFIER_ONLY, n=1, cutoff=0.8)
            and not difflib.get_close_matches(key, DAEMON_ONLY, n=1, cutoff=0.8)
        )
        for key in keys
    )


def _notifier_check(path: str, form: str = "toml") -> int:
    """`config check` of the notifier's config: read and checked as the notifier reads it
    (its `[redis]` login's secrets and receiver URLs no sender can use included), without
    sending or connecting. `form` "json": the effective configuration as JSON on stdout, as
    for the daemon's (`_notifier_json`), instead of the line saying it reads as one."""
    import asyncio

    from monitor.notify import config as ncfg
    from monitor.notify.dispatch import receiver_sender

    async def senders(config: ncfg.NotifyConfig) -> None:  # (made and closed: nothing sent)
        for i, r in enumerate(config.receivers):
            unit = ncfg.unit_credential(r)
            if unit is not None:  # (it exists only while the unit runs)
                warning = unit_only(f"receivers[{i}].url_file", r.url_file, unit)
                print(f"market-monitor: warning: {warning}", file=sys.stderr)
                continue
            url = ncfg.resolve_url(r, f"receivers[{i}].url")
            await receiver_sender(i, r, str(url)).aclose()

    secrets = Secrets()
    try:
        config = ncfg.load(path, outside_unit=True)
        redis = config.redis  # (its login, as `notify` reads it before it connects)
        secrets.resolve("redis.password", redis.password_env, redis.password_file)
        secrets.resolve("redis.username", redis.username_env, redis.username_file)
        asyncio.run(senders(config))
    except ConfigError as exc:
        print(f"market-monitor: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    listen = http_problem(config.http.host, config.http.port) if config.http.enabled else None
    if listen is not None:  # (notify's line and exit code: 74)
        print(f"market-monitor: error: {listen}", file=sys.stderr)
        return EX_IOERR
    for field, (file, unit) in secrets.unread.items():
        print(f"market-monitor: warning: {unit_only(field, file, unit)}", file=sys.stderr)
    for line in [*ncfg.placeholder_warnings(config), *ncfg.http_warnings(config)]:
        print(f"market-monitor: warning: {line}", file=sys.stderr)
    if form == "json":
        print(json.dumps(_notifier_json(config, secrets), indent=2))
        return 0
    names = ", ".join(r.name for r in config.receivers)
    print(
        f"market-monitor: {path} is a notifier config ([[receivers]]) and reads as one:"
        f" receivers {names}; `market-monitor notify test --config {path} --receiver NAME`"
        " sends a test message"
    )
    return 0


def _notifier_json(config: Any, secrets: Secrets) -> dict[str, Any]:
    """The notifier's effective configuration as plain data, secrets masked: `[redis] url`
    as the daemon's is, a receiver's `url` kept where it is a template (its `{NAME}`
    placeholders are filled from the environment, which holds the secrets) and masked past
    its scheme where it is written out whole (a webhook's token sits in its path); `secrets`:
    where each was read from."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    data["redis"]["url"] = mask_url(data["redis"]["url"])
    for receiver in data.get("receivers", []):
        url = receiver.get("url", "")
        if url and "{" not in url:
            scheme, sep, _ = url.partition("://")
            receiver["url"] = f"{scheme}{sep}{MASK}" if sep else MASK
    data["secrets"] = {field: f"{MASK} ({source})" for field, source in secrets.found.items()}
    return data


def unit_only(field: str, file: str, unit: str) -> str:
    """The warning for a secret file that is a systemd credential of `unit`, which exists only
    while the unit runs: not read, and how to check it where it exists."""
    return (
        f"{field}: {file} not read: {credentials.UNIT_ONLY.format(unit=unit)}. Check the file "
        f"LoadCredential= reads it from, then `systemctl start {unit}` and `systemctl status "
        f"{unit}`: a missing source fails the start (status=243/CREDENTIALS), an empty one "
        f"exits 78 naming {field} (`journalctl -u {unit} -n 20`)"
    )


def resolve_secrets(
    config: cfg.Config,
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Resolve every secret the daemon reads at start-up, as it does; returns field -> where it
    came from (never the value), and `*_file` field -> (file, unit) for the files not read: a
    unit's systemd credentials (`/run/credentials/UNIT/NAME`) when the unit is not running,
    which systemd makes only while it runs. ConfigError names the field when a variable or
    file is missing.
    """
    secrets = Secrets()
    secrets.resolve("redis.password", config.redis.password_env, config.redis.password_file)
    secrets.resolve("redis.username", config.redis.username_env, config.redis.username_file)
    for i, feed in enumerate(config.feeds):  # (those the feed's kind reads: monitor.feed_wiring)
        where = f"feeds[{i}]"
        if feed.kind == "mqtt":
            secrets.resolve(f"{where}.username", feed.username_env, feed.username_file)
            secrets.resolve(f"{where}.password", feed.password_env, feed.password_file)
        elif feed.kind == "websocket":
            secrets.resolve(f"{where}.key", feed.key_env, feed.key_file)
            secrets.resolve(f"{where}.secret", feed.secret_env, feed.secret_file)
    return secrets.found, secrets.unread


class Secrets:
    """The secrets `config check` resolved: `found`, field -> where each came from (never the
    value); `unread`, `*_file` field -> (file, unit) for a systemd credential of a unit not
    running, which systemd makes only while the unit runs."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}
        self.unread: dict[str, tuple[str, str]] = {}

    def resolve(self, where: str, env_name: str, file_name: str) -> None:
        """Read the secret `where` (`redis.password`) from `env_name` or `file_name` as the
        service reads it; ConfigError naming the field when it cannot be."""
        unit = credentials.absent_unit_credential(file_name) if file_name and not env_name else None
        if unit is not None:
            self.unread[f"{where}_file"] = (file_name, unit)
            return
        if where.endswith(".username"):  # (read as the service reads it: a user name checked)
            value = credentials.login_name(where, "", env_name, file_name)
        else:
            value = credentials.secret(where, env_name=env_name, file_name=file_name)
        if value is not None:
            self.found[where] = f"environment {env_name}" if env_name else f"file {file_name}"


def to_toml(data: dict[str, Any]) -> str:
    """Plain data as TOML: top-level scalars, then `[section]` tables, then `[[array]]` tables;
    a dict inside a section is an inline table; None (which TOML cannot say) is a comment."""
    sections = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in data.items() if _is_table_array(v)}
    lines = _body({k: v for k, v in data.items() if k not in sections and k not in arrays})
    for key, table in sections.items():
        lines += ["", f"[{key}]", *_body(table)]
    for key, items in arrays.items():
        for item in items:
            lines += ["", f"[[{key}]]", *_body(item)]
    return "\n".join(lines).lstrip("\n") + "\n"


def _body(table: dict[str, Any]) -> list[str]:
    return [
        f"# {key} is unset" if value is None else f"{key} = {_value(value)}"
        for key, value in table.items()
    ]


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    return json.dumps(str(value))
