"""Bad prints: a price more than `max_jump` times (or less than 1/`max_jump` of) its symbol's
reference price is rejected (`bad_print`).

The check runs inside the bar builder, on the prints it takes but for this check: a print it
refuses for its own reason (a bad or missing value, outside the session, a duplicate, a late
tick) keeps that reason, never counts toward a new level and is never a reference. The
reference is the latest price the engine accepted for the symbol; when its feed takes trades
back (a cancel, a correction: `retake`), the latest of its trades still standing. A symbol with
no reference yet (no history, first prints of the day) is checked against the median of its
prints in the batch when it has three or more.

A print can only be wrong against a reference that is right: when `confirm` distinct prints in
a row are out of band of the reference but agree with each other (within `max_jump` of the first
of them), the market is at a new level, or the reference was itself a bad print that got in.
The last of them is accepted and becomes the reference, and the reset is reported
(`take_resets`). Copies of one print (the same trade id, or the same ts, price and size; the
same minute of a provider's bars) count once, so a bad print delivered five times is still one
print. So one wrong print costs one rejection (each copy is rejected too), and a wrong reference
costs `confirm - 1` rejections, never a symbol blocked for good (across restarts included,
where the reference comes from the stored daily closes).

Session (daily) bars are not checked, only noted as references. A bad print is one trade; a
session bar is a provider's summary of a whole session, closed on the official closing price,
and a provider corrects a wrong one by sending it again (an upsert). Ten times the last close
on such a bar is a corporate action (a reverse split) or a real move far more often than an
error, and rejecting it would lose that session, and `confirm - 1` more, from the history that
every daily rule reads (confirming after fewer bars would still lose the day of the move).
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


class _Run(NamedTuple):
    """Distinct prints of a symbol in a row out of band of its reference: the first one's
    price, and their keys."""

    first: float
    keys: set[int]


class PriceCheck:
    """The reference prices of a universe and the bad-print screen against them."""

    def __init__(self, max_jump: float, confirm: int, history: Callable[[], pl.DataFrame]) -> None:
        self.max_jump = max_jump
        self.confirm = confirm
        self._history = history  # daily bars: the first reference of each symbol
        self._reference: pl.DataFrame | None = None  # symbol, ref
        self._runs: dict[str, _Run] = {}
        self._resets: list[Reset] = []

    def screen(self, prints: pl.DataFrame) -> pl.Series:
        """Per row of `prints` (symbol, price, key: the same for copies of one print; in arrival
        order), the reference it was held to when it is a bad print, else null. Updates the
        runs of out-of-band prints; a run that reaches `confirm` accepts its last print."""
        none = pl.Series("held", [None] * prints.height, dtype=pl.Float64)
        # Eager calls: on a batch this size a lazy plan costs more to optimise than to run.
        joined = prints.join(self._references(), on="symbol", how="left", maintain_order="left")
        if joined.get_column("ref").null_count():  # (symbols new to the engine)
            batch_median = pl.when(pl.len().over("symbol") >= 3).then(
                pl.col("price").median().over("symbol")
            )
            joined = joined.with_columns(pl.coalesce("ref", batch_median).alias("ref"))
        far = self._out_of_band(pl.col("price"), pl.col("ref")).fill_null(False)
        flags = joined.select(far).to_series()
        if not flags.any() and not self._runs:
            return none
        # Symbols with a print out of band, or a run under way: their prints in order.
        watched = set(joined.filter(flags).get_column("symbol").to_list()) | set(self._runs)
        rows = joined.with_row_index("row").filter(pl.col("symbol").is_in(list(watched)))
        held: list[float | None] = none.to_list()
        replaced: dict[str, float] = {}  # (a reset in this batch: later prints are held to it)
        for row, symbol, value, key, reference in rows.select(
            "row", "symbol", "price", "key", "ref"
        ).iter_rows():
            reference = replaced.get(symbol, reference)
            bad, reset = self._judge(symbol, value, key, reference)
            if bad:
                held[row] = reference
            if reset:
                replaced[symbol] = value
        return pl.Series("held", held, dtype=pl.Float64)

    def _judge(
        self, symbol: str, value: float, key: int, reference: float | None
    ) -> tuple[bool, bool]:
        """(whether one print of a watched symbol is bad, whether it became the reference)."""
        run = self._runs.get(symbol)
        if reference is None or not self._far(value, reference):
            self._runs.pop(symbol, None)
            return False, False
        if run is None or self._far(value, run.first):  # (out of band of the run too: a new one)
            run = self._runs[symbol] = _Run(value, set())
        run.keys.add(key)  # (a copy of a print of the run adds nothing)
        if len(run.keys) < self.confirm:
            return True, False
        del self._runs[symbol]
        self._resets.append(Reset(symbol, reference, value, len(run.keys)))
        self._replace(pl.DataFrame({"symbol": [symbol], "ref": [value]}))
        return False, True

    def note(self, accepted: pl.DataFrame, price: str, order: str) -> None:
        """The latest accepted price of each symbol of `accepted` becomes its reference."""
        if accepted.is_empty():
            return
        latest = (
            accepted.filter(pl.col(price) > 0)
            .group_by("symbol")
            .agg(pl.col(price).sort_by(order).last().alias("ref"))
        )
        if latest.height:
            self._replace(latest)

    def drop_prints(self, prints: pl.DataFrame) -> None:
        """Prints (symbol, key) their feed took back: a run of out-of-band prints no longer
        counts them, so that busted prints rejected, then cancelled, confirm no new level."""
        for symbol, key in prints.iter_rows():
            run = self._runs.get(symbol)
            if run is not None:
                run.keys.discard(key)
                if not run.keys:
                    del self._runs[symbol]

    def retake(self, symbols: list[str], latest: pl.DataFrame) -> None:
        """Trades of `symbols` were taken back by their feed (cancelled or corrected): each
        one's reference is its latest trade still standing (`latest`: symbol, price), else its
        stored daily close, else none; a run of out-of-band prints under way starts over (it
        was judged against a price that may have been the busted one)."""
        for symbol in symbols:
            self._runs.pop(symbol, None)
        closes = _last_closes(self._history().filter(pl.col("symbol").is_in(symbols)))
        kept = self._references().filter(~pl.col("symbol").is_in(symbols))
        refs = latest.select("symbol", pl.col("price").alias("ref"))
        fallback = closes.join(refs, on="symbol", how="anti")
        self._reference = pl.concat([kept, fallback, refs], how="vertical_relaxed")

    def take_resets(self) -> list[Reset]:
        """The references replaced since the last call."""
        resets, self._resets = self._resets, []
        return resets

    def _references(self) -> pl.DataFrame:
        """symbol, ref: from the stored daily closes until prints replace them."""
        if self._reference is None:
            self._reference = _last_closes(self._history())
        return self._reference

    def _replace(self, latest: pl.DataFrame) -> None:
        """`latest` (symbol, ref) replaces the references of its symbols."""
        both = pl.concat([self._references(), latest], how="vertical_relaxed")
        self._reference = both.unique("symbol", keep="last")

    def _far(self, value: float, reference: float) -> bool:
        ratio = value / reference
        return ratio > self.max_jump or ratio < 1.0 / self.max_jump

    def _out_of_band(self, value: pl.Expr, reference: pl.Expr) -> pl.Expr:
        ratio = value / reference
        return (ratio > self.max_jump) | (ratio < 1.0 / self.max_jump)


def _last_closes(daily: pl.DataFrame) -> pl.DataFrame:
    """symbol, ref: each symbol's latest close among daily bars."""
    return daily.group_by("symbol").agg(pl.col("close").sort_by("session").last().alias("ref"))
