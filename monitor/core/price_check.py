"""Bad prints: a price more than `max_jump` times (or less than 1/`max_jump` of) its symbol's
reference price is rejected (`bad_print`).

The reference is the latest price the engine accepted for the symbol: a print the bar builder
then refused (outside the session, a duplicate) does not move it. A symbol with no reference yet
(no history, first prints of the day) is checked against the median of its prints in the batch
when it has three or more. A print can only be wrong against a reference that is right: when
`confirm` prints in a row are out of band of the reference but agree with each other (within
`max_jump` of the first of them), the market is at a new level, or the reference was itself a
bad print that got in. The last of them is accepted and becomes the reference, and the reset
is reported (`take_resets`). So one wrong print costs one rejection, and a wrong reference costs
`confirm - 1` rejections, never a symbol blocked for good (across restarts included, where the
reference comes from the stored daily closes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import polars as pl


class Reset(NamedTuple):
    """A reference price replaced after `prints` agreeing prints out of band of it."""

    symbol: str
    old: float
    new: float
    prints: int


class PriceCheck:
    """The reference prices of a universe and the bad-print screen against them."""

    def __init__(self, max_jump: float, confirm: int, history: Callable[[], pl.DataFrame]) -> None:
        self.max_jump = max_jump
        self.confirm = confirm
        self._history = history  # daily bars: the first reference of each symbol
        self._reference: pl.DataFrame | None = None  # symbol, ref
        self._runs: dict[str, tuple[int, float]] = {}  # symbol -> (prints out of band, first)
        self._resets: list[Reset] = []

    def screen(self, frame: pl.DataFrame, price: str) -> tuple[pl.Series, pl.Series]:
        """Per row of `frame` (in arrival order), whether it is a bad print, and the reference
        it was held to. Updates the runs of out-of-band prints; a run that reaches `confirm`
        accepts its last print."""
        if self._reference is None:
            daily = self._history()
            self._reference = daily.group_by("symbol").agg(
                pl.col("close").sort_by("session").last().alias("ref")
            )
        # Eager calls: on a batch this size a lazy plan costs more to optimise than to run.
        joined = frame.select("symbol", price).join(
            self._reference, on="symbol", how="left", maintain_order="left"
        )
        if joined.get_column("ref").null_count():  # (symbols new to the engine)
            batch_median = pl.when(pl.len().over("symbol") >= 3).then(
                pl.col(price).median().over("symbol")
            )
            joined = joined.with_columns(pl.coalesce("ref", batch_median).alias("ref"))
        far = self._out_of_band(pl.col(price), pl.col("ref")).fill_null(False)
        flags = joined.select(far).to_series()
        refs = joined.get_column("ref")
        if not flags.any() and not self._runs:
            return flags, refs
        # Symbols with a print out of band, or a run under way: their prints in order.
        watched = set(joined.filter(flags).get_column("symbol").to_list()) | set(self._runs)
        rows = joined.with_row_index("row").filter(pl.col("symbol").is_in(list(watched)))
        out, held = flags.to_list(), refs.to_list()
        replaced: dict[str, float] = {}  # (a reset in this batch: later prints are held to it)
        for row, symbol, value, reference in rows.select("row", "symbol", price, "ref").iter_rows():
            if value is None or value <= 0 or value != value:  # (refused elsewhere)
                continue
            held[row] = replaced.get(symbol, reference)
            bad, reset = self._judge(symbol, value, held[row])
            out[row] = bad
            if reset:
                replaced[symbol] = value
        return pl.Series(out, dtype=pl.Boolean), pl.Series(held, dtype=pl.Float64)

    def _judge(self, symbol: str, value: float, reference: float | None) -> tuple[bool, bool]:
        """(whether one print of a watched symbol is bad, whether it became the reference)."""
        count, first = self._runs.get(symbol, (0, value))
        if reference is None or not self._far(value, reference):
            self._runs.pop(symbol, None)
            return False, False
        if count and self._far(value, first):  # (out of band, and of the run too: a new run)
            count, first = 0, value
        count += 1
        if count < self.confirm:
            self._runs[symbol] = (count, first)
            return True, False
        self._runs.pop(symbol, None)
        self._resets.append(Reset(symbol, reference, value, count))
        self._replace(pl.DataFrame({"symbol": [symbol], "ref": [value]}))
        return False, True

    def note(self, accepted: pl.DataFrame, price: str, order: str) -> None:
        """The latest accepted price of each symbol of `accepted` becomes its reference."""
        if self._reference is None or accepted.is_empty():
            return
        latest = (
            accepted.filter(pl.col(price) > 0)
            .group_by("symbol")
            .agg(pl.col(price).sort_by(order).last().alias("ref"))
        )
        if latest.height:
            self._replace(latest)

    def take_resets(self) -> list[Reset]:
        """The references replaced since the last call."""
        resets, self._resets = self._resets, []
        return resets

    def _replace(self, latest: pl.DataFrame) -> None:
        """`latest` (symbol, ref) replaces the references of its symbols."""
        assert self._reference is not None
        both = pl.concat([self._reference, latest], how="vertical_relaxed")
        self._reference = both.unique("symbol", keep="last")

    def _far(self, value: float, reference: float) -> bool:
        ratio = value / reference
        return ratio > self.max_jump or ratio < 1.0 / self.max_jump

    def _out_of_band(self, value: pl.Expr, reference: pl.Expr) -> pl.Expr:
        ratio = value / reference
        return (ratio > self.max_jump) | (ratio < 1.0 / self.max_jump)
