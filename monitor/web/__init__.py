"""The live view in the browser: the board page served at `/` and the recent closes behind its
charts at `/api/closes`. The page is one self-contained HTML file (inline CSS and JS, no CDN)
that polls `/api/state` every 2 s and `/api/closes` when a new session or alert shows up."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import msgspec
import polars as pl

from monitor.core.model import Alert
from monitor.core.progress import Progress
from monitor.core.rules.spec import Rule, StreakRule, SurgeRule
from monitor.web.state import nearest_first, newest_first

CLOSES = 120  # sessions per chart
MAX_CHARTS = 6
WEEK_SESSIONS = 5  # a weekly rule's span drawn in sessions (holiday weeks come out a day long)


@cache
def board_html() -> bytes:
    """The board page, as shipped in the package."""
    return (resources.files("monitor.web") / "board.html").read_bytes()


def page_route() -> tuple[int, str, bytes]:
    """The `/` route."""
    return 200, "text/html; charset=utf-8", board_html()


def chart_symbols(
    alerts: Iterable[Alert],
    progress: Mapping[str, Sequence[Progress]],
    rules: Sequence[Rule],
    limit: int = MAX_CHARTS,
) -> list[str]:
    """The symbols worth a chart: those of recent alerts (newest first), then those nearest to
    firing (as /api/state orders them), then the ones rules name; at most `limit`."""
    nearest = sorted(
        # (a copy first: the engine's thread may add a rule's rows meanwhile, as /api/state has it)
        (p for rows in list(progress.values()) for p in rows),
        key=nearest_first,
    )
    named = [s for r in rules for s in r.symbols]
    seen: dict[str, None] = {}
    for symbol in [*(a.symbol for a in alerts), *(p.symbol for p in nearest), *named]:
        seen.setdefault(symbol, None)
    return list(seen)[: limit * 4]  # the caller keeps those with bars, up to `limit`


MAX_SESSIONS = 5_000  # ?sessions= at most (about twenty years)
# ?symbol= names at most (after duplicates go): the board asks for none (it takes what
# `chart_symbols` picks, MAX_CHARTS of them), and 50 x 5,000 closes is some 8 MB of JSON.
MAX_SYMBOLS = 50


def closes_route(
    produce: Callable[[Sequence[str] | None, int], dict[str, Any]],
) -> Callable[[Mapping[str, str]], tuple[int, str, bytes]]:
    """/api/closes with `?symbol=A,B` (those symbols, each once, at most MAX_SYMBOLS) and
    `?sessions=N` (closes per symbol); a bad value is a 400 with `{"error": ...}`."""

    def route(params: Mapping[str, str]) -> tuple[int, str, bytes]:
        named = (s.strip() for s in params.get("symbol", "").split(","))
        wanted = list(dict.fromkeys(s for s in named if s))  # (each once, in order)
        asked = params.get("sessions", str(CLOSES))
        # (ASCII digits only: int() takes "+3", " 3", "3_0" and other scripts' digits too)
        sessions = int(asked) if asked.isascii() and asked.isdigit() else 0
        if not 1 <= sessions <= MAX_SESSIONS:
            return bad_request(f"sessions must be a whole number from 1 to {MAX_SESSIONS}")
        if len(wanted) > MAX_SYMBOLS:
            return bad_request(
                f"symbol names {len(wanted)} symbols; at most {MAX_SYMBOLS} in one request"
            )
        return 200, "application/json", msgspec.json.encode(produce(wanted or None, sessions))

    return route


def bad_request(message: str) -> tuple[int, str, bytes]:
    """A 400 whose JSON body says what was wrong."""
    return 400, "application/json", msgspec.json.encode({"error": message})


def closes(
    daily: pl.DataFrame,
    alerts: Sequence[Alert],
    progress: Mapping[str, Sequence[Progress]],
    rules: Sequence[Rule],
    *,
    sessions: int = CLOSES,
    limit: int = MAX_CHARTS,
    symbols: Sequence[str] | None = None,
) -> dict[str, Any]:
    """/api/closes: per chart symbol, the last `sessions` closes and the recent alerts on it,
    each with `span` (sessions the streak or surge covered, 1 for the rest). The symbols are
    `symbols` when given (`?symbol=IWM,QQQ`), else those the board would chart."""
    latest = newest_first(alerts)
    wanted = (
        list(dict.fromkeys(symbols)) if symbols else chart_symbols(latest, progress, rules, limit)
    )
    recent = (
        daily.lazy()
        .filter(pl.col("symbol").is_in(wanted))
        .select("symbol", "session", "close")
        .sort("symbol", "session")
        .group_by("symbol", maintain_order=True)
        .tail(sessions)
        .collect()
    )
    by_symbol = {key[0]: part for key, part in recent.group_by("symbol")}
    by_id = {r.id: r for r in rules}
    charts: list[dict[str, Any]] = []
    for symbol in wanted:
        part = by_symbol.get(symbol)
        if part is None or part.is_empty():
            continue
        charts.append(
            {
                "symbol": symbol,
                "sessions": [d.isoformat() for d in part.get_column("session")],
                "closes": part.get_column("close").to_list(),
                "alerts": [
                    {
                        "session": a.session,
                        "rule": a.rule,
                        "kind": a.kind,
                        "severity": a.severity,
                        "title": a.title,
                        "span": span(a, by_id.get(a.rule)),
                    }
                    for a in latest
                    if a.symbol == symbol
                ],
            }
        )
        if len(charts) == limit and not symbols:
            break
    return {"symbols": charts}


def span(alert: Alert, rule: Rule | None) -> int:
    """Sessions of the daily chart an alert's move covered: the run of a streak or the window of
    a surge (in weeks for a weekly rule), else 1. A minute rule's move lies in its session: 1."""
    if alert.timeframe == "1m":
        return 1
    periods = 1
    if isinstance(rule, StreakRule):
        value = alert.metrics.get("streak")
        periods = int(value) if isinstance(value, int | float) else rule.count
    elif isinstance(rule, SurgeRule):
        periods = rule.window
    return periods * WEEK_SESSIONS if alert.timeframe == "1w" else periods
