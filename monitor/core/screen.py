"""What the engine refuses of a feed's rows before its bar builder sees them: symbols outside
the configured universe (`unknown_symbol`), and prints of a halted symbol from the halt on
(`halted`: a halted name cannot rally in the feed).

A halt rejects what happened from when it began (the provider's time of its status message;
without one, the engine's clock when it was reported): a print stamped before it and reported
late, a backfill's minutes of an earlier session, or the bar of a session that closed before
it are taken. A halt reported before the engine has a clock, with no time, rejects every
print of the symbol until it resumes.

Why apart from `monitor.core.engine`: the engine takes rows in and runs the rules; which rows a
feed may give it is a policy of its own, with its own state (the halts and since when).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.model import TS, Rejection
from monitor.core.sessions import Sessions


class Screen:
    """The universe and the halts: `apply` to each batch of ticks or bars."""

    def __init__(self, sessions: Sessions, universe: frozenset[str] | None) -> None:
        self.sessions = sessions
        self.universe = universe
        self.halted: set[str] = set()  # (the bar builder's `exempt`: changed in place)
        self._since: dict[str, dt.datetime] = {}  # when each halt began, when known
        # The sets as polars values, built when they change, not for every batch (a market
        # under many halts: 500 halted symbols cost a 10,000-tick batch 2 ms more each time).
        self._known = None if universe is None else pl.Series(sorted(universe)).implode()
        self._halts: tuple[pl.Expr, pl.Expr | None] | None = None

    def set_halted(self, symbol: str, halted: bool, at: dt.datetime | None) -> None:
        """A trading halt (or its end) reported by a feed, `at` when (None: not known)."""
        if halted:
            self.halted.add(symbol)
            if at is not None and symbol not in self._since:
                self._since[symbol] = at
        else:
            self.halted.discard(symbol)
            self._since.pop(symbol, None)
        self._halts = None

    def apply(self, frame: pl.DataFrame, price: str, rejections: list[Rejection]) -> pl.DataFrame:
        """`frame` (ticks, minute or session bars) less the rows refused, which go into
        `rejections` with their symbol and `price` column."""
        if self.halted:
            stopped, since = self._halts_now()
            if since is not None:
                stopped &= since.is_null() | (self._time_of(frame) >= since)
            rejections += _refused(frame, stopped, "halted", price)
            frame = frame.filter(~stopped)
        if self._known is not None:
            unknown = ~pl.col("symbol").is_in(self._known)
            rejections += _refused(frame, unknown, "unknown_symbol", price)
            frame = frame.filter(~unknown)
        return frame

    def known(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame`'s rows of symbols in the universe (every row without one), refusing none."""
        if self._known is None:
            return frame
        return frame.filter(pl.col("symbol").is_in(self._known))

    def _time_of(self, frame: pl.DataFrame) -> pl.Expr:
        """When a row happened, for a halt: a tick's `ts`, a minute bar's start (the minute
        the halt began in has the trades before it), a session bar's close (a halt after the
        close leaves the session's bar alone)."""
        if "ts" in frame.columns:
            return pl.col("ts")
        if "start" in frame.columns:
            return pl.col("start")
        return self.sessions.close_of_expr(pl.col("session"))

    def _halts_now(self) -> tuple[pl.Expr, pl.Expr | None]:
        """Per row, whether its symbol is halted, and when its halt began (null: unknown;
        None when no halt's time is known)."""
        if self._halts is None:
            stopped = pl.col("symbol").is_in(pl.Series(sorted(self.halted)).implode())
            since = None
            if self._since:
                symbols = pl.Series(list(self._since), dtype=pl.String)
                times = pl.Series(list(self._since.values()), dtype=TS)
                since = pl.col("symbol").replace_strict(
                    symbols, times, default=None, return_dtype=TS
                )
            self._halts = (stopped, since)
        return self._halts


def _refused(frame: pl.DataFrame, mask: pl.Expr, reason: str, price: str) -> list[Rejection]:
    return [
        Rejection(reason=reason, symbol=s, raw=f"{s} {p}")
        for s, p in frame.filter(mask).select("symbol", price).iter_rows()
    ]
