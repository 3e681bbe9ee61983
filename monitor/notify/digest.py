"""The daily digest: the day's alerts and the state of the small-cap rally, in one message.

`build_digest` is pure: alerts and bars in, text out. The rally state comes from the bars file:
the small-cap proxy (IWM) against each large-cap proxy (QQQ, SPY) over 1, 5 and 21 sessions,
breadth (share of the other symbols up on the last session, and above their 50-session mean)
and the top movers of the last session.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from monitor.core.model import Alert
from monitor.core.rules.context import pct
from monitor.notify.config import DigestSection
from monitor.notify.render import BodyFormat, escape

HORIZONS = (1, 5, 21)


@dataclass(frozen=True)
class Digest:
    """The digest's title and its body in each format."""

    title: str
    bodies: dict[BodyFormat, str]


def _pct(x: float | None) -> str:
    return pct(x, signed=True)  # (as the alerts' text: -0.009% is +0.0%, not -0.0%)


def returns(bars: pl.DataFrame, symbol: str, periods: int) -> float | None:
    """The close-to-close return of `symbol` over its last `periods` sessions."""
    closes = bars.filter(pl.col("symbol") == symbol).sort("session").get_column("close")
    if closes.len() <= periods:
        return None
    return float(closes[-1] / closes[-1 - periods] - 1)


def rally_lines(bars: pl.DataFrame, cfg: DigestSection) -> list[str]:
    """Sentences on the rally: spreads, breadth, top movers (plain text, unescaped)."""
    lines: list[str] = []
    for big in cfg.large:
        parts = []
        for n in HORIZONS:
            s, b = returns(bars, cfg.small, n), returns(bars, big, n)
            spread = None if s is None or b is None else s - b
            parts.append(f"{n}d {_pct(s)} vs {_pct(b)} ({_pct(spread)})")
        lines.append(f"{cfg.small} against {big}: " + "; ".join(parts))
    others = bars.filter(~pl.col("symbol").is_in([cfg.small, *cfg.large]))
    if others.height:
        last: dt.date = others.get_column("session").max()  # type: ignore[assignment]
        day = (
            others.sort("symbol", "session")
            .with_columns(
                ret=pl.col("close") / pl.col("close").shift(1).over("symbol") - 1,
                above=pl.col("close") > pl.col("close").rolling_mean(50).over("symbol"),
            )
            .filter(pl.col("session") == last, pl.col("ret").is_not_null())
        )
        if day.height:
            up = day.filter(pl.col("ret") > 0).height
            above = day.filter(pl.col("above")).height
            lines.append(
                f"Breadth on {last}: {up} of {day.height} up ({up / day.height:.0%}), "
                f"{above} above their 50-session mean."
            )
            top = day.sort("ret", descending=True).head(cfg.top)
            movers = ", ".join(
                f"{s} {_pct(r)}"
                for s, r in zip(top.get_column("symbol"), top.get_column("ret"), strict=True)
            )
            lines.append(f"Top movers: {movers}.")
    return lines


def build_digest(
    alerts: Sequence[Alert], bars: pl.DataFrame, cfg: DigestSection, day: dt.date
) -> Digest:
    """The digest for `day` from that day's alerts and the bars."""
    title = f"Market monitor digest, {day.isoformat()}: {len(alerts)} alerts"
    by_rule = Counter(a.rule for a in alerts)
    counts = ", ".join(f"{rule} ×{n}" for rule, n in by_rule.most_common())
    items = [f"{a.symbol}: {a.title}" for a in alerts[:30]]
    if len(alerts) > 30:
        items.append(f"and {len(alerts) - 30} more")
    rally = rally_lines(bars, cfg) if bars.height else ["No bars file: rally state unknown."]
    bodies: dict[BodyFormat, str] = {}
    for fmt in ("markdown", "html", "text"):
        e = [escape(x, fmt) for x in items]
        r = [escape(x, fmt) for x in rally]
        c = escape(counts or "none", fmt)
        if fmt == "html":
            bodies[fmt] = (
                "<h3>The small-cap rally</h3><ul>"
                + "".join(f"<li>{x}</li>" for x in r)
                + f"</ul><h3>Alerts ({c})</h3><ul>"
                + "".join(f"<li>{x}</li>" for x in e)
                + "</ul>"
            )
        else:
            head = "**The small-cap rally**" if fmt == "markdown" else "The small-cap rally"
            alerts_head = f"**Alerts** ({c})" if fmt == "markdown" else f"Alerts ({c})"
            bodies[fmt] = "\n".join(
                [head, *(f"- {x}" for x in r), "", alerts_head, *(f"- {x}" for x in e)]
            )
    return Digest(title, bodies)
