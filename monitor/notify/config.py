"""The notifier's configuration (`market-monitor notify --config FILE`): frozen structs, unknown
fields refused, every error naming the field path (exit 78).

Receiver URLs are Apprise URLs. Secrets never sit in the file: `url_env` / `url_file` give the
whole URL, or `{NAME}` placeholders in `url` are filled from the environment
(`url = "tgram://{TELEGRAM_TOKEN}/{TELEGRAM_CHAT}"`), percent-encoded for where they sit (see
`fill_placeholders`). Resolved URLs are `Secret` values.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Annotated, Literal, get_args
from urllib.parse import quote, urlencode

import msgspec
from msgspec import Meta

from monitor.config import LONGEST_S, REDIS_INT_MAX, Base, absolute_files, convert, read_toml
from monitor.config_env import env_overrides
from monitor.config_problems import (
    INFINITE,
    allowed_hosts_problem,
    infinite,
    redis_ca_problem,
    redis_url_problem,
    two_usernames,
)
from monitor.core.model import Severity
from monitor.credentials import Secret, absent_unit_credential, secret
from monitor.errors import ConfigError

ENV_PREFIX = "MARKET_MONITOR_NOTIFY__"
LONGEST_WAIT_S = LONGEST_S  # a route's group_wait and group_interval, at most (a year)
TEN_YEARS_S = 10 * 365 * 86_400  # an expiry Redis takes (its clock's range), as the daemon's
PLACEHOLDER = re.compile(r"\{([A-Z_][A-Z0-9_]*)\}")
NATIVE_SCHEMES = ("tgram", "slack", "discord")
REDIS_SCHEMES = ("redis", "rediss", "unix")  # what the Redis client takes
GROUP_FIELDS = ("rule", "kind", "symbol", "severity", "session", "timeframe", "id")
SEVERITIES: tuple[str, ...] = get_args(Severity)
Format = Literal["auto", "markdown", "html", "text"]


class RedisSection(Base, frozen=True):
    """Where alerts come from: the daemon's stream, read through a consumer group."""

    url: str = "redis://127.0.0.1:6379/0"
    # (not empty: `MARKET_MONITOR_NOTIFY__REDIS__STREAM=${UNSET}` read a stream named "")
    stream: Annotated[str, Meta(min_length=1)] = "market-monitor:alerts"
    group: Annotated[str, Meta(min_length=1)] = "notifier"
    consumer: str = ""  # default: hostname-pid
    start: Literal["$", "0"] = "$"  # where a new group starts: new entries only, or all
    username: str = ""  # an ACL user (docs/security.md); empty: the URL's, else `default`
    username_env: str = ""  # (or the user from the environment or a file)
    username_file: str = ""
    password_env: str = ""
    password_file: str = ""
    ca_file: str = ""  # the CA that signed the server's certificate (rediss://), as the daemon's
    batch: Annotated[int, Meta(ge=1, le=10_000)] = 100
    block_ms: Annotated[int, Meta(ge=1, le=60_000)] = 1000  # (a minute at most)
    claim_idle_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 60.0
    claim_interval_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 10.0
    delivery_log_ttl_s: Annotated[int, Meta(ge=60, le=TEN_YEARS_S)] = 30 * 86_400
    # dead letters kept; older ones trimmed
    dead_maxlen: Annotated[int, Meta(ge=1, le=REDIS_INT_MAX)] = 10_000


class QuietHours(Base, frozen=True):
    """Local hours when a receiver is not disturbed: batches wait (`queue`) or go to the digest."""

    start: str
    end: str
    tz: str = "UTC"
    mode: Literal["queue", "digest"] = "queue"
    bypass_severity: list[Literal["info", "notice", "warning", "critical"]] = msgspec.field(
        default_factory=lambda: ["critical"]
    )


class ReceiverConfig(Base, frozen=True):
    """One channel: an Apprise URL (json(s)://, tgram://, slack:// and discord:// go through our
    own httpx senders, see monitor.notify.senders)."""

    name: str
    url: str = ""
    url_env: str = ""
    url_file: str = ""
    format: Format = "auto"
    attach_chart: bool = True
    sender: Literal["auto", "apprise", "http"] = "auto"
    min_interval_s: Annotated[float, Meta(ge=0, le=LONGEST_S)] = 0.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] | None = None
    timeout_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 10.0
    quiet_hours: QuietHours | None = None
    # tgram://, slack://, discord:// only: the provider's API address (a proxy, a local fake)
    api_base: Annotated[str, Meta(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")] | None = None


class Match(Base, frozen=True):
    """Glob patterns per field; a field with no patterns matches anything."""

    rule: list[str] = msgspec.field(default_factory=list)
    kind: list[str] = msgspec.field(default_factory=list)
    symbol: list[str] = msgspec.field(default_factory=list)
    severity: list[str] = msgspec.field(default_factory=list)


class RouteConfig(Base, frozen=True):
    """A node of the route tree; unset timing and receivers are inherited from the parent."""

    match: Match = Match()
    receivers: list[str] = msgspec.field(default_factory=list)
    continue_: bool = msgspec.field(default=False, name="continue")
    group_by: list[str] | None = None
    group_wait_s: Annotated[float, Meta(ge=0, le=LONGEST_WAIT_S)] | None = None
    group_interval_s: Annotated[float, Meta(ge=0, le=LONGEST_WAIT_S)] | None = None
    # The same as a duration, as an alert router writes them: "30s", "5m", "1h30m" (or seconds).
    group_wait: str | float | None = None
    group_interval: str | float | None = None
    inhibit: bool | None = None  # held back while a feed is stale (default true)
    routes: list[RouteConfig] = msgspec.field(default_factory=list)


class DeliverySection(Base, frozen=True):
    """Retries of a transient failure, per receiver. The defaults try for 3 to 6 minutes (waits
    of 1, 2, 4 ... 60 s, each cut by up to `jitter`) before dead-lettering: a chat service's
    outage of a minute or two delays alerts, it does not lose them (6 attempts, 15 to 31 s,
    did)."""

    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 12
    backoff_base_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 1.0
    backoff_cap_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 60.0
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.5
    # At a stop (SIGTERM), how long a message being sent may take to finish: below the unit's
    # TimeoutStopSec (30 s), with room for the hand-over after.
    stop_grace_s: Annotated[float, Meta(ge=0, le=600)] = 20.0


class RunawaySection(Base, frozen=True):
    """A rule firing more than `max_alerts` in `window_s` is throttled into one summary."""

    max_alerts: Annotated[int, Meta(ge=1)] = 30
    window_s: Annotated[float, Meta(gt=0, le=LONGEST_S)] = 600.0
    receivers: list[str] = msgspec.field(
        default_factory=list
    )  # who is told; default: where the rule's alerts go


class ChartsSection(Base, frozen=True):
    enabled: bool = True
    bars: str = ""  # the daemon's store bars_daily.parquet
    sessions: Annotated[int, Meta(ge=5, le=100_000)] = 120


class DigestSection(Base, frozen=True):
    enabled: bool = False
    at: str = "17:30"
    tz: str = "America/New_York"
    receivers: list[str] = msgspec.field(default_factory=list)
    small: str = "IWM"
    large: list[str] = msgspec.field(default_factory=lambda: ["QQQ", "SPY"])
    top: Annotated[int, Meta(ge=1, le=1000)] = 5


# The fields a `[templates]` string may name (monitor/notify/render.py `fields` fills them).
TEMPLATE_FIELDS = (
    "title", "text", "history", "symbol", "rule", "kind", "severity", "session", "timeframe", "id",
)  # fmt: skip


class TemplatesSection(Base, frozen=True):
    """`string.Template` overrides ($title, $text, $history, $symbol, $rule, ...), see docs."""

    title: str = ""
    markdown: str = ""
    html: str = ""
    text: str = ""


class HttpSection(Base, frozen=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 9109
    allowed_hosts: list[str] = msgspec.field(default_factory=list)  # (as the daemon's)


class LogSection(Base, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool | None = None


class NotifyConfig(Base, frozen=True):
    """The whole notifier configuration."""

    redis: RedisSection = RedisSection()
    receivers: list[ReceiverConfig] = msgspec.field(default_factory=list)
    route: RouteConfig = RouteConfig()
    delivery: DeliverySection = DeliverySection()
    runaway: RunawaySection = RunawaySection()
    charts: ChartsSection = ChartsSection()
    digest: DigestSection = DigestSection()
    templates: TemplatesSection = TemplatesSection()
    http: HttpSection = HttpSection()
    log: LogSection = LogSection()
    base_dir: str = "."

    def receiver(self, name: str) -> ReceiverConfig:
        """The receiver called `name`; ConfigError when there is none."""
        for r in self.receivers:
            if r.name == name:
                return r
        raise ConfigError(f"receivers: no receiver named {name!r}")

    @property
    def digest_receivers(self) -> list[str]:
        """Who gets the digest: `digest.receivers`, else the root route's receivers."""
        return self.digest.receivers or self.route.receivers

    @property
    def dead_stream(self) -> str:
        """Where alerts that could not be delivered go."""
        return f"{self.redis.stream}:dead"

    @property
    def bars_path(self) -> Path | None:
        """The bars Parquet file for charts, relative to the config file."""
        if not self.charts.bars:
            return None
        p = Path(self.charts.bars)
        return p if p.is_absolute() else Path(self.base_dir) / p


def load(
    path: str | Path,
    environ: dict[str, str] | None = None,
    *,
    outside_unit: bool = False,
    urls: bool = True,
) -> NotifyConfig:
    """Read, override from `MARKET_MONITOR_NOTIFY__*`, validate; ConfigError names the field.
    `outside_unit` (`config check`): a receiver's `url_file` that is a systemd credential of a
    unit not running (it exists only while the unit runs) is not read. `urls=False` (`silence`,
    which talks to Redis only): no receiver's URL is resolved, so the receivers' secrets (the
    service's environment, its credentials) need not be at hand."""
    env = dict(os.environ if environ is None else environ)
    raw = read_toml(path, env, ENV_PREFIX)
    return parse(
        raw, where=str(path), environ=env, prefix=ENV_PREFIX, outside_unit=outside_unit, urls=urls
    )


def parse(
    raw: dict[str, object],
    *,
    where: str = "config",
    environ: dict[str, str] | None = None,
    prefix: str | None = None,
    outside_unit: bool = False,
    urls: bool = True,
) -> NotifyConfig:
    """Validate plain data into a NotifyConfig (and check names, times, zones and secrets);
    `*_file` paths (secrets, `ca_file`) are made relative to `base_dir`, the file's folder.
    With `prefix`, `environ`'s variables under it set fields: an error in one names it."""
    env = environ or {}
    variables = env_overrides(env, prefix) if prefix is not None else {}
    config = convert(raw, NotifyConfig, where, env, variables)
    try:
        config = msgspec.structs.replace(  # (relative to the config file, as the daemon's)
            config,
            redis=absolute_files(config.redis, config.base_dir),
            receivers=[absolute_files(r, config.base_dir) for r in config.receivers],
            route=_timings(config.route, "route"),
        )
        check(config, environ, outside_unit=outside_unit, urls=urls)
    except ConfigError as exc:
        field, _, message = str(exc).partition(": ")
        variable = variables.get(tuple(field.split(".")))
        if variable is not None:  # (the file does not hold the value: the variable does)
            raise ConfigError(f"{variable}: {message}") from None
        raise ConfigError(f"{where}: {exc}") from None
    return config


def check(
    config: NotifyConfig,
    environ: dict[str, str] | None = None,
    *,
    outside_unit: bool = False,
    urls: bool = True,
) -> None:
    """Cross-field checks: a Redis URL the client takes, a `ca_file` it can load (with a
    rediss:// URL), unique
    receiver names, known references, clock times, time zones."""
    endless = infinite(msgspec.to_builtins(config))
    if endless is not None:
        raise ConfigError(f"{endless}: {INFINITE}")
    problem = redis_url_problem(config.redis.url, REDIS_SCHEMES)
    if problem is not None:
        raise ConfigError(f"redis.url: {problem}")
    section = config.redis
    twice = two_usernames(section.username, section.username_env, section.username_file)
    if twice is not None:
        raise ConfigError(f"redis.{twice[0]}: {twice[1]}")
    # (else every connection fails: the client's TypeError, or "unreachable" for ever)
    problem = redis_ca_problem(config.redis.url, config.redis.ca_file)
    if problem is not None:
        raise ConfigError(f"redis.ca_file: {problem}")
    problem = allowed_hosts_problem(config.http.allowed_hosts)
    if problem is not None:
        raise ConfigError(f"http.allowed_hosts: {problem}")
    names = [r.name for r in config.receivers]
    for i, name in enumerate(names):
        if not name or names.index(name) != i:
            raise ConfigError(f"receivers[{i}].name: empty or duplicate name {name!r}")
    for i, r in enumerate(config.receivers):
        if urls and not (outside_unit and unit_credential(r)):
            resolve_url(r, f"receivers[{i}].url", environ)
        if r.quiet_hours is not None:
            q = r.quiet_hours
            start = parse_clock(q.start, f"receivers[{i}].quiet_hours.start")
            if parse_clock(q.end, f"receivers[{i}].quiet_hours.end") == start:
                raise ConfigError(
                    f"receivers[{i}].quiet_hours: start and end are both {start:%H:%M}: quiet"
                    " hours of no length, which never apply (they are from start to end, and"
                    " may span midnight: 22:00 to 07:00)"
                )
            zone(q.tz, f"receivers[{i}].quiet_hours.tz")
            if q.mode == "digest":
                _check_digest_mode(config, r.name, f"receivers[{i}].quiet_hours.mode")
    _check_route(config.route, "route", set(names), root=True)
    for field, listed in (
        ("runaway.receivers", config.runaway.receivers),
        ("digest.receivers", config.digest.receivers),
    ):
        for n in listed:
            if n not in names:
                raise ConfigError(f"{field}: no receiver named {n!r}")
    for name in ("title", "markdown", "html", "text"):
        problem = template_problem(getattr(config.templates, name))
        if problem is not None:
            raise ConfigError(f"templates.{name}: {problem}")
    parse_clock(config.digest.at, "digest.at")
    zone(config.digest.tz, "digest.tz")


def template_problem(text: str) -> str | None:
    """Why a `[templates]` string would not fill as meant, or None: a `$` that starts no
    placeholder (`$ x`, `${symbol`, `$5`) or a name that is no field (`$titel`). Each would go
    out to every channel as written, `$titel` and all (templates are filled leniently)."""
    template = Template(text)
    fields = ", ".join(f"${f}" for f in TEMPLATE_FIELDS)
    if not template.is_valid():
        for m in template.pattern.finditer(text):
            if m.group("invalid") is not None:
                at = m.start()
                return (
                    f"{text[at : at + 10]!r} (character {at + 1}) starts no placeholder: write"
                    f" $name or ${{name}} with a name of {fields}, and $$ for a dollar sign"
                )
    for name in template.get_identifiers():
        if name not in TEMPLATE_FIELDS:
            close = difflib.get_close_matches(name, TEMPLATE_FIELDS, n=1)
            hint = f" (did you mean ${close[0]}?)" if close else ""
            return f"${name} is no field{hint}: a template takes {fields}"
    return None


def _check_digest_mode(config: NotifyConfig, name: str, where: str) -> None:
    """Quiet hours in `digest` mode send nothing and count on the digest instead: refused unless
    the digest is on and goes to this receiver, else its alerts would be dropped for good."""
    if not config.digest.enabled:
        raise ConfigError(
            f'{where}: "digest" needs [digest] enabled = true, or {name!r} never sees the '
            'alerts of its quiet hours (use mode = "queue" to hold them)'
        )
    if name not in config.digest_receivers:
        raise ConfigError(
            f'{where}: "digest" but receiver {name!r} gets no digest: add it to '
            'digest.receivers, or use mode = "queue" to hold its alerts until the hours end'
        )


_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def _timings(route: RouteConfig, where: str) -> RouteConfig:
    """`route` (and its routes) with `group_wait` and `group_interval`, durations, made into
    `group_wait_s` and `group_interval_s`; ConfigError naming the field when one is no
    duration, or both names of one setting are set."""
    changed: dict[str, object] = {}
    for name in ("group_wait", "group_interval"):
        value = getattr(route, name)
        if value is None:
            continue
        if getattr(route, f"{name}_s") is not None:
            raise ConfigError(f"{where}.{name}: set {name} or {name}_s, not both")
        changed[f"{name}_s"], changed[name] = duration_s(value, f"{where}.{name}"), None
    routes = [_timings(child, f"{where}.routes[{i}]") for i, child in enumerate(route.routes)]
    return msgspec.structs.replace(route, **changed, routes=routes)


def duration_s(value: str | float, where: str) -> float:
    """Seconds of a duration: a number of seconds (0 or more), or text of numbers each with a
    unit, ms, s, m, h or d ("30s", "5m", "1h30m", "0s"); ConfigError naming `where` else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (0 <= value <= LONGEST_WAIT_S):
            raise ConfigError(f"{where}: must be 0 to 366 days in seconds, not {value!r}")
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: not a duration like 30s, 5m or 1h30m: {value!r}")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ConfigError(f"{where}: not a duration like 30s, 5m or 1h30m: {value!r}")
    if seconds > LONGEST_WAIT_S:  # (a group's next flush past the year 9999 crashed it)
        raise ConfigError(f"{where}: at most 366 days, not {value!r}")
    return seconds


def _check_route(route: RouteConfig, where: str, names: set[str], *, root: bool) -> None:
    if root and not route.receivers:
        raise ConfigError(f"{where}.receivers: the root route needs at least one receiver")
    for n in route.receivers:
        if n not in names:
            raise ConfigError(f"{where}.receivers: no receiver named {n!r}")
    for f in route.group_by or []:
        if f not in GROUP_FIELDS:
            raise ConfigError(f"{where}.group_by: {f!r} is not one of {', '.join(GROUP_FIELDS)}")
    for pattern in route.match.severity:  # (a glob no severity meets: the route never matched)
        if not any(fnmatch.fnmatchcase(s, pattern) for s in SEVERITIES):
            raise ConfigError(
                f"{where}.match.severity: {pattern!r} matches no severity: an alert's is one of"
                f" {', '.join(SEVERITIES)}"
            )
    for i, child in enumerate(route.routes):
        _check_route(child, f"{where}.routes[{i}]", names, root=False)


def unit_credential(r: ReceiverConfig) -> str | None:
    """The unit whose systemd credential `r.url_file` is, when that unit is not running (the
    file exists only while it runs, see `credentials.absent_unit_credential`); else None."""
    if not r.url_file or r.url_env:
        return None
    return absent_unit_credential(r.url_file)


def resolve_url(r: ReceiverConfig, where: str, environ: dict[str, str] | None = None) -> Secret:
    """The receiver's Apprise URL with secrets filled in; ConfigError names the field."""
    env = os.environ if environ is None else environ
    base = where.removesuffix(".url")
    found = secret(f"{base}.url", env_name=r.url_env, file_name=r.url_file, environ=dict(env))
    if found is not None:
        return _with_api_base(found, r, where)
    if not r.url:
        raise ConfigError(f"{where}: one of url, url_env, url_file is required")
    return _with_api_base(Secret(fill_placeholders(r.url, env, where)), r, where)


def fill_placeholders(url: str, env: Mapping[str, str], where: str) -> str:
    """`url` with each `{NAME}` replaced by the variable's value, percent-encoded so that the
    value cannot change the URL's structure (Apprise and our senders decode it again):

    - in the user info (before the host's `@`) and in the query, every reserved character
      (`quote(value, safe="")`): a password with `@`, `/`, `#`, `:` or `&` stays one password;
    - in the host and path, every one but `/` and `:`, so that one variable may still stand for
      `host:port` or for several path segments (a Slack webhook's `T000/B000/XXXX`);
    - a placeholder in the scheme (`url = "{HOOK_URL}"`) is the URL itself: taken as it is.
    """
    scheme_end = url.find("://")
    host_start = scheme_end + 3 if scheme_end >= 0 else len(url)
    authority_end = min(
        (i for i in (url.find("/", host_start), url.find("?", host_start)) if i >= 0),
        default=len(url),
    )
    userinfo_end = url.rfind("@", host_start, authority_end)
    query_start = url.find("?", host_start)

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        value = env[name]
        at = m.start()
        if at < host_start:
            return value
        if at < userinfo_end or 0 <= query_start <= at:
            return quote(value, safe="")
        return quote(value, safe="/:")

    return PLACEHOLDER.sub(fill, url)


_LOOKALIKE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholder_warnings(config: NotifyConfig) -> list[str]:
    """A line for each `{name}` in a receiver's `url` that is no placeholder (not upper case:
    `{token}`), so is sent as written rather than filled from the environment."""
    return [
        f"receivers[{i}].url: {{{name}}} is sent as written: a placeholder is a variable's name"
        f" in upper case, {{{name.upper()}}}"
        for i, r in enumerate(config.receivers)
        for name in _LOOKALIKE.findall(r.url)
        if not PLACEHOLDER.fullmatch(f"{{{name}}}")
    ]


def http_warnings(config: NotifyConfig) -> list[str]:
    """A line when `[http]` sets a host, port or allowed_hosts but not `enabled = true` (off by
    default, unlike the daemon's): nothing listens there, and `status --url` at that port says
    the notifier is down."""
    http, default = config.http, HttpSection()
    if http.enabled or http == default:
        return []
    return [
        "http: host, port or allowed_hosts is set but enabled is false (the default): no"
        " /healthz or /metrics is served; set enabled = true"
    ]


def _with_api_base(url: Secret, r: ReceiverConfig, where: str) -> Secret:
    """`api_base` travels to the native sender as `?api_base=` on the URL."""
    if r.api_base is None:
        return url
    if url.partition("://")[0].lower() not in NATIVE_SCHEMES:
        field = where.removesuffix(".url") + ".api_base"
        raise ConfigError(f"{field}: only for {', '.join(NATIVE_SCHEMES)} receivers")
    sep = "&" if "?" in url else "?"
    return Secret(f"{url}{sep}{urlencode({'api_base': r.api_base})}")


def parse_clock(text: str, where: str) -> dt.time:
    """`HH:MM` as a time; ConfigError naming the field."""
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{where}: not an HH:MM time: {text!r}") from None


def zone(name: str, where: str) -> zoneinfo.ZoneInfo:
    """A time zone by IANA name; ConfigError naming the field."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {name!r}") from None
