"""`replay --format table`: alerts for people, one block per alert.

Each block's first line is when (the session; a `1m` alert's minute too, in New York time, as
its text's "largest since" names minutes), the severity, the rule and the symbol, in columns
as wide as the table's longest; under it the alert's text and what history says. Alerts come
in time order, and those of one rule at one time in rank order (`movers`: #1, #2, #3), the
order a reader looks for, not the symbols'.

Why apart from `monitor.replay`: that module drives the engine; this only lays out alerts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from monitor.core.model import ISO_UTC, Alert
from monitor.core.sessions import NEW_YORK

_RULE_WIDTH = 20  # (the rule column's least width: the shipped ids fit)


def table(alerts: Sequence[Alert]) -> str:
    """The alerts as a table (see the module); `No alerts.` for none."""
    if not alerts:
        return "No alerts.\n"
    shown = in_rank_order(alerts)
    whens = [when(a) for a in shown]
    when_width = max(len(w) for w in whens)
    rule_width = max(_RULE_WIDTH, *(len(a.rule) for a in shown))
    lines: list[str] = []
    for a, at in zip(shown, whens, strict=True):
        lines.append(f"{at:{when_width}}  {a.severity.upper():8} {a.rule:{rule_width}} {a.symbol}")
        lines.append(f"    {a.text}")
        if a.history is not None and a.history.summary:
            lines.append(f"    History: {a.history.summary}")
        lines.append("")
    lines.append(f"{len(alerts):,} alert{'s' if len(alerts) != 1 else ''}.")
    return "\n".join(lines) + "\n"


def when(alert: Alert) -> str:
    """An alert's session, and for a `1m` alert its minute in New York time too:
    `2024-03-08 09:43`."""
    if alert.timeframe != "1m":
        return alert.session
    at = dt.datetime.strptime(alert.ts, ISO_UTC).replace(tzinfo=dt.UTC)
    return f"{alert.session} {at.astimezone(ZoneInfo(NEW_YORK)):%H:%M}"


def in_rank_order(alerts: Sequence[Alert]) -> list[Alert]:
    """The alerts in their order, but each run of one rule's at one time by its `rank` metric
    (a movers rule's), equal ranks in their order; alerts without a rank stay as they are."""
    keyed = []
    run = 0
    for i, alert in enumerate(alerts):
        if i and (alert.ts, alert.rule) != (alerts[i - 1].ts, alerts[i - 1].rule):
            run += 1
        rank = alert.metrics.get("rank")
        keyed.append((run, rank if isinstance(rank, int | float) else 0, i))
    return [alerts[i] for _, _, i in sorted(keyed)]
