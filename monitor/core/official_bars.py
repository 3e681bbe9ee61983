"""A provider's session bar outranks one built from trades.

A feed may send both trades (or minute bars) and the provider's own session bars (Alpaca's
daily bars, a replay feed's history). The provider's bar is the consolidated tape's: every
venue, the official open and close, late reports and corrections applied. The bar builder's
is made of what this feed saw. So once a provider's bar of a symbol and session is in, a bar
the builder makes of that session later (at the close, or again after a late tick or an
updated minute bar) does not replace it: it is left out and counted
(`provider_session_bar_kept`). A provider's bar that comes after the built one replaces it,
as any later bar does.

Kept: the (symbol, session) of the provider's bars of the sessions the bar builder may still
build (the session under way, the last closed one and the one before: `BarBook.oldest_kept`),
saved with its state across a restart.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.model import empty
from monitor.core.sessions import Sessions

KEY = ["symbol", "session"]
SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "session": pl.Date()}


class OfficialBars:
    """The keys of a provider's session bars the bar builder must not replace."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self.keys = empty(SCHEMA)
        self.kept = 0  # bars built from trades left out for a provider's

    def note(self, bars: pl.DataFrame, now: dt.datetime | None) -> None:
        """Remember the provider's session `bars` (DAILY_SCHEMA, taken in) of the sessions the
        bar builder may still build at `now` (without a clock: from the session before the
        latest of `bars`). A history of years costs one comparison per bar."""
        if bars.is_empty():
            return
        floor = self._floor(bars, now)
        keys, recent = self.keys, bars.select(KEY)
        if floor is not None:  # (and those of older sessions go: a replay's steps move on)
            keys, recent = (k.filter(pl.col("session") >= floor) for k in (keys, recent))
        if recent.height:
            self.keys = pl.concat([keys, recent]).unique(maintain_order=True)

    def _floor(self, bars: pl.DataFrame, now: dt.datetime | None) -> dt.date | None:
        last = self._sessions.last_closed(now) if now is not None else None
        if last is None:
            last = bars.get_column("session").max()  # type: ignore[assignment]
            assert isinstance(last, dt.date)
        return self._sessions.shift(last, -1)

    def without_official(self, built: pl.DataFrame, oldest: dt.date | None) -> pl.DataFrame:
        """`built` (session bars the bar builder made) less those of a provider's bar; keys of
        sessions before `oldest` (the oldest the builder still keeps) are forgotten."""
        if self.keys.is_empty():
            return built
        if oldest is not None:
            self.keys = self.keys.filter(pl.col("session") >= oldest)
        if built.is_empty() or self.keys.is_empty():
            return built
        left = built.join(self.keys, on=KEY, how="anti", maintain_order="left")
        self.kept += built.height - left.height
        return left

    def restore(self, keys: pl.DataFrame) -> None:
        """Continue from the keys a restart's saved state holds."""
        self.keys = keys.select(KEY).cast(SCHEMA)  # type: ignore[arg-type]
