"""`market-monitor watch`: the live board in the terminal, from a running daemon's /api/state
and /api/closes, redrawn every `--interval` seconds (rich). `--once` prints one frame. The clock
reads in New York time, as on the board.

The frame is a pure function of the two JSON documents (`frame`), so it is tested without a
terminal; `watch` only fetches and redraws. Every string of them is drawn with its control
characters spelled out (`\x1b`, see `monitor.terminal`): a name, a label or an alert's text
(from a rules file, or whatever a server at `--url` sends) cannot move the cursor, retitle the
window or clear the screen of whoever watches.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import errno
import json
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from monitor import stdout_reader
from monitor.errors import EX_UNAVAILABLE
from monitor.terminal import printable
from monitor.urls import mask_url

BAR = 20
PER_RULE = 3
NEAR_MISSES = 1  # of a rule's rows shown, kept for those that do not hold (when many do)
NEAREST = 8
ALERTS = 8
SPARK = "▁▂▃▄▅▆▇█"
KIND_STYLE = {
    "streak": "green", "surge": "dark_orange", "squeeze": "magenta", "rotation": "cyan",
    "drawdown": "medium_purple1", "breadth": "blue", "movers": "yellow", "fade": "red",
}  # fmt: skip
NEW_YORK = ZoneInfo("America/New_York")  # the clock as the board shows it
SEVERITY_STYLE = {"info": "dim", "notice": "bold blue", "warning": "bold yellow",
                  "critical": "bold red"}  # fmt: skip


class _Console(Console):
    """rich's Console, but a reader of stdout gone (`watch --once | head -0`) is BrokenPipeError,
    on which every command exits quietly with 141 (see `monitor.cli`), where rich's exits 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # (nothing more written: the last frame Live draws as it stops)
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout has gone")


def fetch(url: str, timeout_s: float = 3.0) -> Any:
    """GET `url` and decode its JSON. A user and password in it (a proxy in front of the
    daemon) go as Basic authorization, as `status` sends them: urllib took them for part of
    the host name, and asked the resolver for it, password and all."""
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(url)
    if parts.username is not None:
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        request = urllib.request.Request(parts._replace(netloc=netloc).geturl())
        login = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def watch(args: argparse.Namespace) -> int:
    """Entry point of the `watch` command: the daemon at --url, else at the [http] host and port
    of --config, else at http://127.0.0.1:9108."""
    from monitor.errors import EX_CONFIG, ConfigError
    from monitor.status import base_url

    try:
        base = base_url(getattr(args, "url", None), getattr(args, "config", None)).rstrip("/")
    except ConfigError as exc:
        print(f"market-monitor: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    console = _Console()
    if args.once:
        try:
            state, closes = fetch(f"{base}/api/state"), fetch(f"{base}/api/closes")
        except (OSError, ValueError) as exc:
            print(f"market-monitor: no daemon at {mask_url(base)}: {_reason(exc)}", file=sys.stderr)
            return EX_UNAVAILABLE
        console.print(frame(state, closes, source=mask_url(base)))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        _loop(base, console, args.interval)
    return 0


def _loop(base: str, console: Console, interval_s: float) -> None:
    """Redraw until interrupted or the reader of stdout goes (BrokenPipeError); a failed fetch
    keeps the last frame and says so."""
    state: Any = None
    closes: Any = None
    connecting = Text(f"connecting to {mask_url(base)}…")
    with Live(connecting, console=console, auto_refresh=False) as live:
        while True:
            error: str | None = None
            try:
                state = fetch(f"{base}/api/state")
                closes = fetch(f"{base}/api/closes")
            except (OSError, ValueError) as exc:
                error = _reason(exc)
            if state is None:
                said = f"no daemon at {mask_url(base)}: {error} (retrying)"
                live.update(Text(said, style="red"))
            else:
                live.update(frame(state, closes, source=mask_url(base), error=error))
            live.refresh()
            if stdout_reader.sleep(console.file, interval_s):
                # (its reader gone, `watch | less` quit: a write would raise this, but to a
                # pipe Live writes only as it stops, and watch would ask the daemon for ever;
                # quiet: Live writes nothing more as it stops, to a terminal hung up neither)
                console.quiet = True
                raise BrokenPipeError(errno.EPIPE, "the reader of stdout has gone")


def frame(
    state: dict[str, Any],
    closes: dict[str, Any] | None,
    *,
    source: str = "",
    error: str | None = None,
) -> RenderableType:
    """One screen: header, what holds now, nearest to firing, the rules, alerts, sparklines."""
    state, closes = harmless(state), harmless(closes)
    rules = {r["id"]: r for r in state["rules"]}
    rows = state["progress"]
    sessions = sorted(p["session"] for p in rows)
    header = Text.assemble(
        ("market-monitor ", "bold"),
        ("live", "dim"),
        "   last session ",
        (sessions[-1] if sessions else "–", "bold"),
        "   clock ",
        (new_york(state["now"]), "bold"),
        "   ",
        (f"⚠ {error}, showing the last frame", "bold red") if error else condition(state, source),
    )
    holding = [p for p in rows if p["holds"]]
    # (the state carries the rows nearest to firing, not all of them: each rule counts its own)
    unseen = sum(r.get("holding_count", 0) for r in state["rules"]) - len(holding)
    parts: list[RenderableType] = [header]
    if holding:
        line = Text("holding now  ", style="dim")
        for p in holding:
            line.append(f" {p['symbol']} {p['rule']}{_variant(p)} ", style="bold green reverse")
            line.append(" ")
        if unseen > 0:
            line.append(f"+ {unseen:,} more", style="dim")
        parts.append(line)
    parts.append(_nearest([p for p in rows if not p["holds"]][:NEAREST], rules, bool(rows)))
    parts.append(_rules(state["rules"], rows))
    parts.append(_alerts(state["alerts"][:ALERTS]))
    if closes and closes.get("symbols"):
        parts.append(_sparks(closes["symbols"]))
    return Group(*parts)


def harmless(value: Any) -> Any:
    """A decoded JSON document with the control characters of every string in it (keys too)
    spelled out (`printable`): ESC, BEL and the C1 controls never reach the terminal."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [harmless(v) for v in value]
    if isinstance(value, dict):
        return {harmless(k): harmless(v) for k, v in value.items()}
    return value


def condition(state: dict[str, Any], source: str) -> tuple[str, str]:
    """The header's word on the daemon, as the board's: green when healthy with current data,
    amber when degraded or the bars a session behind or more, red when down (with why)."""
    health = state.get("health") or {"status": "healthy", "reasons": []}
    said = []
    if health["status"] != "healthy":
        said.append(f"{health['status']}: {'; '.join(health['reasons'])}")
    behind = state.get("sessions_behind") or 0
    if behind > 0:
        since = new_york(state.get("latest_bar") or "")[:10]
        said.append(f"data from {since}, {behind:,} session{'s' if behind > 1 else ''} behind")
    if not said:
        return f"● {source}", "green"
    style = "bold red" if health["status"] == "down" else "bold yellow"
    return f"● {source} · {' · '.join(said)}", style


def _nearest(
    rows: list[dict[str, Any]], rules: dict[str, Any], any_progress: bool
) -> RenderableType:
    table = Table(title="Nearest to firing", title_justify="left", title_style="bold",
                  box=None, padding=(0, 1), show_header=False)  # fmt: skip
    for _ in range(4):
        table.add_column()
    if not rows:
        quiet = (
            "every rule holds now (above)"
            if any_progress
            else "no progress yet: the rules need closed sessions"
        )
        table.add_row(Text(quiet, style="dim"))
    for p in rows:
        timeframe = rules.get(p["rule"], {}).get("timeframe", "")
        table.add_row(
            Text(p["symbol"] + _variant(p), style="bold"),
            Text(f"{p['rule']} ({timeframe})", style="dim"),
            bar(p["progress"], p["holds"], muted=_muted(p)),
            reading(p),
        )
    return table


def _rules(rules: list[dict[str, Any]], rows: list[dict[str, Any]]) -> RenderableType:
    table = Table(title="Rules", title_justify="left", title_style="bold", box=None,
                  padding=(0, 1), show_header=False)  # fmt: skip
    for _ in range(4):
        table.add_column()
    for rule in rules:
        mine = [p for p in rows if p["rule"] == rule["id"]]
        holding, others = [p for p in mine if p["holds"]], [p for p in mine if not p["holds"]]
        # (those that hold first, with room for the nearest that do not: its near misses)
        shown = [*holding[: PER_RULE - min(len(others), NEAR_MISSES)], *others][:PER_RULE]
        # The rule's own counts: `rows` are the nearest to firing of all rules, not all its rows
        # (a daemon from before the counts gives none: then what it sent is what there is).
        total = rule.get("row_count", len(mine))
        holding = rule.get("holding_count", 0)
        name = Text(rule["id"], style=KIND_STYLE.get(rule["kind"], ""))
        if not total:
            table.add_row(name, Text("no data yet", style="dim"), Text(""), Text(""))
            continue
        for i, p in enumerate(shown):
            table.add_row(
                name if i == 0 else Text(""),
                Text(p["symbol"] + _variant(p)),
                bar(p["progress"], p["holds"], muted=_muted(p)),
                reading(p),
            )
        more = [f"+ {total - len(shown):,} more"] if total > len(shown) else []
        more += [f"{holding:,} {'holds' if holding == 1 else 'hold'} now"] if holding else []
        if more:
            table.add_row(name if not shown else Text(""), Text(" · ".join(more), style="dim"))
    return table


def _alerts(alerts: list[dict[str, Any]]) -> RenderableType:
    if not alerts:
        return Panel(Text("no alerts yet", style="dim"), title="Alerts", title_align="left")
    lines: list[RenderableType] = []
    for a in alerts:
        lines.append(
            Text.assemble(
                (f"{a['severity'].upper():8}", SEVERITY_STYLE.get(a["severity"], "")),
                (f" {a['session']} ", "dim"),
                (a["symbol"], "bold"),
                " ",
                (a["rule"], KIND_STYLE.get(a["kind"], "")),
            )
        )
        lines.append(Text("  " + a["text"]))
        if a.get("history") and a["history"].get("summary"):
            lines.append(Text("  History: " + a["history"]["summary"], style="dim italic"))
    return Panel(Group(*lines), title=f"Alerts ({len(alerts)} latest)", title_align="left")


def _sparks(charts: list[dict[str, Any]]) -> RenderableType:
    table = Table(title="Recent closes", title_justify="left", title_style="bold", box=None,
                  padding=(0, 1), show_header=False)  # fmt: skip
    for _ in range(4):
        table.add_column()
    for c in charts:
        closes = c["closes"]
        if len(closes) < 2:
            continue
        change = closes[-1] / closes[0] - 1 if closes[0] else 0.0
        table.add_row(
            Text(c["symbol"], style="bold"),
            sparkline(closes, c["sessions"], c["alerts"]),
            Text(f"{closes[-1]:,.2f}", justify="right"),
            Text(f"{pct(change)} in {len(closes)}", style=_trend(change)),
        )
    return table


def bar(progress: float, holds: bool, width: int = BAR, *, muted: bool = False) -> Text:
    """A progress bar of `width` cells: blue, then yellow past 50%, orange past 80%, green when
    the condition holds, full only then; grey when `muted` (a row stale or blocked)."""
    filled = round(max(0.0, min(1.0, progress)) * width)
    filled = filled if holds else min(filled, width - 1)
    style = ("grey50" if muted else "green" if holds else "dark_orange" if progress >= 0.8
             else "yellow" if progress >= 0.5 else "blue")  # fmt: skip
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "grey23"))


def reading(p: dict[str, Any]) -> Text:
    """A row's measure, with ✓ when it holds, what blocks it when something does ('+40.0% of
    +15.0% · short interest unknown') and its session when it is stale ('4 of 5 · as of
    2024-07-15': no bar of its symbol since, which ended what it had)."""
    text = Text(measure(p) + (" ✓" if p["holds"] else ""), justify="right")
    if p.get("blocked"):
        text.append(f" · {p['blocked']}", style="dim")
    if p.get("stale"):
        text.append(f" · as of {p['session']}", style="dim")
    return text


def _muted(p: dict[str, Any]) -> bool:
    """Whether a row's bar is grey: stale, or blocked (see `reading`)."""
    return bool(p.get("stale") or p.get("blocked"))


def measure(p: dict[str, Any]) -> str:
    """'3 of 5', '+9.8% of +10.0%', '-7.3% · line -10.0%', a share '85.0% of 80.0%', a
    spread '7.1 of 5.0 points' (as the board writes them)."""
    value, threshold = p["value"], p["threshold"]
    if p["unit"] == "periods":
        return f"{'–' if value is None else round(value)} of {round(threshold)}"
    shown, line = pct(value), pct(threshold)  # (as alert texts do)
    if p["kind"] in ("drawdown", "fade"):
        return f"{shown} · line {line}"
    if p["kind"] == "breadth":  # (a share of the symbols: no sign)
        return f"{shown.removeprefix('+')} of {line.removeprefix('+')}"
    if p["kind"] == "rotation":  # (percentage points, as its alerts say them)
        return f"{_points(shown)} of {_points(line)} points"
    return f"{shown} of {line}"


def _points(shown: str) -> str:
    """A `pct` text as percentage points: '+7.1%' is '7.1', '-2.3%' '-2.3'."""
    return shown.removeprefix("+").removesuffix("%")


def pct(x: float | None) -> str:
    """A fraction as alert texts write it: `pct(x, signed=True)` of monitor.core.rules.context,
    which a test holds this to (that module brings polars, which `watch` does without): tenths
    of a percent rounded half to even, the sign of the rounded value ('+0.0%' for -0.0004),
    'n/a' for none."""
    scaled = None if x is None else x * 100 * 10
    if scaled is None or not math.isfinite(scaled) or abs(round(scaled)) >= 2**63:
        return "n/a"
    n = round(scaled)
    whole, tenths = divmod(abs(n), 10)
    return f"{'-' if n < 0 else '+'}{whole}.{tenths}%"


def new_york(iso: str) -> str:
    """An ISO timestamp (UTC) as New York's wall clock, as the board shows it:
    '2024-07-16 16:00:05 New York'."""
    try:
        at = dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S") + " New York"


def sparkline(
    closes: list[float], sessions: list[str], alerts: list[dict[str, Any]], width: int = 60
) -> Text:
    """`closes` in `width` block characters (the last close of each slice), the cells of alert
    sessions coloured by rule kind."""
    n = len(closes)
    cells = min(width, n)
    picks = [round((i + 1) * n / cells) - 1 for i in range(cells)]
    values = [closes[i] for i in picks]
    lo, hi = min(values), max(values)
    marked: dict[int, str] = {}
    index = {s: i for i, s in enumerate(sessions)}
    for a in alerts:
        i = index.get(a["session"])
        if i is not None:
            cell = min(cells - 1, i * cells // n)
            marked.setdefault(cell, KIND_STYLE.get(a["kind"], "bold"))
    text = Text()
    for k, v in enumerate(values):
        level = int((v - lo) / (hi - lo) * (len(SPARK) - 1)) if hi > lo else 0
        text.append(SPARK[level], style=f"bold {marked[k]}" if k in marked else "bright_blue")
    return text


def _trend(change: float) -> str:
    """Green up, red down, as the percentage reads (no colour for 0.0%)."""
    text = pct(change)
    return "red" if text.startswith("-") else "" if text in ("+0.0%", "n/a") else "green"


def _variant(p: dict[str, Any]) -> str:
    return f" {p['variant'].replace('_', ' ')}" if p.get("variant") else ""


def _reason(exc: BaseException) -> str:
    """Why a fetch failed, its control characters spelled out (an HTTP error's text is the
    server's)."""
    if isinstance(exc, urllib.error.URLError):
        return printable(str(exc.reason))
    return printable(str(exc) or type(exc).__name__)
