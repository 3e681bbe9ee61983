"""Firings to `Alert` payloads: deterministic ids, words for people, the history block."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

import polars as pl

from monitor.core.model import Alert, History, HorizonStats, MetricValue
from monitor.core.rules import FAMILIES
from monitor.core.rules.context import KEYS, RuleContext, pct, unit
from monitor.core.rules.spec import Rule, kind_of

# Columns of a firing frame that are bookkeeping, not metrics for the payload.
_INTERNAL = {*KEYS, "fire", "history_start", "prior_occurrences", "prior_dates", "pos"}
_STAT = re.compile(r"^(fwd|n|mean|median|up|min|max)_\d+$")


def alert_id(rule_id: str, symbol: str, timeframe: str, ts: dt.datetime, variant: str) -> str:
    """The same event always gets the same id: a hash of rule, symbol, timeframe and bar close."""
    key = f"{rule_id}|{symbol}|{timeframe}|{ts.isoformat()}|{variant}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def build_alerts(fired: pl.DataFrame, rule: Rule, ctx: RuleContext) -> list[Alert]:
    """One Alert per firing row, in the frame's order."""
    if fired.is_empty():
        return []
    family = FAMILIES[kind_of(rule)]
    severity = rule.severity or family.SEVERITY
    metric_cols = [c for c in fired.columns if c not in _INTERNAL and not _STAT.match(c)]
    out: list[Alert] = []
    for row in fired.iter_rows(named=True):
        title, text = family.describe(row, rule, ctx)
        ts: dt.datetime = row["ts"]
        metrics = {c: _value(row[c]) for c in metric_cols}
        if row["variant"]:
            metrics["variant"] = row["variant"]
        out.append(
            Alert(
                id=alert_id(rule.id, row["symbol"], rule.timeframe, ts, row["variant"]),
                rule=rule.id,
                kind=kind_of(rule),
                symbol=row["symbol"],
                timeframe=rule.timeframe,
                session=row["session"].isoformat(),
                ts=ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                severity=severity,
                title=title,
                text=text,
                metrics=metrics,
                history=_history(row, rule),
            )
        )
    return out


def _history(row: dict[str, Any], rule: Rule) -> History:
    stats = [
        HorizonStats(
            periods=h,
            count=int(row[f"n_{h}"] or 0),
            mean=_float(row.get(f"mean_{h}")),
            median=_float(row.get(f"median_{h}")),
            share_positive=_float(row.get(f"up_{h}")),
            min=_float(row.get(f"min_{h}")),
            max=_float(row.get(f"max_{h}")),
        )
        for h in rule.horizons
    ]
    dates = [d.isoformat() for d in (row["prior_dates"] or [])]
    return History(
        prior_occurrences=int(row["prior_occurrences"] or 0),
        prior_dates=dates,
        forward=stats,
        summary=summary(len(dates), dates[0] if dates else None, stats, rule.timeframe),
    )


def summary(count: int, first: str | None, stats: Sequence[HorizonStats], timeframe: str) -> str:
    """The history line for people: "4 earlier times since 1987; over the next 21 sessions,
    +6.1% on average (median +5.0%), 4 of 4 up"."""
    if count == 0 or first is None:
        return "First time in the loaded history."
    times = "time" if count == 1 else "times"
    head = f"{count} earlier {times} since {first[:4]}"
    known = [s for s in stats if s.count > 0]
    if not known:
        return head + "; too recent to say what followed."
    pick = known[len(known) // 2] if len(known) > 1 else known[0]
    ups = round((pick.share_positive or 0.0) * pick.count)
    return (
        f"{head}; over the next {pick.periods} {unit(timeframe, pick.periods)}, "
        f"{pct(pick.mean, signed=True)} on average (median {pct(pick.median, signed=True)}), "
        f"{ups} of {pick.count} up."
    )


def _float(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) or math.isinf(f) else f


def _value(value: Any) -> MetricValue:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)
