"""A `BarBook`'s closed minute bars, and what of them it has still to emit.

Held: the closed minute bars of the sessions the book keeps (the current and the previous session:
every session on or after the one before the latest closed session), one frame per minute, so that
late ticks and re-sent provider bars can correct a minute and its session bar; the keys of the bars
stored since the last `emit`; the sessions whose bar was emitted, and of those the symbols whose
minutes changed since (their session bar is emitted again). A session's bar is made of its
regular-hours minutes when the session has closed (`close_delay`, the book's session close delay,
after its close), unless a restart's store holds it already (`mark_emitted`: a symbol's bar of it)
and none of the symbol's minutes changed since the restart began (`track`: the journal's, or the
broker's first batches, taken in before that first close): a bar the minutes changed is emitted
built again, as a correction is, when it differs from the stored one.
`forget` drops the sessions the book no longer keeps.

With `hold` (the daemon's), the bar of a symbol whose minutes look cut short at the close
(`monitor.core.silences`: a feed down through the close) is held back, not emitted: it would
close at the price of when the feed went down, and the daily rules fire on it. It is emitted
once minutes that came late (a feed's REST backfill after it reconnects) make it whole, and
refused (`session_cut_short`, in `refused`) if the session is forgotten first. A symbol in
`exempt` (halted: its prints stop at the halt, and its last one is its close) is not held.

Why apart from `monitor.core.bars`: the book decides which bars close and merges ticks and
provider bars into them; this is where they go once closed, and how they come out again as
minute and session bars. It has its own state, which the book owns (its `_closed`) and never
looks into; `monitor.core.bar_state` saves and restores its `minutes` and `done`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.book_frames import KEYS, STATE_SCHEMA, combine, session_bars
from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, TS, Rejection, empty
from monitor.core.sessions import Sessions
from monitor.core.silences import cut_short_in

_MINUTE = dt.timedelta(minutes=1)
# What `held` holds, as a frame (a saved state's, `monitor.core.bar_state`).
HELD_SCHEMA: dict[str, pl.DataType] = {
    "session": pl.Date(),
    "symbol": pl.String(),
    "why": pl.String(),
}

# Minutes left with no bar by cancels (`take_removed`).
REMOVED_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "start": TS}


class ClosedMinutes:
    """Closed minute bars by session and start (STATE_SCHEMA frames), and what to emit."""

    def __init__(
        self,
        sessions: Sessions,
        close_delay: dt.timedelta,
        *,
        hold: bool = False,
        exempt: set[str] | None = None,
    ) -> None:
        self._sessions = sessions
        self._close_delay = close_delay
        self.hold = hold
        self.exempt = exempt if exempt is not None else set()  # (the engine's halted symbols)
        # session -> symbol -> why: session bars held back as cut short (see the module)
        self.held: dict[dt.date, dict[str, str]] = {}
        # held bars of sessions forgotten, as HELD_SCHEMA rows (`take_refused`)
        self.refused: list[tuple[dt.date, str, str]] = []
        self.counts: dict[str, int] = {}  # "session_held", "session_released"
        self.minutes: dict[dt.date, dict[dt.datetime, pl.DataFrame]] = {}
        self.done: set[dt.date] = set()  # sessions whose bar was emitted
        self._pending: list[pl.DataFrame] = []  # (symbol, start, session) to emit
        self.removed: list[pl.DataFrame] = []  # (symbol, start) left with no bar (`emit`)
        self._dirty: dict[dt.date, list[pl.Series]] = {}  # symbols of emitted sessions
        # session -> symbols whose bars a restart's store holds: not emitted at the close
        self._emitted_before: dict[dt.date, pl.DataFrame] = {}
        # session -> symbols whose regular minutes changed since `track` (a restart), until
        # the sessions of `_emitted_before` are emitted; None: not tracking
        self._touched: dict[dt.date, list[pl.Series]] | None = None

    def stored(self, keys: pl.DataFrame) -> pl.DataFrame:
        """Closed minute bars of every (session, start) that `keys` touches."""
        parts = [
            self.minutes[session][start]
            for session, start in keys.select("session", "start").unique().iter_rows()
            if start in self.minutes.get(session, {})
        ]
        return pl.concat(parts) if parts else empty(STATE_SCHEMA)

    def merge(self, bars: pl.DataFrame) -> None:
        """Fold aggregated bars (with session) into the closed minute bars."""
        stored = self.stored(bars)
        self.store(combine(pl.concat([stored, bars])) if stored.height else bars, bars)

    def store(self, merged: pl.DataFrame, changed: pl.DataFrame) -> None:
        """Write per-minute frames back; queue `changed` to emit; mark emitted sessions dirty."""
        for (session, start), part in merged.partition_by("session", "start", as_dict=True).items():
            self.minutes.setdefault(session, {})[start] = part
        self._changed(changed)

    def replace(self, keys: pl.DataFrame, bars: pl.DataFrame) -> None:
        """Put `bars` (STATE_SCHEMA) in place of the bars of `keys` (symbol, start, session,
        regular), which they may lack: a minute left with no trade (its cancel) has no bar.
        Queued to emit and marked dirty as `store` does, the keys without a bar too (their
        session bar is built again without them)."""
        for (session, start), part in keys.partition_by("session", "start", as_dict=True).items():
            minutes = self.minutes.get(session, {})
            kept = minutes.get(start, empty(STATE_SCHEMA)).join(part, on=KEYS, how="anti")
            new = bars.filter((pl.col("session") == session) & (pl.col("start") == start))
            whole = pl.concat([kept, new.select(kept.columns)])
            if whole.height:
                self.minutes.setdefault(session, {})[start] = whole
            else:
                minutes.pop(start, None)
                if not minutes:  # (a session with no minute left has no bar: see `emit`)
                    self.minutes.pop(session, None)
        self._changed(keys.select("symbol", "start", "session", "regular"))

    def _changed(self, changed: pl.DataFrame) -> None:
        """Queue `changed` (symbol, start, session, regular) to emit; mark emitted sessions
        dirty (and, tracking, the symbols touched)."""
        self._pending.append(changed.select("symbol", "start", "session"))
        redo = changed.filter(pl.col("regular") & pl.col("session").is_in(sorted(self.done)))
        for (session,), part in redo.partition_by("session", as_dict=True).items():
            self._dirty.setdefault(session, []).append(part["symbol"])
        if self._touched is not None:
            new = changed.filter(pl.col("regular") & ~pl.col("session").is_in(sorted(self.done)))
            for (session,), part in new.partition_by("session", as_dict=True).items():
                self._touched.setdefault(session, []).append(part["symbol"])

    def emit(self, now: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The minute bars stored since the last call (MINUTE_SCHEMA), and the session bars
        due at `now` (DAILY_SCHEMA): of the sessions closed by then, and again those of the
        symbols whose minutes changed since their session's bar was emitted."""
        minute = self._emit_minutes()
        daily: list[pl.DataFrame] = []
        for session in sorted(self.minutes):
            if session in self.done:
                symbols = self._dirty.pop(session, None)
                if symbols:
                    minutes = self._regular(session, pl.concat(symbols))
                    daily.append(self._held_back(session, minutes, at_close=False))
            elif self._sessions.close_of(session) + self._close_delay <= now:
                minutes = self._regular(session, None)
                stored = self._emitted_before.pop(session, None)  # (a restart's: mark_emitted)
                if stored is not None:  # (those the store holds are not emitted again)
                    daily.append(self._changed_since(session, minutes, stored))
                    kept = stored.get_column("symbol").implode()
                    minutes = minutes.filter(~pl.col("symbol").is_in(kept))
                daily.append(self._held_back(session, minutes, at_close=True))
                self.done.add(session)
        if not self._emitted_before:
            self._touched = None
        day = pl.concat(daily).sort("symbol", "session") if daily else empty(DAILY_SCHEMA)
        return minute, day

    def track(self) -> None:
        """From now (a restart, before its saved state and journal are taken up) note the
        symbols whose minutes change, so that `mark_emitted` bars they change are built again."""
        self._touched = {}

    def mark_emitted(self, stored: pl.DataFrame) -> None:
        """Take the bars of `stored` (DAILY_SCHEMA) as emitted (see `BarBook.mark_emitted`),
        but those whose minutes changed since `track`, if they differ from the stored bar."""
        for (session,), part in stored.partition_by("session", as_dict=True).items():
            self._emitted_before[session] = part.select(list(DAILY_SCHEMA))
        if not self._emitted_before:
            self._touched = None

    def _changed_since(
        self, session: dt.date, minutes: pl.DataFrame, stored: pl.DataFrame
    ) -> pl.DataFrame:
        """The bars of `session`, built of `minutes`, of the symbols of `stored` whose minutes
        changed since `track` and that differ from their stored bar (a correction of it)."""
        touched = (self._touched or {}).pop(session, None)
        if not touched:
            return empty(DAILY_SCHEMA)
        symbols = pl.concat(touched).unique().implode()
        built = session_bars(minutes.filter(pl.col("symbol").is_in(symbols)), session)
        return built.join(stored, on=list(DAILY_SCHEMA), how="anti", nulls_equal=True)

    def frame(self) -> pl.DataFrame:
        """Every closed minute bar held (MINUTE_SCHEMA), by symbol and start."""
        parts = [frame for minutes in self.minutes.values() for frame in minutes.values()]
        if not parts:
            return empty(MINUTE_SCHEMA)
        return pl.concat(parts).select(list(MINUTE_SCHEMA)).sort(KEYS)

    def take_refused(self) -> pl.DataFrame:
        """The held session bars refused since the last call (see the module), HELD_SCHEMA."""
        refused, self.refused = self.refused, []
        return pl.DataFrame(refused, schema=HELD_SCHEMA, orient="row")

    def forget(self, keep: dt.date) -> None:
        """Drop the sessions before `keep`; bars still held of them are refused."""
        for old in [s for s in self.minutes if s < keep]:
            del self.minutes[old]
            self._dirty.pop(old, None)
        for old in sorted(s for s in self.held if s < keep):
            self.refused += [(old, *held) for held in sorted(self.held.pop(old).items())]
        self.done = {s for s in self.done if s >= keep}
        self._emitted_before = {s: b for s, b in self._emitted_before.items() if s >= keep}
        if self._touched is not None:
            self._touched = {s: t for s, t in self._touched.items() if s >= keep}

    def _emit_minutes(self) -> pl.DataFrame:
        """The bars of the keys queued; those left with no bar (`replace`: every trade of
        the minute cancelled) go to `removed`."""
        if not self._pending:
            return empty(MINUTE_SCHEMA)
        keys = pl.concat(self._pending).unique()
        self._pending = []
        bars = self.stored(keys).join(keys.select(KEYS), on=KEYS, how="semi")
        gone = keys.select(KEYS).join(bars, on=KEYS, how="anti")
        if gone.height:
            self.removed.append(gone)
        return bars.select(list(MINUTE_SCHEMA)).sort(KEYS)

    def take_removed(self) -> pl.DataFrame:
        """The minutes (symbol, start) emitted before and left with no bar since the last
        call: a bar emitted of them no longer stands (see `BarBook.take_back`)."""
        removed, self.removed = self.removed, []
        return pl.concat(removed).unique() if removed else empty(REMOVED_SCHEMA)

    def _held_back(
        self, session: dt.date, regular: pl.DataFrame, *, at_close: bool
    ) -> pl.DataFrame:
        """The session bars of `session` to emit of `regular` (its regular-hours minutes of the
        symbols due), less those held back: of the symbols whose minutes look cut short (see
        the module), judged at the close and, of those held, again as their minutes change (a
        bar emitted at the close is never held after: later minutes make a bar corrected, not
        cut short). A bar held and whole now is released (emitted)."""
        bars = session_bars(regular, session)
        before = self.held.get(session, {})
        if not self.hold or bars.is_empty() or not (at_close or before):
            return bars
        symbols = bars.get_column("symbol")
        if not at_close:  # (of those held only)
            symbols = symbols.filter(symbols.is_in(list(before)))
        minutes = regular.filter(pl.col("symbol").is_in(symbols.implode()))
        close = self._sessions.close_of(session)
        times = minutes.select(
            "symbol",
            pl.lit(session).alias("day"),
            pl.col("start").alias("at"),
            (pl.col("start") + _MINUTE).alias("end"),
            pl.lit(self._sessions.open_of(session), TS).alias("open"),
            pl.lit(close, TS).alias("close"),
        )
        cut = {
            symbol: why
            for symbol, why in cut_short_in(times).get(session, {}).items()
            if symbol not in self.exempt
        }
        released = [s for s in before if s in set(symbols.to_list()) and s not in cut]
        held = {**{s: w for s, w in before.items() if s not in released}, **cut}
        self._count("session_held", len(cut.keys() - before.keys()))
        self._count("session_released", len(released))
        if held:
            self.held[session] = held
        else:
            self.held.pop(session, None)
        return bars.filter(~pl.col("symbol").is_in(list(cut))) if cut else bars

    def _count(self, what: str, n: int) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + n

    def _regular(self, session: dt.date, symbols: pl.Series | None) -> pl.DataFrame:
        """The regular-hours minutes of `session` of every symbol (or of `symbols`)."""
        bars = pl.concat(list(self.minutes[session].values())).filter("regular")
        if symbols is not None:
            bars = bars.filter(pl.col("symbol").is_in(symbols.implode()))
        return bars


def refusals(cut_short: pl.DataFrame, daily: pl.DataFrame) -> list[Rejection]:
    """The held session bars given up (HELD_SCHEMA rows: `take_refused`) as rejections
    (`session_cut_short`), but of those whose symbol has a bar of that session in `daily` all
    the same (a provider's)."""
    if cut_short.is_empty():
        return []
    refused = cut_short.join(daily, on=["symbol", "session"], how="anti")
    return [
        Rejection(
            "session_cut_short",
            symbol,
            f"{why}; no later minutes made it whole: its session bar is not built",
        )
        for symbol, why in refused.select("symbol", "why").iter_rows()
    ]


def still_held(
    held: dict[dt.date, dict[str, str]], daily: pl.DataFrame
) -> dict[dt.date, dict[str, str]]:
    """`held` (session -> symbol -> why) less the symbols with a bar of that session in
    `daily` all the same (a provider's)."""
    if not held:
        return held
    keys = pl.DataFrame(
        [(day, symbol) for day, bars in held.items() for symbol in bars],
        schema={"session": pl.Date(), "symbol": pl.String()},
        orient="row",
    )
    for day, symbol in keys.join(daily, on=["symbol", "session"], how="semi").rows():
        del held[day][symbol]
    return {day: bars for day, bars in held.items() if bars}
