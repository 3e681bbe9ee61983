"""`market-monitor status [--config FILE] [--url URL]`: how is the running daemon doing?

Reads /healthz and /metrics from the daemon's HTTP port and prints a summary for people.
Exit 0 healthy, 1 degraded, 2 down or not answering (78 for an unreadable --config, or a --url
that is not an http:// or https:// URL, as `tail --url`: a check that cannot run is not a daemon
down).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field

import httpx

from monitor.errors import EX_CONFIG, ConfigError
from monitor.urls import host_only, mask_url, not_valid, split_url

DEFAULT_URL = "http://127.0.0.1:9108"
PREFIX = "market_monitor_"
EXIT = {"healthy": 0, "degraded": 1}
EX_DOWN = 2
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_BLANK = re.compile(r"[\x00-\x20\x7f]")


@dataclass
class Metrics:
    """Samples from a Prometheus text page, by metric name without the `market_monitor_` prefix."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def total(self, name: str) -> float:
        """The sum over every label set (0 when absent)."""
        return sum(v for _, v in self.samples.get(name, []))

    def by(self, name: str, label: str) -> dict[str, float]:
        """Values of `name` keyed by one label."""
        return {labels.get(label, ""): v for labels, v in self.samples.get(name, [])}

    def has(self, name: str) -> bool:
        """True when the page had the metric."""
        return name in self.samples


def parse_metrics(text: str) -> Metrics:
    """The `market_monitor_*` samples of a Prometheus text exposition page."""
    metrics = Metrics()
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m is None or not m.group(1).startswith(PREFIX):
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(3) or "")}
        metrics.samples.setdefault(m.group(1).removeprefix(PREFIX), []).append((labels, value))
    return metrics


def status(args: argparse.Namespace) -> int:
    """Entry point of `status`."""
    try:
        base = base_url(getattr(args, "url", None), getattr(args, "config", None))
    except ConfigError as exc:
        print(f"market-monitor: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    timeout_s = float(getattr(args, "timeout", None) or 5.0)
    shown = mask_url(base)  # (a password in --url is used, not printed)
    try:
        with httpx.Client(timeout=timeout_s) as client:
            health_reply = client.get(f"{base}/healthz")
            metrics_reply = client.get(f"{base}/metrics")
    except httpx.HTTPError as exc:
        print(f"market-monitor at {shown}: down (no answer: {exc or type(exc).__name__})")
        return EX_DOWN
    try:
        health = json.loads(health_reply.text)
        state = str(health["status"])
    except (ValueError, KeyError, TypeError):
        print(f"market-monitor at {shown}: down (/healthz answered {health_reply.status_code})")
        return EX_DOWN
    metrics = parse_metrics(metrics_reply.text) if metrics_reply.status_code == 200 else Metrics()
    report = notifier_summary if metrics.has("notify_redis_up") else summary
    print(report(shown, health, metrics), end="")
    return EXIT.get(state, EX_DOWN)


def base_url(url: str | None, config_path: str | None) -> str:
    """--url, else the [http] host and port of --config, else http://127.0.0.1:9108. A --url
    the HTTP client cannot use is a ConfigError naming it."""
    if url is not None:  # (given empty, by an unset shell variable: not the default)
        problem = url_problem(url)
        if problem is not None:
            raise ConfigError(f"--url: {problem}")
        return url.rstrip("/")
    if not config_path:
        return DEFAULT_URL
    from monitor import config as cfg

    http = cfg.load(config_path).http
    if http.port == 0:
        raise ConfigError(f"{config_path}: http.port: 0 (any free port); pass --url instead")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}"


def url_problem(url: str) -> str | None:
    """What is wrong with a daemon URL, quoting only its scheme and host; None when the HTTP
    clients can use it. They refuse the others with a traceback (a broken [IPv6] host), or as
    if the daemon had not answered (no scheme)."""
    parts = split_url(url)
    if isinstance(parts, str):
        return parts
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be http://host[:port] or https://host[:port], not {host_only(url)!r}"
    if parts.port == 0:
        return not_valid(url, "a port outside 1-65535")
    try:
        httpx.URL(url)  # (status's client; `watch` reads with urllib, which refuses spaces too)
    except httpx.InvalidURL:  # (its message may quote the URL, password and all)
        return not_valid(url, "a character an HTTP client refuses")
    if _BLANK.search(url):
        return not_valid(url, "a space or a control character")
    return None


def summary(base: str, health: dict[str, object], metrics: Metrics) -> str:
    """The report `status` prints of a daemon."""
    lines = _health_lines(f"market-monitor at {base}", health)
    depth = health.get("queue_depth", metrics.total("queue_depth"))
    lines.append(f"  queue depth: {depth}")
    lines.append(f"  ticks in: {_count(metrics.total('ticks_in'))}")
    lines.append(_by("bars in", metrics, "bars_in", "timeframe"))  # (a bar feed sends no ticks)
    lines.append(_by("rejections", metrics, "rejections", "reason"))
    # Why bars came and no alert: those of periods evaluated already (a feed late or out of
    # order, a feed-replay of past sessions), and what the broker dropped past its queue.
    corrected = metrics.by("bar_events", "kind").get("daily_bar_corrected", 0)
    if corrected:
        lines.append(
            f"  session bars stored as corrections: {_count(corrected)} (of periods evaluated"
            " already: they fire nothing)"
        )
    if metrics.total("broker_messages_dropped"):
        dropped = _labelled(metrics.by("broker_messages_dropped", "feed"))
        lines.append(f"  dropped by the broker (its queue full, all its clients): {dropped}")
    lines.append(
        f"  alerts: {_count(metrics.total('alerts_fired'))} fired, "
        f"{_count(metrics.total('alerts_published'))} published"
    )
    lines.append(f"  outbox: {_count(metrics.total('outbox_depth'))} waiting")
    reconnects = _labelled(metrics.by("feed_reconnects", "feed"))
    lines.append(f"  feed reconnects: {reconnects or 0}")
    if metrics.has("feed_lag_seconds"):
        lines.append(f"  feed lag: {metrics.total('feed_lag_seconds'):.1f} s")
    else:
        lines.append("  feed lag: no ticks or minute bars yet")
    return "\n".join(lines) + "\n"


def notifier_summary(base: str, health: dict[str, object], metrics: Metrics) -> str:
    """The report `status` prints of a notifier (its `/metrics` has `notify_redis_up`): what it
    read, delivered and held, not the daemon's figures (all 0 there)."""
    lines = _health_lines(f"market-monitor notifier at {base}", health)
    redis_up = metrics.total("notify_redis_up")
    lines.append(f"  redis: {'up' if redis_up else 'not answering'}")
    lines.append(f"  alerts read: {_count(metrics.total('notify_read'))}")
    lines += [
        _by("messages sent", metrics, "notify_sent", "receiver"),
        _by("alerts sent", metrics, "notify_alerts_sent", "receiver"),
        _by("dead-lettered", metrics, "notify_dead_lettered", "receiver"),
        _by("dropped", metrics, "notify_dropped", "reason"),
        _by("held back", metrics, "notify_held", "reason"),
    ]
    lines.append(f"  waiting (groups, quiet hours): {_count(metrics.total('notify_waiting'))}")
    lines.append(
        f"  stream: {_count(metrics.total('notify_stream_unread'))} unread, "
        f"{_count(metrics.total('notify_stream_pending'))} pending"
    )
    return "\n".join(lines) + "\n"


def _health_lines(title: str, health: dict[str, object]) -> list[str]:
    """The first lines of a report: the state, its reasons and the uptime."""
    lines = [f"{title}: {health.get('status', 'unknown')}"]
    reasons = health.get("reasons") or []
    if isinstance(reasons, list) and reasons:
        lines += [f"  reason: {r}" for r in reasons]
    uptime = health.get("uptime_s")
    if isinstance(uptime, int | float):
        lines.append(f"  uptime: {_duration(float(uptime))}")
    return lines


def _by(what: str, metrics: Metrics, name: str, label: str) -> str:
    """A report line of a metric's total, and its values by `label` when it has any:
    `  rejections: 3 (bad_price=2, duplicate=1)`."""
    detail = _labelled(metrics.by(name, label))
    return f"  {what}: {_count(metrics.total(name))}" + (f" ({detail})" if detail else "")


def _labelled(values: dict[str, float]) -> str:
    return ", ".join(f"{k or '?'}={_count(v)}" for k, v in sorted(values.items()))


def _count(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:,.2f}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    return f"{minutes}m {s:02d}s" if minutes else f"{seconds:.1f} s"


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
