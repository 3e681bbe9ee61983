"""From bars to firings: one rule's condition, its episodes, cooldown, largest-since and history.

A *firing* is the period in which a rule's condition turns true (an episode starts): a condition
already true at the start of the loaded history is not an onset and does not fire.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

from monitor.core import history
from monitor.core.metrics import prior_larger
from monitor.core.model import ISO_UTC
from monitor.core.progress import measured
from monitor.core.rules import FAMILIES
from monitor.core.rules.context import TOLERANCE, RuleContext
from monitor.core.rules.spec import RotationRule, Rule, kind_of


def rule_frame(bars: pl.DataFrame, rule: Rule) -> pl.DataFrame:
    """The bars a rule watches: its symbols, or the whole universe."""
    if isinstance(rule, RotationRule):
        return bars.filter(pl.col("symbol").is_in([rule.small, rule.large]))
    if rule.universe:
        return bars.filter(~pl.col("symbol").is_in(rule.exclude)) if rule.exclude else bars
    return bars.filter(pl.col("symbol").is_in(rule.symbols))


def per_symbol(rule: Rule) -> bool:
    """Whether the rule's firings on a symbol depend on that symbol's bars alone (so a universe
    can be evaluated a piece of symbols at a time): its family's `PER_SYMBOL`."""
    return bool(FAMILIES[kind_of(rule)].PER_SYMBOL)


def firings(
    bars: pl.DataFrame,
    rule: Rule,
    ctx: RuleContext,
    after: dt.datetime | None,
    progress: list[pl.DataFrame] | None = None,
    baseline: list[pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """Every firing of `rule` with `ts > after` (all when None), with metrics and history.

    `bars` carries symbol, session, ts, OHLCV, `idx` (row number within the symbol), `num` (the
    period's number: consecutive periods, consecutive numbers; see `bar_history.derived`) and
    `ret1`, sorted by symbol and ts. When `progress` is a list, how close the rule is on each
    symbol at its last period is appended to it (`progress.measured`); when `baseline` is,
    `every_period`'s row.

    A condition frame keeps each (symbol, variant) group contiguous and in time order, with
    `idx` counting 0, 1, 2, ... within it (see monitor/core/rules/__init__.py), so "the previous
    period" is a position in the frame: no sort, no window per group. "`h` periods later" is
    `h` rows later where no period is missing between (`num` says), and found by a binary search
    over the `h` rows where one is: a period missing from a symbol's history is not one of the
    `h` (nor of a cooldown's periods), as a window does not reach across it.
    """
    family = FAMILIES[kind_of(rule)]
    frame = rule_frame(bars, rule)
    if frame.is_empty():
        return pl.DataFrame()
    cond = family.condition(frame, rule, ctx).with_row_index("pos")
    if progress is not None:
        progress.append(measured(cond, rule))
    if baseline is not None:
        baseline.append(every_period(cond, rule.horizons, after, rule.timeframe))
    # A condition already true at a group's first period is not an onset. A period whose
    # condition cannot be known (null: a window reaching across a period missing from the
    # symbol's history) or that a rule did not evaluate (`skipped`: breadth and movers, a
    # session with too few bars) neither starts nor ends an episode: the period before it
    # stands for it (before a group's first known period, "not true").
    unknown = pl.col("cond").is_null()
    if "skipped" in cond.columns:
        unknown = unknown | pl.col("skipped")
    first = pl.col("idx") == 0  # (a group's first row sets a value: the fill stays within it)
    held = pl.col("cond").fill_null(False)
    held = pl.when(unknown & ~first).then(None).otherwise(held).forward_fill()
    before = pl.when(first).then(True).otherwise(held.shift(1))
    fired = cond.filter(pl.col("cond").fill_null(False) & ~before)
    if rule.cooldown:
        fired = _cooldown(fired, rule.cooldown)
    at = _Positions(cond, fired, in_session=rule.timeframe == "1m")
    fired = fired.with_columns(
        at.gather("session", at.pos - at.idx).alias("history_start"),
        *[at.forward(h).alias(f"fwd_{h}") for h in rule.horizons],
    )
    if hasattr(family, "LARGEST_SINCE_OF"):
        fired = _largest_since(at, fired, family.LARGEST_SINCE_OF, rule.timeframe == "1m")
    fired = history.attach(fired, rule.horizons)
    if after is not None:
        fired = fired.filter(pl.col("ts") > after)
    return fired.sort("ts", maintain_order=True)  # (by instant: the engine orders the rest)


def every_period(
    cond: pl.DataFrame, horizons: Sequence[int], after: dt.datetime | None, timeframe: str
) -> pl.DataFrame:
    """What followed every period of a condition frame with `ts > after`, firing or not (the
    baseline to set a rule's outcomes against): one row of, per horizon `h`, how many forward
    returns are known (`n_{h}`), their sum (`sum_{h}`) and how many are positive (`up_{h}`),
    sums that add up over pieces of a universe. Variants (a drawdown's two, each on every
    symbol) repeat their symbol's periods: those of the first are counted. As in `firings`,
    the return `h` periods on is taken from the row of that period (`later_rows`: a period
    missing from the symbol's history is one of the `h`, and when the `h`-th is missing the
    return is not known), and a `1m` return whose `h`-th minute is in a later session is not
    known.

    Over the arrays (numpy), with a few buffers serving every horizon: fresh pages cost more
    here than the arithmetic."""
    minute = timeframe == "1m"
    # (a group: a run of rows from an `idx` of 0, numbered before the rows up to `after` go)
    rows = cond.select(
        "ts", (pl.col("idx") == 0).cum_sum().alias("group"), "num", "ref", "variant",
        *(["session"] if minute else []),
    )  # fmt: skip
    if after is not None:  # (each group loses earlier rows only: what stays is contiguous)
        rows = rows.filter(pl.col("ts") > after)
    variant = rows.get_column("variant")
    if rows.height and (variant != "").any():
        rows = rows.filter(variant == variant[0])
    group = rows.get_column("group").to_numpy()
    num = rows.get_column("num").to_numpy()
    ref = rows.get_column("ref").cast(pl.Float64).to_numpy()
    session = rows.get_column("session").to_physical().to_numpy() if minute else None
    n = len(ref)
    # Where no period is missing, the period `h` on is `h` rows on: a division of two views
    # of the column. Only with a period missing somewhere are the others searched for.
    gapped = n > 1 and bool(np.any((np.diff(num) != 1) & (np.diff(group) == 0)))
    later, steps = np.empty(n), np.empty(n, dtype=np.int64)
    known, up = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
    totals: dict[str, int | float] = {}
    for h in horizons:
        m = max(n - h, 0)
        k = known[:m]
        np.subtract(num[h:], num[:m], out=steps[:m])
        np.equal(steps[:m], h, out=k)
        k &= np.equal(group[h:], group[:m], out=up[:m])
        if session is not None:
            k &= np.equal(session[h:], session[:m], out=up[:m])
        known[m:] = False
        with np.errstate(divide="ignore", invalid="ignore"):  # (not finite: not counted)
            np.divide(ref[h:], ref[:m], out=later[:m])
            if gapped:  # (the rows whose period `h` on is fewer rows on)
                rest = np.flatnonzero(~known)
                at = _search(group, num, rest, h)
                hit = at >= 0
                if session is not None:
                    hit &= session[np.maximum(at, 0)] == session[rest]
                rest, at = rest[hit], at[hit]
                later[rest] = ref[at] / ref[rest]
                known[rest] = True
        np.subtract(later, 1.0, out=later)
        known &= np.isfinite(later, out=up)
        np.greater(later, 0.0, out=up)
        up &= known
        totals |= {
            f"n_{h}": int(np.count_nonzero(known)),
            f"sum_{h}": float(later.sum(where=known)),
            f"up_{h}": int(np.count_nonzero(up)),
        }
    return pl.DataFrame([totals])


class _Positions:
    """Positional look-ups from firing rows into their condition frame."""

    def __init__(self, cond: pl.DataFrame, fired: pl.DataFrame, in_session: bool = False) -> None:
        self.cond = cond
        self.pos = fired.get_column("pos").to_numpy().astype(np.int64)
        self.idx = fired.get_column("idx").to_numpy().astype(np.int64)
        # (a group: a run of rows from an `idx` of 0, one symbol's or one variant's)
        self._group = np.cumsum(cond.get_column("idx").to_numpy() == 0)
        self._num_all = cond.get_column("num").to_numpy()
        # (a minute rule's horizon stays in the firing's session: the `session` column)
        self._session = cond.get_column("session").to_physical().to_numpy() if in_session else None

    def gather(self, column: str, positions: np.ndarray) -> pl.Series:
        """Values of `column` at `positions` (-1 gives null)."""
        values = self.cond.get_column(column)
        ok = positions >= 0
        out = values.gather(np.where(ok, positions, 0))
        return pl.select(pl.when(pl.Series(ok)).then(out)).to_series()

    def forward(self, h: int) -> pl.Series:
        """The reference close `h` periods after each firing over the firing's, minus 1 (null
        when the group ends first or that period is missing from it, or for minutes when the
        firing's session ends first)."""
        later = self.gather("ref", self.later(h))
        now = self.cond.get_column("ref").gather(self.pos)
        return later / now - 1.0

    def later(self, h: int) -> np.ndarray:
        """Per firing, the row of its group whose period is `h` after the firing's (by `num`),
        or -1 when there is none (for minutes, none in a later session)."""
        found = later_rows(self._group, self._num_all, self.pos, h)
        if self._session is not None:
            inside = found >= 0
            same = self._session[np.where(inside, found, 0)] == self._session[self.pos]
            found[inside & ~same] = -1
        return found


def later_rows(group: np.ndarray, num: np.ndarray, rows: np.ndarray, h: int) -> np.ndarray:
    """Per row of `rows`, the row of the same group whose period is `h` after its own (`num`:
    groups are contiguous, each in `num` order), or -1 when that period is not there. Where
    no period of the group is missing between, it is `h` rows on; where one is, fewer
    (`_search`)."""
    height, target = len(num), rows + h
    at = np.minimum(target, height - 1)
    goal = num[rows] + h
    found = np.where((target < height) & (group[at] == group[rows]) & (num[at] == goal), target, -1)
    rest = np.flatnonzero(found < 0)
    if rest.size:
        found[rest] = _search(group, num, rows[rest], h)
    return found


def _search(group: np.ndarray, num: np.ndarray, rows: np.ndarray, h: int) -> np.ndarray:
    """`later_rows` by binary search over the `h` rows after each of `rows`: the last of them
    that is of the same group with a period at most `h` on (true up to a row, false after),
    if its period is exactly `h` on; else -1. All at once, in log2(h) steps of arrays."""
    mine, want = group[rows], num[rows] + h
    lo, hi = rows.copy(), np.minimum(rows + h, len(num) - 1)
    while (lo < hi).any():
        mid = (lo + hi + 1) // 2
        ok = (group[mid] == mine) & (num[mid] <= want)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid - 1)
    return np.where(num[lo] == want, lo, -1)


def _cooldown(fired: pl.DataFrame, periods: int) -> pl.DataFrame:
    """Drop firings within `periods` of the previous kept firing of the same symbol/variant
    (periods by `num`: one missing from the symbol's history counts, as time passed)."""
    keep: list[bool] = []
    last: dict[tuple[str, str], int] = {}
    for sym, var, num in fired.select("symbol", "variant", "num").iter_rows():
        key = (sym, var)
        ok = key not in last or num - last[key] > periods
        if ok:
            last[key] = num
        keep.append(ok)
    return fired.filter(pl.Series(keep, dtype=pl.Boolean))


def _largest_since(
    at: _Positions, fired: pl.DataFrame, column: str, minutes: bool = False
) -> pl.DataFrame:
    """Add `largest_since`: the session of the most recent earlier period of the same symbol whose
    `column` was larger than at the firing, float noise aside (null when it is the largest in
    the loaded history); for `minutes`, `largest_since_ts` too, that minute bar's close (ISO
    8601 UTC, as `ts`)."""
    found = prior_larger(at.cond.get_column(column), at.pos - at.idx, at.pos, margin=TOLERANCE)
    since = [at.gather("session", found).alias("largest_since")]
    if minutes:
        ts = at.gather("ts", found).dt.convert_time_zone("UTC").dt.strftime(ISO_UTC)
        since.append(ts.alias("largest_since_ts"))
    return fired.with_columns(since)
