"""Provider bars and ticks that came ahead of a `BarBook`'s clock, waiting for it.

A provider bar is a closed bar once its minute is over: one whose minute has not ended by the
book's clock (the last `advance`) waits for an `advance` at or after its end, which takes it
(the bar of a minute under way, from a feed that sends running bars, would otherwise close a
minute not over, and minute rules fire on it with a `ts` still to come). A provider bar from the
future (a feed with a wrong time-zone offset) would close a minute that has not happened, and
with it every minute before: one whose minute had not begun by an `advance`'s time, give or
take `FUTURE_SKEW`, is rejected by it ("future_bar", in `ClosedBars.rejected`). A bar that
waits is screened for bad prints, and in `accepted`, when it comes. (`ingest` does not know the
time: the last `advance`'s may be stale, after a simulated clock's jump, or for a restart's
journal.) A tick stamped more than `FUTURE_SKEW` after the book's clock waits in the same way
(screened, its duplicate key kept, not in `accepted`): the next `advance` takes it if its time
has come by then and rejects it ("future_tick") if not. A feed a few hours off would otherwise
build bars of minutes still to come from prices of the minute under way, and a session bar from
them. A book that never advanced has no clock: it takes every bar at once (a history in one
batch). A feed's cancel or correction of a waiting tick applies to it where it waits
(`take_back`: it leaves, or waits corrected): it is not in the book's ledger of trades yet,
and would otherwise be taken busted by the `advance`. The waiting bars are saved across a
restart (`monitor.core.bar_state`); the waiting ticks are not: they are seconds ahead at
most, or from the future.

Why apart from `monitor.core.bars`: which rows wait and which an `advance` takes or refuses is
decided by the clock alone, and reads better on its own than inside the book's ingest and
advance steps. The `ClockQueue` here only holds and sorts them; the book (which owns it, as its
`_waiting`) screens them before and takes or rejects them after.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.book_frames import KEYS, ts_lit
from monitor.core.model import TS

# A provider bar may end this long after the book's clock (the last `advance`): a bar of the
# minute under way, from a provider that sends them early, while the clock is a step behind.
FUTURE_SKEW = dt.timedelta(minutes=1)
_MINUTE = dt.timedelta(minutes=1)
_WHERE = ["symbol", "id"]  # (a trade a cancel names)


class ClockQueue:
    """Accepted provider bars (OPEN_SCHEMA) and ticks that wait for a book's clock."""

    def __init__(self) -> None:
        self.bars: list[pl.DataFrame] = []  # provider bars of minutes not over by the clock
        self.ticks: list[pl.DataFrame] = []  # accepted ticks ahead of the clock

    def hold_ticks(self, good: pl.DataFrame, clock: dt.datetime) -> pl.DataFrame:
        """`good` (accepted ticks) less those stamped more than FUTURE_SKEW after `clock`,
        which wait."""
        ahead = pl.col("ts") > ts_lit(clock + FUTURE_SKEW)
        if good.select(ahead.any()).item():
            self.ticks.append(good.filter(ahead))
            good = good.filter(~ahead)
        return good

    def hold_bars(self, good: pl.DataFrame, clock: dt.datetime) -> pl.DataFrame:
        """`good` (accepted provider bars) less those whose minute is not over by `clock`,
        which wait."""
        over = _over(clock)
        if not good.select(over.all()).item():
            self.bars.append(good.filter(~over))
            good = good.filter(over)
        return good

    def due_bars(self, now: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
        """At an `advance` to `now`: the waiting bars whose minute is over (the last of each
        key), to take, and those from the future (with their reason, "future_bar"), to
        reject; those of a minute begun and not over wait for the next `advance`."""
        waiting = pl.concat(self.bars)
        over, ahead = _over(now), _ahead(now)
        taken = waiting.filter(over).unique(KEYS, keep="last", maintain_order=True)
        future = waiting.filter(ahead).with_columns(reason=pl.lit("future_bar"))
        under_way = waiting.filter(~over & ~ahead)  # (begun, not over: the next advance)
        self.bars = [under_way] if under_way.height else []
        return taken, future

    def due_ticks(self, now: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
        """At an `advance` to `now`: the waiting ticks the clock has caught up with, and those
        still more than FUTURE_SKEW ahead of it (with their reason, "future_tick"); none
        waits on."""
        waiting, self.ticks = pl.concat(self.ticks), []
        ahead = pl.col("ts") > ts_lit(now + FUTURE_SKEW)
        future = waiting.filter(ahead).with_columns(reason=pl.lit("future_tick"))
        return waiting.filter(~ahead), future

    def take_back(self, cancels: pl.DataFrame) -> pl.DataFrame:
        """The cancels (CANCEL_SCHEMA, with `row`) whose trade waits here, with its `start`
        (the first cancel of each trade): a cancel's trade no longer waits, a correction's
        waits as the corrected trade (its id, price and size; the same time and place). A
        trade its feed takes back before the clock caught up with it is taken (or rejected)
        as corrected, or not at all, as if the feed had sent it so."""
        if not self.ticks or not cancels.height:
            return cancels.clear().with_columns(start=pl.lit(None, TS))
        waiting = pl.concat(self.ticks, how="vertical_relaxed")
        first = cancels.unique(_WHERE, keep="first", maintain_order=True)
        hits = first.join(
            waiting.select(*_WHERE, "start").unique(_WHERE, keep="first"),
            on=_WHERE,
            how="inner",
            maintain_order="left",
        )
        if not hits.height:
            return hits
        fixes = hits.select(*_WHERE, "new_id", "new_price", "new_size", named=pl.lit(True))
        joined = waiting.join(fixes, on=_WHERE, how="left", maintain_order="left")
        named = pl.col("named").fill_null(False)
        kept = joined.filter(~(named & pl.col("new_id").is_null())).with_columns(
            **{
                name: pl.when(named).then(pl.col(f"new_{name}")).otherwise(pl.col(name))
                for name in ("price", "size", "id")
            }
        )
        kept = kept.drop("new_id", "new_price", "new_size", "named")
        self.ticks = [kept] if kept.height else []
        return hits

    def ends_by(self, now: dt.datetime) -> bool:
        """Whether a waiting bar's minute is over by `now` (an `advance` then takes it)."""
        ends = [w.get_column("start").min() for w in self.bars]
        return any(start <= now - _MINUTE for start in ends)  # type: ignore[operator]


def _ahead(clock: dt.datetime) -> pl.Expr:
    """Provider bars whose minute had not begun by `clock`, give or take `FUTURE_SKEW`."""
    return pl.col("start") > ts_lit(clock + FUTURE_SKEW - _MINUTE)


def _over(clock: dt.datetime) -> pl.Expr:
    """Provider bars whose minute is over by `clock`."""
    return pl.col("start") <= ts_lit(clock - _MINUTE)
