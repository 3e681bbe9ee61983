"""Tick batches -> one-minute bars -> session (daily) bars, streaming and vectorised.

`BarBook` takes TICK_SCHEMA batches (and provider MINUTE_SCHEMA bars) and the passing of time:
`advance(now)` closes minute bars `close_delay_s` after their end and a session's bar
`close_delay_s` after its close (together with its last minute), and re-emits bars that late ticks
or re-sent provider bars changed. Every step is a polars pass over the whole batch.

What is kept in memory:
- open minute bars (those not yet closed by the clock): one row per symbol and minute;
- closed minute bars of the sessions on or after the one before the latest closed session (i.e. the
  current and the previous session), per session and minute, so late ticks and re-sent bars can
  correct a minute and its session bar; older ones are dropped, and ticks or bars for them are
  rejected "late_tick" / "late_bar";
- duplicate keys (64-bit hashes of (symbol, id), or of (symbol, ts, price, size) when id is null) of
  accepted ticks, per minute, for open minutes and minutes closed in the last DEDUP_KEEP_S. A
  duplicate older than that is not recognised (a late duplicate is then counted twice).
- the keys still to emit and the sessions whose bar was emitted (within the same window).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Literal

import msgspec
import polars as pl

from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, TICK_SCHEMA, TS, Rejection, empty
from monitor.core.sessions import NEW_YORK, Sessions

DEDUP_KEEP_S = 300.0
EXTENDED_HOURS = (4, 20)  # New York hours [from, to) accepted with extended_hours=True
_MINUTE = dt.timedelta(minutes=1)
_BAR_SPAN = dt.timedelta(microseconds=59_999_999)
_KEYS = ["symbol", "start"]
_OHLCV = ["open", "high", "low", "close", "volume"]
# Minute bars in the book: MINUTE_SCHEMA plus what merging needs.
_STATE_SCHEMA: dict[str, pl.DataType] = {
    **MINUTE_SCHEMA,
    "first_ts": TS,
    "last_ts": TS,
    "session": pl.Date(),
    "regular": pl.Boolean(),
}
_STATE = list(_STATE_SCHEMA)
_MINUTE_COLS = list(MINUTE_SCHEMA)


class ClosedBars(msgspec.Struct, frozen=True):
    """Bars closed or corrected by one `advance`: MINUTE_SCHEMA and DAILY_SCHEMA frames."""

    minute: pl.DataFrame
    daily: pl.DataFrame


class BarBook:
    """Streaming minute and session bars of a whole universe, from tick and bar batches.

    `late_ticks="correct"` applies a tick for an already closed minute to it and re-emits the bar
    (and its session bar when that was closed); `"reject"` rejects it. `counts` holds rejections
    and corrections by reason.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        extended_hours: bool = False,
        late_ticks: Literal["correct", "reject"] = "correct",
        close_delay_s: float = 2.0,
    ) -> None:
        self.sessions = sessions
        self.extended_hours = extended_hours
        self.late_ticks = late_ticks
        self.close_delay = dt.timedelta(seconds=close_delay_s)
        self.counts: dict[str, int] = {}
        self._calendar = sessions.frame.select(
            pl.col("session").alias("day"), "session", "open_ts", "close_ts"
        )
        self._now: dt.datetime | None = None
        self._keep_from: dt.date | None = None
        self._open = empty(_STATE_SCHEMA)
        self._closed: dict[dt.date, dict[dt.datetime, pl.DataFrame]] = {}
        self._seen: dict[dt.datetime, pl.Series] = {}
        self._pending: list[pl.DataFrame] = []  # (symbol, start, session) to emit
        self._dirty: dict[dt.date, list[pl.Series]] = {}  # symbols of emitted sessions to redo
        self._done: set[dt.date] = set()

    # -- input -----------------------------------------------------------------------------

    def ingest_ticks(self, ticks: pl.DataFrame) -> list[Rejection]:
        """Fold a tick batch into the book; returns the ticks it did not accept."""
        frame = _conform(ticks, TICK_SCHEMA).with_columns(
            start=pl.col("ts").dt.truncate("1m"), reason=_tick_problem()
        )
        frame = self._screen(frame, "late_tick")
        rejected, good = _split(frame)
        key = (
            pl.when(pl.col("id").is_not_null())
            .then(pl.struct("symbol", "id").hash(1))
            .otherwise(pl.struct("symbol", "ts", "price", "size").hash(2))
        )
        seen = [self._seen[s] for s in good["start"].unique() if s in self._seen]
        dup = ~pl.col("key").is_first_distinct()
        if seen:
            dup = dup | pl.col("key").is_in(pl.concat(seen))
        late = pl.col("start") <= self._cutoff() if self._now is not None else pl.lit(False)
        reasons = [pl.when(dup).then(pl.lit("duplicate"))]
        if self.late_ticks == "reject":
            reasons.append(pl.when(late).then(pl.lit("late_tick")))
        good = good.with_columns(key=key).with_columns(reason=pl.coalesce(reasons), late=late)
        refused, good = _split(good)
        for (start,), part in good.partition_by("start", as_dict=True).items():
            mem = self._seen.get(start)
            if mem is None:
                self._seen[start] = part["key"]
            else:
                mem.append(part["key"])
        late_bars = _aggregate(good.filter(pl.col("late")))
        if late_bars.height:
            self._count("late_tick_corrected", int(good["late"].sum()))
            self._merge_closed(late_bars)
        fresh = _aggregate(good.filter(~pl.col("late")))
        if fresh.height:
            self._open = _combine(pl.concat([self._open, fresh]))
        return self._reject(pl.concat([rejected, refused], how="diagonal"), _tick_raw())

    def ingest_minute_bars(self, bars: pl.DataFrame) -> list[Rejection]:
        """Upsert provider minute bars by (symbol, start); they count as closed at once."""
        frame = _conform(bars, MINUTE_SCHEMA).with_columns(reason=_bar_problem())
        frame = self._screen(frame, "late_bar")
        good = (
            frame.filter(pl.col("reason").is_null())
            .unique(_KEYS, keep="last", maintain_order=True)
            .with_columns(first_ts=pl.col("start"), last_ts=pl.col("start") + _BAR_SPAN)
            .select(_STATE)
        )
        if good.height:
            keys = good.select(_KEYS)
            known = self._open.join(keys, on=_KEYS, how="semi").height
            self._open = self._open.join(keys, on=_KEYS, how="anti")
            stored = self._stored(good)
            known += stored.join(keys, on=_KEYS, how="semi").height
            self._count("bar_replaced", known)
            kept = stored.join(keys, on=_KEYS, how="anti")
            self._store(pl.concat([kept, good]), good)
        return self._reject(frame.filter(pl.col("reason").is_not_null()), _bar_raw())

    # -- the clock -------------------------------------------------------------------------

    def advance(self, now: dt.datetime) -> ClosedBars:
        """Close minute and session bars that are due at `now` (timezone-aware); emit them and
        every bar corrected since the last call."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        now = now.astimezone(dt.UTC)
        if self._now is None or now > self._now:
            self._now = now
        now = self._now
        due = pl.col("start") <= self._cutoff()
        closing = self._open.filter(due)
        if closing.height:
            self._open = self._open.filter(~due)
            self._merge_closed(closing)
        minute = self._emit_minutes()
        daily: list[pl.DataFrame] = []
        for session in sorted(self._closed):
            if session in self._done:
                symbols = self._dirty.pop(session, None)
                if symbols:
                    daily.append(self._session_bars(session, pl.concat(symbols).unique()))
            elif self.sessions.close_of(session) + self.close_delay <= now:
                daily.append(self._session_bars(session, None))
                self._done.add(session)
        self._forget(now)
        day = pl.concat(daily).sort("symbol", "session") if daily else empty(DAILY_SCHEMA)
        return ClosedBars(minute=minute, daily=day)

    # -- internals -------------------------------------------------------------------------

    def _cutoff(self) -> dt.datetime:
        """Minutes starting at or before this instant are closed."""
        assert self._now is not None
        return self._now - _MINUTE - self.close_delay

    def _screen(self, frame: pl.DataFrame, late_reason: str) -> pl.DataFrame:
        """Add `session` and `regular` from `start`; flag rows outside sessions or retention."""
        local = pl.col("start").dt.convert_time_zone(NEW_YORK)
        starts = frame.select(pl.col("start").unique().drop_nulls())
        table = starts.with_columns(day=local.dt.date(), hour=local.dt.hour()).join(
            self._calendar, on="day", how="left"
        )
        regular = pl.col("start").is_between("open_ts", "close_ts", closed="left").fill_null(False)
        accept = regular
        if self.extended_hours:
            lo, hi = EXTENDED_HOURS
            accept = accept | (
                pl.col("session").is_not_null() & pl.col("hour").is_between(lo, hi - 1)
            )
        table = table.select(
            "start", pl.when(accept).then("session").alias("session"), regular=regular
        )
        out = frame.join(table, on="start", how="left", maintain_order="left")
        reasons = [
            pl.col("reason"),
            pl.when(pl.col("session").is_null()).then(pl.lit("outside_session")),
        ]
        if self._keep_from is not None:
            old = pl.col("session") < self._keep_from
            reasons.append(pl.when(old).then(pl.lit(late_reason)))
        return out.with_columns(reason=pl.coalesce(reasons))

    def _stored(self, keys: pl.DataFrame) -> pl.DataFrame:
        """Closed minute bars of every (session, start) that `keys` touches."""
        parts = [
            self._closed[session][start]
            for session, start in keys.select("session", "start").unique().iter_rows()
            if start in self._closed.get(session, {})
        ]
        return pl.concat(parts) if parts else empty(_STATE_SCHEMA)

    def _merge_closed(self, bars: pl.DataFrame) -> None:
        """Fold newly aggregated bars into the closed minute bars (and mark them to emit)."""
        self._store(_combine(pl.concat([self._stored(bars), bars])), bars)

    def _store(self, merged: pl.DataFrame, changed: pl.DataFrame) -> None:
        """Write per-minute frames back; queue `changed` keys and dirty emitted sessions."""
        for (session, start), part in merged.partition_by("session", "start", as_dict=True).items():
            self._closed.setdefault(session, {})[start] = part
        self._pending.append(changed.select("symbol", "start", "session"))
        redo = changed.filter(pl.col("regular") & pl.col("session").is_in(list(self._done)))
        for (session,), part in redo.partition_by("session", as_dict=True).items():
            self._dirty.setdefault(session, []).append(part["symbol"])

    def _emit_minutes(self) -> pl.DataFrame:
        if not self._pending:
            return empty(MINUTE_SCHEMA)
        keys = pl.concat(self._pending).unique()
        self._pending = []
        bars = self._stored(keys).join(keys.select(_KEYS), on=_KEYS, how="semi")
        return bars.select(_MINUTE_COLS).sort(_KEYS)

    def _session_bars(self, session: dt.date, symbols: pl.Series | None) -> pl.DataFrame:
        """The session bar of each symbol (all, or `symbols`) from its regular-hours minutes."""
        bars = pl.concat(list(self._closed[session].values())).filter("regular")
        if symbols is not None:
            bars = bars.filter(pl.col("symbol").is_in(symbols))
        return (
            bars.sort("start")
            .group_by("symbol")
            .agg(
                pl.lit(session).alias("session"),
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
            )
            .select(list(DAILY_SCHEMA))
        )

    def _forget(self, now: dt.datetime) -> None:
        """Drop sessions before the previous one, and duplicate keys past DEDUP_KEEP_S."""
        last = self.sessions.last_closed(now)
        keep = self.sessions.shift(last, -1) if last is not None else None
        if keep is not None:
            self._keep_from = keep
            for old in [s for s in self._closed if s < keep]:
                del self._closed[old]
                self._dirty.pop(old, None)
            self._done = {s for s in self._done if s >= keep}
        horizon = self._cutoff() - dt.timedelta(seconds=DEDUP_KEEP_S)
        for start in [s for s in self._seen if s < horizon]:
            del self._seen[start]

    def _reject(self, bad: pl.DataFrame, raw: pl.Expr) -> list[Rejection]:
        if not bad.height:
            return []
        rows = bad.select("reason", "symbol", raw.alias("raw")).rows()
        out = [Rejection(reason, symbol, text) for reason, symbol, text in rows]
        for reason, n in Counter(r.reason for r in out).items():
            self._count(reason, n)
        return out

    def _count(self, reason: str, n: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n


def _split(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with a `reason`, rows without one, minus the column)."""
    flagged = pl.col("reason").is_not_null()
    return frame.filter(flagged), frame.filter(~flagged).drop("reason")


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The batch with exactly `schema`'s columns and types."""
    if frame.schema == schema:
        return frame
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def _bad_number(col: str) -> pl.Expr:
    return ~pl.col(col).is_finite() | (pl.col(col) <= 0)


def _tick_problem() -> pl.Expr:
    missing = pl.any_horizontal(pl.col("symbol", "ts", "price", "size").is_null())
    bad_size = ~pl.col("size").is_finite() | (pl.col("size") < 0)
    return pl.coalesce(
        pl.when(missing).then(pl.lit("missing_field")),
        pl.when(_bad_number("price")).then(pl.lit("bad_price")),
        pl.when(bad_size).then(pl.lit("bad_size")),
    )


def _bar_problem() -> pl.Expr:
    bad = pl.any_horizontal(_bad_number(c) for c in ("open", "high", "low", "close"))
    bad = bad | pl.col("volume").is_null() | ~pl.col("volume").is_finite()
    bad = bad | (pl.col("volume") < 0) | (pl.col("start").dt.truncate("1m") != pl.col("start"))
    lo, hi = pl.col("low"), pl.col("high")
    bad = bad | (lo > hi) | ~pl.col("open").is_between(lo, hi) | ~pl.col("close").is_between(lo, hi)
    missing = pl.col("symbol").is_null() | pl.col("start").is_null()
    nulls = pl.any_horizontal(pl.col(_OHLCV).is_null())
    return pl.coalesce(
        pl.when(missing).then(pl.lit("missing_field")),
        pl.when(nulls | bad).then(pl.lit("bad_bar")),
    )


def _tick_raw() -> pl.Expr:
    return pl.format(
        "ts={} price={} size={} id={}", *(pl.col(c) for c in ("ts", "price", "size", "id"))
    )


def _bar_raw() -> pl.Expr:
    return pl.format("start={} o={} h={} l={} c={} v={}", pl.col("start"), *map(pl.col, _OHLCV))


def _aggregate(ticks: pl.DataFrame) -> pl.DataFrame:
    """Minute bars of accepted ticks: open/close by earliest/latest ts (ties: arrival order)."""
    price, ts = pl.col("price"), pl.col("ts")
    return (
        ticks.sort("ts", maintain_order=True)
        .group_by(_KEYS)
        .agg(
            open=price.first(),
            high=price.max(),
            low=price.min(),
            close=price.last(),
            volume=pl.col("size").sum(),
            first_ts=ts.first(),
            last_ts=ts.last(),
            session=pl.col("session").first(),
            regular=pl.col("regular").first(),
        )
        .select(_STATE)
    )


def _combine(bars: pl.DataFrame) -> pl.DataFrame:
    """Merge rows of the same (symbol, start), earlier rows first: the open of the earliest
    first tick (ties: earlier row), the close of the latest last tick (ties: later row)."""
    keyed = bars.group_by(_KEYS).len()
    if keyed.height == bars.height:
        return bars
    first, last = pl.col("first_ts"), pl.col("last_ts")
    return (
        bars.group_by(_KEYS)
        .agg(
            open=pl.col("open").get(first.arg_min()),
            high=pl.col("high").max(),
            low=pl.col("low").min(),
            close=pl.col("close").reverse().get(last.reverse().arg_max()),
            volume=pl.col("volume").sum(),
            first_ts=first.min(),
            last_ts=last.max(),
            session=pl.col("session").first(),
            regular=pl.col("regular").first(),
        )
        .select(_STATE)
    )
