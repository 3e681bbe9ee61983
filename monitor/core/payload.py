"""Firings to `Alert` payloads: deterministic ids, words for people, the history block."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from monitor.core.model import Alert, History, HorizonStats, MetricValue
from monitor.core.rules import FAMILIES
from monitor.core.rules.context import KEYS, RuleContext, pct, unit
from monitor.core.rules.spec import Rule, kind_of
from monitor.core.sessions import NEW_YORK

# Columns of a firing frame that are bookkeeping, not metrics for the payload.
_INTERNAL = {*KEYS, "fire", "history_start", "prior_occurrences", "prior_dates", "pos", "ts_key"}
_STAT = re.compile(r"^(fwd|n|mean|median|up|min|max)_\d+$")


def alert_id(rule_id: str, symbol: str, timeframe: str, ts: dt.datetime, variant: str) -> str:
    """The same event always gets the same id: a hash of rule, symbol, timeframe and bar close."""
    key = f"{rule_id}|{symbol}|{timeframe}|{ts.isoformat()}|{variant}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def build_alerts(fired: pl.DataFrame, rule: Rule, ctx: RuleContext) -> list[Alert]:
    """One Alert per firing row, in the frame's order.

    Dates become text, non-finite numbers null and the history statistics plain values in
    polars first, so the per-alert Python work is only the words and the struct."""
    if fired.is_empty():
        return []
    family = FAMILIES[kind_of(rule)]
    severity = rule.severity or family.SEVERITY
    kind = kind_of(rule)
    frame = _plain(fired)
    names = frame.columns
    metric_cols = [c for c in names if c not in _INTERNAL and not _STAT.match(c)]
    where = {name: i for i, name in enumerate(names)}
    stat_at = [
        (h, *(where[f"{s}_{h}"] for s in ("n", "mean", "median", "up", "min", "max")))
        for h in rule.horizons
    ]
    prior_at, dates_at = where["prior_occurrences"], where["prior_dates"]
    out: list[Alert] = []
    for values in frame.iter_rows():
        row = dict(zip(names, values, strict=True))
        title, text = family.describe(row, rule, ctx)
        metrics: dict[str, MetricValue] = {c: row[c] for c in metric_cols}
        variant = row["variant"]
        if variant:
            metrics["variant"] = variant
        out.append(
            Alert(
                id=_id(rule.id, row["symbol"], rule.timeframe, row["ts_key"], variant),
                rule=rule.id,
                kind=kind,
                symbol=row["symbol"],
                timeframe=rule.timeframe,
                session=row["session"],
                ts=row["ts"],
                severity=severity,
                title=title,
                text=text,
                metrics=metrics,
                history=_history(values, stat_at, prior_at, dates_at, rule.timeframe),
            )
        )
    return out


def _plain(fired: pl.DataFrame) -> pl.DataFrame:
    """Payload-ready columns: dates as YYYY-MM-DD, `ts` as ISO UTC with Z (and `ts_key`, the
    form alert ids are made from), NaN and infinities as null."""
    exprs: list[pl.Expr] = []
    for name, dtype in fired.schema.items():
        col = pl.col(name)
        if name == "ts":
            exprs += [
                col.dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("ts"),
                col.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").alias("ts_key"),
            ]
        elif dtype == pl.Date:
            exprs.append(col.dt.strftime("%Y-%m-%d"))
        elif dtype == pl.List(pl.Date):
            exprs.append(col.list.eval(pl.element().dt.strftime("%Y-%m-%d")))
        elif dtype.is_float():
            exprs.append(pl.when(col.is_finite()).then(col).otherwise(None).alias(name))
        else:
            exprs.append(col)
    return fired.select(exprs)


def _id(rule_id: str, symbol: str, timeframe: str, ts_key: str, variant: str) -> str:
    key = f"{rule_id}|{symbol}|{timeframe}|{ts_key}|{variant}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def _history(
    values: tuple[Any, ...],
    stat_at: list[tuple[int, ...]],
    prior_at: int,
    dates_at: int,
    timeframe: str,
) -> History:
    """The history block of one row; `stat_at` holds, per horizon, the period count and the
    positions of its n, mean, median, up, min and max columns."""
    stats = [
        HorizonStats(
            h, values[n] or 0, values[mean], values[med], values[up], values[lo], values[hi]
        )
        for h, n, mean, med, up, lo, hi in stat_at
    ]
    dates: list[str] = values[dates_at] or []
    return History(
        prior_occurrences=values[prior_at] or 0,
        prior_dates=dates,
        forward=stats,
        summary=summary(len(dates), dates[0] if dates else None, stats, timeframe),
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


def feed_health_alert(kind: str, feed: str, at: dt.datetime, gap_s: float | None) -> Alert:
    """A `feed_stale` or `feed_recovered` alert for one feed (feed health, no history)."""
    gap = f" after {gap_s:.0f} s without data" if gap_s else ""
    if kind == "feed_stale":
        title = f"Feed {feed} is stale"
        text = f"No data from feed {feed}{gap} during regular hours; alerts from it may be late."
        severity = "warning"
    else:
        title = f"Feed {feed} recovered"
        text = f"Data from feed {feed} flows again{gap}."
        severity = "info"
    return Alert(
        id=alert_id(f"feed.{kind}", feed, "1m", at, ""),
        rule=f"feed.{kind.removeprefix('feed_')}",
        kind=kind,
        symbol=feed,
        timeframe="1m",
        session=at.astimezone(ZoneInfo(NEW_YORK)).date().isoformat(),
        ts=at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        severity=severity,  # type: ignore[arg-type]
        title=title,
        text=text,
        metrics={"gap_s": gap_s},
        history=None,
    )
