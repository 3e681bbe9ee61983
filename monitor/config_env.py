"""Environment overrides of a config file: `PREFIX` + `SECTION__KEY=value` sets `[section] key`.

Values are read as TOML scalars when they parse, else taken as strings. Arrays of tables
(`[[feeds]]`, `[[receivers]]`, `[[route.routes]]`) cannot be set so, whole or by entry.
`env_overrides` also tells which key a variable set, so that an error in its value names the
variable instead of the file.
"""

from __future__ import annotations

import tomllib
from typing import Any

from monitor.errors import ConfigError

ENV_PREFIX = "MARKET_MONITOR__"
Overrides = dict[tuple[str, ...], str]  # a key's path -> the environment variable that sets it
# The arrays of tables of each config, by its variables' prefix: set in the file only, never
# from the environment, whole (`MARKET_MONITOR_NOTIFY__RECEIVERS='[{...}]'` replaced every
# receiver) or by entry (`MARKET_MONITOR__FEEDS__0__URL`).
TABLE_ARRAYS: dict[str, set[tuple[str, ...]]] = {
    ENV_PREFIX: {("feeds",)},
    "MARKET_MONITOR_NOTIFY__": {("receivers",), ("route", "routes")},
}


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


def apply_env(raw: dict[str, Any], env: dict[str, str], prefix: str) -> None:
    for path, key in env_overrides(env, prefix).items():
        if path in TABLE_ARRAYS.get(prefix, set()):  # (the whole array, as one TOML value)
            raise ConfigError(
                f"{key}: [[{'.'.join(path)}]] cannot be overridden from the environment (set it"
                " in the file)"
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
