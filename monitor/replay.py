"""Replay: the live engine driven over history with a simulated clock.

Bars are fed session by session in batches (`batch_sessions`), the clock advanced to each batch's
last close, exactly as the daemon would see them; the alerts are the ones the daemon would have
published.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from monitor.core.engine import Engine, Step
from monitor.core.model import Alert, FeedBatch, Rejection
from monitor.core.rules.context import pct, unit
from monitor.core.rules.spec import Rule, RulesFile, SqueezeRule, kind_of
from monitor.core.sessions import Sessions
from monitor.core.short_interest import prepare


def build_engine(
    rules: RulesFile,
    sessions: Sessions,
    *,
    short_interest: pl.DataFrame | None = None,
    emit_after: dt.datetime | None = None,
    rule_threads: int = 1,
    **options: Any,
) -> Engine:
    """An Engine with short interest prepared for every lag the rules use, evaluating up to
    `rule_threads` rules at a time; `options` are the Engine's (the daemon's `[engine]`)."""
    terms = {
        (r.short_interest_lag, r.short_interest_max_age)
        for r in rules.rules
        if isinstance(r, SqueezeRule)
    }
    si = prepare(short_interest, sessions, terms) if short_interest is not None and terms else None
    return Engine(
        rules,
        sessions,
        short_interest=si,
        emit_after=emit_after,
        rule_threads=rule_threads,
        **options,
    )


def replay(
    engine: Engine,
    bars: pl.DataFrame,
    *,
    batch_sessions: int | None = None,
    feed: str = "replay",
) -> Iterator[Alert]:
    """Feed daily `bars` (DAILY_SCHEMA) through `engine` and yield every alert, in order.
    `batch_sessions=None` feeds everything as one batch."""
    for step in replay_steps(engine, bars, batch_sessions=batch_sessions, feed=feed):
        yield from step.alerts


def replay_steps(
    engine: Engine,
    bars: pl.DataFrame,
    *,
    batch_sessions: int | None = None,
    feed: str = "replay",
    deferred: bool = False,
    rejected: list[Rejection] | None = None,
) -> Iterator[Step]:
    """`replay`, a Step per batch: its `lines` are the alerts as JSON, never decoded.
    `deferred`: as `Engine.advance`'s (read each Step's lines before the next Step);
    `rejected`, when given, takes the bars the engine rejected (days that are no session).
    (Minute bars and ticks: `monitor.replay_days.intraday_step`.)"""
    if bars.is_empty():
        return
    for part, last in _batches(bars, batch_sessions):
        batch = FeedBatch.empty(feed)
        batch.daily_bars = part
        refused = engine.ingest(batch)
        if rejected is not None:
            rejected += refused
        # (to the close of the batch's last session: a file's last row may be a Saturday's,
        # refused, and the sessions before it are still to close)
        session = engine.sessions.on_or_before(last)
        if session is not None:
            yield engine.advance(engine.sessions.close_of(session), deferred=deferred)


def _batches(bars: pl.DataFrame, size: int | None) -> Iterator[tuple[pl.DataFrame, dt.date]]:
    """`bars` (not empty) in batches of `size` sessions (None: all in one), with each batch's
    last date. One batch is `bars` itself: no copy, and no distinct dates of millions of bars."""
    column = bars.get_column("session")
    if not size:
        last: dt.date = column.max()  # type: ignore[assignment]
        yield bars, last
        return
    sessions = column.unique().sort()
    for i in range(0, len(sessions), size):
        chunk = sessions[i : i + size]
        yield bars.filter(pl.col("session").is_between(chunk[0], chunk[-1])), chunk[-1]


class Gap(NamedTuple):
    """Sessions of the calendar missing inside one symbol's history (between two of its bars)."""

    symbol: str
    missing: int
    first: dt.date  # the first missing session


def gaps(bars: pl.DataFrame, sessions: Sessions) -> list[Gap]:
    """Per symbol of `bars` (sorted by symbol and session; days that are no session are left
    out) whose history skips sessions (a bar missing from the file, or rejected as bad): how many,
    and the first, in symbol order. A symbol's windows and streaks do not reach across them,
    and what followed its alerts counts them as sessions (`bar_history.derived`): the line
    says why an alert one would expect is not there.

    A gap is a step of more than one session number from a row to the next; the few rows
    after such a step are then checked for being the same symbol's (numpy over the column,
    not a comparison of millions of symbols)."""
    numbers = bars.select(sessions.number_expr(pl.col("session"))).to_series()
    if numbers.null_count():  # days that are no session (rejected later): not bars to count
        bars, numbers = bars.filter(numbers.is_not_null()), numbers.drop_nulls()
    number = numbers.to_numpy()
    rows = np.flatnonzero(np.diff(number) > 1) + 1  # (the row after each step)
    if not rows.size:
        return []
    symbols = bars.get_column("symbol")
    steps = pl.DataFrame(
        {
            "symbol": symbols.gather(rows),
            "same": (symbols.gather(rows) == symbols.gather(rows - 1)),
            "missing": number[rows] - number[rows - 1] - 1,
            "first": number[rows - 1] + 1,
        }
    ).filter("same")
    days = sessions.frame.get_column("session")
    per_symbol = steps.group_by("symbol", maintain_order=True).agg(
        pl.col("missing").sum(), pl.col("first").first()
    )
    return [
        Gap(symbol, int(missing), days[int(first)])
        for symbol, missing, first in per_symbol.iter_rows()
    ]


def new_gaps(daily: pl.DataFrame, new: pl.DataFrame, sessions: Sessions) -> list[Gap]:
    """The gaps that the daily bars `new` (a live step's, stored into `daily`) open: sessions
    missing between each symbol's new bars and its last bar before them (a feed that skipped a
    symbol for a day, a name that did not trade)."""
    # (each symbol's own first new session: a step may hold one symbol's bar of a day and
    # another's of the next, the first symbol's bar of that next day still to come)
    firsts = new.group_by("symbol").agg(pl.col("session").min().alias("first"))
    before = daily.join(firsts, on="symbol").filter(pl.col("session") < pl.col("first"))
    last = before.group_by("symbol").agg(pl.col("session").max())
    both = pl.concat([last, new.select("symbol", "session")]).unique()
    return gaps(both.sort("symbol", "session"), sessions)


def gaps_line(found: list[Gap], shown: int = 5) -> str:
    """One line for people: `3 sessions missing inside the history of 2 symbols (^RUT 1 from
    2024-07-11, AAA 2 from 2024-07-03)`."""
    total = sum(g.missing for g in found)
    listed = ", ".join(f"{g.symbol} {g.missing} from {g.first}" for g in found[:shown])
    more = f", and {_count(len(found) - shown, 'more symbol')}" if len(found) > shown else ""
    return (
        f"{_count(total, 'session')} missing inside the history of "
        f"{_count(len(found), 'symbol')} ({listed}{more}): a window or streak does not reach "
        "across them"
    )


def emit_after_for(sessions: Sessions, start: dt.date | None) -> dt.datetime | None:
    """The instant after which alerts are printed for `--from DATE` (the close before it)."""
    if start is None:
        return None
    before = sessions.frame.filter(pl.col("session") < start).get_column("close_ts")
    if before.is_empty():
        return None
    value: dt.datetime = before.max()  # type: ignore[assignment]
    return value


class Outcome(NamedTuple):
    """What followed a rule's alerts over one horizon (`periods`), and any period (`any_*`)."""

    periods: int
    known: int  # alerts whose horizon the history covers
    mean: float | None
    median: float | None
    up: float | None  # share positive
    worst: float | None
    best: float | None
    any_known: int  # periods of the series whose horizon the history covers
    any_mean: float | None
    any_up: float | None


class RuleSummary(NamedTuple):
    """One rule's line of a summary (of one variant's alerts, for a rule with variants: a
    drawdown's `near_high` and `below_high` are opposite signals): its alerts, and an Outcome
    per horizon."""

    rule: Rule
    alerts: int
    symbols: int
    first: dt.date | None
    last: dt.date | None
    outcomes: list[Outcome]
    variant: str = ""
    symbol: str = ""  # (`Summary.by_symbol`'s: of that symbol's alerts alone)

    @property
    def label(self) -> str:
        """The rule's id, with the variant when there is one: `drawdown.high (below_high)`."""
        return f"{self.rule.id} ({self.variant})" if self.variant else self.rule.id


class Summary:
    """What a replay's rules did over the whole history, for `--format summary` and the report:
    per rule, how many alerts on how many symbols, the first and last, and what followed them:
    over each horizon, the forward return from every alert whose horizon the history covers
    (the returns the alerts' `history` blocks are made of, taken over all of a rule's alerts
    together), beside the same after every period of the series the rule watches, alert or not
    (the baseline: a rule whose alerts do no better than any day tells nothing).

    Made from one evaluation of the whole history (a replay in one batch): the outcomes of a
    batch's alerts are only known once later batches are in. (A replay of minute bars goes a
    day at a time for its minute rules, whose outcomes are known by the day's end, a minute's
    horizon staying in its session: see `monitor.replay_days.intraday_step`.)"""

    def __init__(self, engine: Engine, rules: list[Rule] | None = None) -> None:
        """A summary of `rules` (the engine's when None), whose baseline `engine` collects
        (an engine of some of them may share it: `engine.baseline`)."""
        self.rules = rules if rules is not None else engine.rules
        self._parts: dict[str, list[pl.DataFrame]] = {r.id: [] for r in self.rules}
        self._baseline: dict[str, list[pl.DataFrame]] = {}
        engine.baseline = self._baseline

    def add(self, step: Step) -> None:
        """Count a step's firings (what its alerts are made of)."""
        for rule, fired in step.firings:
            if fired.height:
                forward = [f"fwd_{h}" for h in rule.horizons]
                self._parts[rule.id].append(fired.select("symbol", "session", "variant", *forward))

    def rules_summary(self) -> list[RuleSummary]:
        """A RuleSummary per rule (per variant of a rule whose alerts have variants), in the
        rules file's order."""
        return [summary for rule in self.rules for summary in self._rule(rule)]

    def text(
        self, symbols: int, first: dt.date, last: dt.date, start: dt.date | None = None
    ) -> str:
        """The summary for people: a block per rule, in the rules file's order. `first` and
        `last` are the history's sessions, `start` the `--from` date alerts are counted from."""
        summaries = self.rules_summary()
        total = sum(r.alerts for r in summaries)
        since = f", alerts from {start}" if start is not None else ""
        lines = [
            f"Replay of {_count(len(self.rules), 'rule')} over {_count(symbols, 'symbol')}, "
            f"{first} to {last}{since}: {_count(total, 'alert')}.",
        ]
        for summary in summaries:
            lines += ["", *_block(summary)]
        if any(r.outcomes for r in summaries):
            lines += [
                "",
                "any session, any week: what followed every period of the series the rule",
                "watches, alert or not (what its alerts are to beat).",
            ]
        return "\n".join(lines) + "\n"

    def _rule(self, rule: Rule) -> list[RuleSummary]:
        parts = self._parts[rule.id]
        if not parts:
            return [RuleSummary(rule, 0, 0, None, None, [])]
        fired = pl.concat(parts)
        every = self._every_period(rule)
        variants = fired.get_column("variant").unique(maintain_order=True).sort().to_list()
        if variants == [""]:
            return [self._variant(rule, fired, every, "")]
        return [
            self._variant(rule, fired.filter(pl.col("variant") == v), every, v) for v in variants
        ]

    def _variant(
        self,
        rule: Rule,
        fired: pl.DataFrame,
        every: dict[int, tuple[int, float, int]],
        variant: str,
    ) -> RuleSummary:
        row = fired.select(
            pl.col("symbol").n_unique().alias("symbols"), *_followed(rule.horizons)
        ).row(0, named=True)
        outcomes = []
        for h in rule.horizons:
            periods, total, ups = every.get(h, (0, 0.0, 0))
            any_mean, any_up = (total / periods, ups / periods) if periods else (None, None)
            outcomes.append(
                _outcome(row, h)._replace(any_known=periods, any_mean=any_mean, any_up=any_up)
            )
        return RuleSummary(
            rule, row["alerts"], row["symbols"], row["first"], row["last"], outcomes, variant
        )

    def by_symbol(self) -> list[RuleSummary]:
        """What followed each rule's alerts on each symbol (of each variant apart), as
        `rules_summary` says of all its symbols together (no baseline: `any_*` empty), sorted
        by rule id, symbol and variant; none for a rule without horizons."""
        out: list[RuleSummary] = []
        for rule in sorted(self.rules, key=lambda r: r.id):
            parts = self._parts[rule.id]
            if not parts or not rule.horizons:
                continue
            groups = (
                pl.concat(parts)
                .group_by("symbol", "variant")
                .agg(*_followed(rule.horizons))
                .sort("symbol", "variant")
            )
            for row in groups.iter_rows(named=True):
                outcomes = [_outcome(row, h) for h in rule.horizons]
                dates = row["first"], row["last"]
                out.append(
                    RuleSummary(
                        rule, row["alerts"], 1, *dates, outcomes, row["variant"], row["symbol"]
                    )
                )
        return out

    def _every_period(self, rule: Rule) -> dict[int, tuple[int, float, int]]:
        """Per horizon: forward returns known after any period, their sum, how many up."""
        rows = [r for r in self._baseline.get(rule.id, []) if r.height]
        if not rows:
            return {}
        sums = pl.concat(rows).sum().row(0, named=True)
        return {
            h: (sums[f"n_{h}"], sums[f"sum_{h}"] or 0.0, sums[f"up_{h}"]) for h in rule.horizons
        }


def _followed(horizons: Sequence[int]) -> list[pl.Expr]:
    """Aggregations over firings (a frame, or each group of one): how many (`alerts`), the
    first and last session, and per horizon h the forward returns the history covers:
    `n_h`, `mean_h`, `median_h`, `up_h` (share positive), `worst_h`, `best_h`."""
    exprs = [
        pl.len().alias("alerts"),
        pl.col("session").min().alias("first"),
        pl.col("session").max().alias("last"),
    ]
    for h in horizons:
        values = pl.col(f"fwd_{h}")
        known = values.filter(values.is_finite())
        exprs += [
            known.len().alias(f"n_{h}"), known.mean().alias(f"mean_{h}"),
            known.median().alias(f"median_{h}"), known.gt(0).mean().alias(f"up_{h}"),
            known.min().alias(f"worst_{h}"), known.max().alias(f"best_{h}"),
        ]  # fmt: skip
    return exprs


def _outcome(row: dict[str, Any], h: int) -> Outcome:
    """Horizon `h`'s Outcome of a row of `_followed` (no baseline)."""
    return Outcome(
        h, row[f"n_{h}"], row[f"mean_{h}"], row[f"median_{h}"], row[f"up_{h}"],
        row[f"worst_{h}"], row[f"best_{h}"], 0, None, None,
    )  # fmt: skip


def _block(summary: RuleSummary) -> list[str]:
    """A rule's lines of the summary text."""
    rule = summary.rule
    variant = f"; {summary.variant}" if summary.variant else ""
    head = f"{rule.id} ({kind_of(rule)}, {rule.timeframe}{variant})"
    if not summary.alerts:
        return [f"{head}: no alerts"]
    lines = [
        f"{head}: {_count(summary.alerts, 'alert')} on {_count(summary.symbols, 'symbol')}, "
        f"{summary.first} to {summary.last}"
    ]
    if not summary.outcomes:
        return lines
    any_period = f"any {unit(rule.timeframe)}"
    lines.append(f"    {'what followed':18}{'alerts':>9}{'mean':>9}{'median':>9}{'up':>6}"
                 f"{'worst':>9}{'best':>9}   {any_period:>13}{'mean':>9}{'up':>6}")  # fmt: skip
    for o in summary.outcomes:
        mean, median, worst, best, any_mean = (
            pct(x, signed=True) for x in (o.mean, o.median, o.worst, o.best, o.any_mean)
        )
        span = f"{o.periods} {unit(rule.timeframe, o.periods)}"
        lines.append(
            f"    {span:18}{o.known:>9,}{mean:>9}{median:>9}{_share(o.up):>6}{worst:>9}{best:>9}"
            f"   {o.any_known:>13,}{any_mean:>9}{_share(o.any_up):>6}"
        )
    return lines


def _share(value: float | None) -> str:
    """A share as a whole percentage: 0.556 -> '56%'."""
    return "n/a" if value is None else f"{round(100 * value):d}%"


def _count(n: int, word: str) -> str:
    """`1 alert`, `2 alerts`, `17,060 symbols`."""
    return f"{n:,} {word}{'s' if n != 1 else ''}"
