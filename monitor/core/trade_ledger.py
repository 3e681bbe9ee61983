"""A `BarBook`'s record of the ticks it took lately, so that a trade its feed takes back (a
cancel, an error, a correction: `FeedBatch.cancels`) can be taken out of its minute bar.

A bar holds no ticks: to take one trade out of it, the bar is built again from the minute's
other trades. The ledger keeps every tick the book accepted, minute by minute (the minute it
went to; in arrival order within it: a cancel writes the minute of its trade again, not every
tick held), for minutes starting `window` or less before the book's cutoff (its latest closed
minute), and `whole_from`: the minutes starting at or after it are whole in the ledger, so
their bars can be built again from it. Older ticks go as the cutoff moves, and at most
`max_rows` are held: past that the oldest minutes go early ("cancel_ticks_dropped_early"), and
`whole_from` moves up with them. A minute a provider's bar set (`note_provider`) is never
built again from ticks: the provider's bar stands (Alpaca sends its own updated bar).

`matches` finds the trades a batch of cancels names (by symbol and id: the tick's id, which a
feed forms the same way for both, Alpaca's "exchange:trade id"), `apply` takes them out or
replaces them (a correction keeps the trade's time and place in the arrival order, so the
bar's open and close tie-breaks stay as they were), and `ticks_of` gives the ticks of the
minutes to build again. The ids taken back are remembered for the window, so the same cancel
sent twice is told from one of an unknown trade ("cancel_repeated").

Trades refused when they came are remembered for the window too (`note_rejected`: symbol,
time and id of a bad print, or of a trade its feed kept out by its sale conditions), at most
`max_rejected` of them: a correction that makes one a trade bars take is placed at the
trade's time (Alpaca's correction carries its message's time, not the trade's), and a cancel
of one is told from one of an unknown trade ("cancel_rejected_trade"). ~40 bytes a trade.

Why apart from `monitor.core.bars`: the book builds bars of batches and keeps no tick; this is
the only part that does, it is off unless asked for (`window` 0: the daemon's `[engine]
cancel_window_s` sets it, replay never has cancels), and it reads better alone.
`monitor.core.bar_state` saves and restores its ticks (`frame`, `load`), `provider` and
`whole_from` (not `taken_back` nor `rejected`: after a start a cancel sent again, or a
correction of a trade refused before it, is `cancel_unknown_trade`).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.model import EXCLUDED_SCHEMA, TS, empty

LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,
    "price": pl.Float64(),
    "size": pl.Float64(),
    "id": pl.String(),
    "start": TS,  # the minute bar it went to (a closing print's is the session's last)
}
PROVIDER_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "start": TS}
# What is held of a tick: LEDGER_SCHEMA and `key`, a hash of its symbol and id (`_KEY`), so
# that the trades a cancel names are looked for among integers, not text (5x faster).
_HELD_SCHEMA: dict[str, pl.DataType] = {**LEDGER_SCHEMA, "key": pl.UInt64()}
_REJECTED_SCHEMA: dict[str, pl.DataType] = {**EXCLUDED_SCHEMA, "key": pl.UInt64()}
_KEY = pl.struct("symbol", "id").hash(7).alias("key")
MAX_ROWS = 10_000_000  # ~500 MB of ticks at most; past it the window shrinks
MAX_REJECTED = 1_000_000  # trades refused lately held at most (~40 MB); past it the oldest go
_MINUTE = dt.timedelta(minutes=1)
_WHERE = ["symbol", "id"]


class TradeLedger:
    """The ticks a book accepted in the last `window` (see the module)."""

    def __init__(
        self, window: dt.timedelta, *, max_rows: int = MAX_ROWS, max_rejected: int = MAX_REJECTED
    ) -> None:
        self.window = window
        self.max_rows = max_rows
        # minute start -> its ticks (LEDGER_SCHEMA), in arrival order: a cancel rewrites the
        # minute of its trade alone, and `forget` drops whole minutes, copying nothing
        self.minutes: dict[dt.datetime, list[pl.DataFrame]] = {}
        self.rows = 0
        self.whole_from: dt.datetime | None = None  # None: every minute the book took
        self.provider = empty(PROVIDER_SCHEMA)  # minutes a provider's bar set
        self.taken_back: dict[tuple[str, str], dt.datetime] = {}  # (symbol, id) -> its minute
        # Trades refused when they came (symbol, ts, id, key; in arrival order): see
        # `note_rejected`
        self.rejected: list[pl.DataFrame] = []
        self.rejected_rows = 0
        self.max_rejected = max_rejected
        self.counts: dict[str, int] = {}

    @property
    def on(self) -> bool:
        """Whether cancels are applied at all (`window` 0: off)."""
        return self.window > dt.timedelta(0)

    def record(self, ticks: pl.DataFrame) -> None:
        """Keep accepted ticks (with their `start`), in arrival order."""
        if self.on and ticks.height:
            kept = ticks.select(*LEDGER_SCHEMA, _KEY)
            for (start,), part in kept.partition_by("start", as_dict=True).items():
                self.minutes.setdefault(start, []).append(part)
            self.rows += ticks.height
            if self.rows > self.max_rows:
                self._drop_early()

    def note_rejected(self, trades: pl.DataFrame) -> None:
        """Remember `trades` (symbol, ts, id: refused when they came, a bad print, or one its
        feed kept out by its sale conditions) for the window: a correction of one that makes
        it a trade bars take needs its time (`rejected_of`), which the correction's message
        does not carry. Past `max_rejected` the oldest go ("cancel_ticks_dropped_early")."""
        if not self.on or not trades.height:
            return
        kept = trades.filter(pl.col("id").is_not_null()).select("symbol", "ts", "id", _KEY)
        if not kept.height:
            return
        self.rejected.append(kept)
        self.rejected_rows += kept.height
        if self.rejected_rows > self.max_rejected:
            excess = self.rejected_rows - self.max_rejected
            self.rejected = [self._rejected().slice(excess)]
            self.rejected_rows -= excess
            self._count("cancel_ticks_dropped_early", excess)

    def rejected_of(self, cancels: pl.DataFrame) -> pl.DataFrame:
        """The cancels (CANCEL_SCHEMA; the first of each trade) whose trade was refused when
        it came (`note_rejected`), with that trade's time (`at`)."""
        first = cancels.unique(_WHERE, keep="first", maintain_order=True)
        if not self.rejected:
            return first.clear().with_columns(at=pl.lit(None, TS))
        held = self._named(self._rejected(), first).select(*_WHERE, at="ts")
        held = held.unique(_WHERE, keep="last")
        return first.join(held, on=_WHERE, how="inner", maintain_order="left")

    def placed(self, found: pl.DataFrame) -> None:
        """The refused trades of `found` (`rejected_of` rows) were corrected into trades the
        book took: no longer refused, and taken back (the correction sent again is
        `cancel_repeated`)."""
        keys = found.select(_KEY).get_column("key").implode()
        self.rejected = [self._rejected().filter(~pl.col("key").is_in(keys))]
        self.rejected_rows = self.rejected[0].height
        for symbol, trade, at in found.select(*_WHERE, "at").iter_rows():
            self.taken_back[(symbol, trade)] = at.replace(second=0, microsecond=0)

    def _rejected(self) -> pl.DataFrame:
        """The trades refused lately, as one frame (which then replaces the batches')."""
        if len(self.rejected) > 1:
            self.rejected = [pl.concat(self.rejected, rechunk=True)]
        return self.rejected[0] if self.rejected else empty(_REJECTED_SCHEMA)

    def _count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def load(self, trades: pl.DataFrame, whole_from: dt.datetime | None) -> None:
        """Hold `trades` (LEDGER_SCHEMA, a saved state's `frame`) and nothing else."""
        self.minutes, self.rows, self.whole_from = {}, 0, whole_from
        self.record(trades)

    def note_provider(self, keys: pl.DataFrame) -> None:
        """Minutes (symbol, start) whose bar a provider's replaced: not built from ticks."""
        if self.on and keys.height:
            self.provider = pl.concat([self.provider, keys.select(list(PROVIDER_SCHEMA))])

    def forget(self, cutoff: dt.datetime) -> None:
        """Drop what is older than `window` before `cutoff` (the book's latest closed minute)."""
        if not self.on:
            return
        horizon = (cutoff - self.window).replace(second=0, microsecond=0)  # (once a minute)
        if self.whole_from is not None and horizon <= self.whole_from:
            return
        self.whole_from = horizon
        for start in [s for s in self.minutes if s < horizon]:
            self.rows -= sum(f.height for f in self.minutes.pop(start))
        for start in self.minutes:  # (a minute's batches as one frame: saves read them all)
            self._minute(start)
        if self.provider.height:
            self.provider = self.provider.filter(pl.col("start") >= horizon)
        self.taken_back = {k: s for k, s in self.taken_back.items() if s >= horizon}
        if self.rejected:
            self.rejected = [self._rejected().filter(pl.col("ts") >= horizon)]
            self.rejected_rows = self.rejected[0].height

    def _drop_early(self) -> None:
        """Past `max_rows`: the oldest minutes go (the latest stays), and are no longer
        whole."""
        dropped = 0
        for start in sorted(self.minutes)[:-1]:
            if self.rows <= self.max_rows:
                break
            n = sum(f.height for f in self.minutes.pop(start))
            self.rows -= n
            dropped += n
            after = start + _MINUTE
            self.whole_from = after if self.whole_from is None else max(self.whole_from, after)
        if dropped:
            self._count("cancel_ticks_dropped_early", dropped)

    def matches(self, cancels: pl.DataFrame) -> pl.DataFrame:
        """The cancels (CANCEL_SCHEMA) whose trade the ledger holds, with that trade's
        `start` and time (`trade_ts`) (the first of each (symbol, id) in the batch; a second
        one is unknown once the first is applied)."""
        first = cancels.unique(_WHERE, keep="first", maintain_order=True)
        held = self._named(self._held(), first).select(*_WHERE, "start", trade_ts="ts")
        return first.join(held, on=_WHERE, how="inner", maintain_order="left")

    @staticmethod
    def _named(ticks: pl.DataFrame, cancels: pl.DataFrame) -> pl.DataFrame:
        """The `ticks` whose symbol and id are among `cancels'` (with `at`: their row): a
        filter before the join, which would otherwise hash every tick held."""
        keys = cancels.select(_KEY).get_column("key").unique().implode()
        ids = cancels.get_column("id").drop_nulls().unique().implode()
        symbols = cancels.get_column("symbol").drop_nulls().unique().implode()
        held = ticks.with_row_index("at").filter(pl.col("key").is_in(keys))
        return held.filter(pl.col("id").is_in(ids) & pl.col("symbol").is_in(symbols))

    def apply(self, found: pl.DataFrame) -> None:
        """Take out the trades of `found` (`matches` rows), or replace them by their
        correction (`new_id`, `new_price`, `new_size`; same time and place in the order):
        the minutes of those trades are written again, no other."""
        for (start,), mine in found.partition_by("start", as_dict=True).items():
            frame = self._minute(start)
            frame = _applied(frame, self._named(frame, mine), mine)
            self.rows += frame.height - sum(f.height for f in self.minutes[start])
            self.minutes[start] = [frame] if frame.height else []
        for symbol, trade, start in found.select(*_WHERE, "start").iter_rows():
            self.taken_back[(symbol, trade)] = start

    def not_held(self, cancels: pl.DataFrame) -> pl.DataFrame:
        """The cancels whose trade the ledger does not hold, with `reason`: taken back
        already (`cancel_repeated`), refused when it came, a bad print or a trade its sale
        conditions kept out, within the window (`cancel_rejected_trade`: nothing to take
        out), stamped before the minutes it holds whole (`cancel_too_old`), or else
        `cancel_unknown_trade` (never seen; or taken or refused longer ago than the window
        though the cancel is not)."""
        keys = cancels.select("symbol", "id").iter_rows()
        repeated = pl.Series([key in self.taken_back for key in keys], dtype=pl.Boolean)
        refused = self.rejected_of(cancels).select(*_WHERE, refused=pl.lit(True))
        refused_expr = (
            cancels.join(refused, on=_WHERE, how="left", maintain_order="left")
            .get_column("refused")
            .fill_null(False)
        )
        old = ~self.is_whole(pl.col("ts").dt.truncate("1m")) & pl.col("ts").is_not_null()
        reason = (
            pl.when(repeated)
            .then(pl.lit("cancel_repeated"))
            .when(refused_expr)
            .then(pl.lit("cancel_rejected_trade"))
            .when(old)
            .then(pl.lit("cancel_too_old"))
            .otherwise(pl.lit("cancel_unknown_trade"))
        )
        return cancels.with_columns(reason=reason)

    def is_whole(self, start: pl.Expr) -> pl.Expr:
        """Whether the minute of `start` is whole in the ledger (see the module)."""
        if self.whole_from is None:
            return pl.lit(True)
        return start >= pl.lit(self.whole_from, TS)

    def from_provider(self, found: pl.DataFrame) -> pl.Series:
        """Which rows of `found` are of a minute a provider's bar set."""
        if not self.provider.height:
            return pl.Series([False] * found.height, dtype=pl.Boolean)
        keys = self.provider.unique().with_columns(provider=pl.lit(True))
        joined = found.select("symbol", "start").join(
            keys, on=["symbol", "start"], how="left", maintain_order="left"
        )
        return joined.get_column("provider").fill_null(False)

    def ticks_of(self, keys: pl.DataFrame) -> pl.DataFrame:
        """The ticks of the minutes `keys` (symbol, start), in arrival order."""
        keys = keys.select("symbol", "start").unique()
        on = ["symbol", "start"]
        parts = [
            self._minute(start).join(mine, on=on, how="semi", maintain_order="left")
            for (start,), mine in keys.partition_by("start", as_dict=True).items()
            if start in self.minutes
        ]
        return pl.concat(parts).select(list(LEDGER_SCHEMA)) if parts else empty(LEDGER_SCHEMA)

    def latest(self, symbols: list[str]) -> pl.DataFrame:
        """symbol, price: the latest tick held of each of `symbols` that has one (by `ts`;
        the last to arrive among equal ones, as the tape's last sale)."""
        last = pl.col("price").sort_by("ts", maintain_order=True).last()
        found: list[pl.DataFrame] = []
        wanted = set(symbols)
        for start in sorted(self.minutes, reverse=True):  # (the latest minutes hold most)
            if not wanted:
                break
            mine = self._minute(start).filter(pl.col("symbol").is_in(sorted(wanted)))
            if mine.height:
                found.append(mine.group_by("symbol").agg(last))
                wanted -= set(found[-1].get_column("symbol").to_list())
        return (
            pl.concat(found)
            if found
            else pl.DataFrame(schema={"symbol": pl.String(), "price": pl.Float64()})
        )

    def frame(self) -> pl.DataFrame:
        """Every tick held, minute by minute, each in arrival order (a saved state's)."""
        return self._held().select(list(LEDGER_SCHEMA))

    def _held(self) -> pl.DataFrame:
        """Every tick held, with its `key`, minute by minute."""
        parts = [self._minute(start) for start in sorted(self.minutes)]
        return pl.concat(parts) if parts else empty(_HELD_SCHEMA)

    def _minute(self, start: dt.datetime) -> pl.DataFrame:
        """The ticks held of the minute `start`, as one frame (which then replaces the
        batches')."""
        frames = self.minutes.get(start, [])
        if len(frames) > 1:
            self.minutes[start] = frames = [pl.concat(frames, rechunk=True)]
        return frames[0] if frames else empty(_HELD_SCHEMA)


def _applied(frame: pl.DataFrame, hits: pl.DataFrame, fixes: pl.DataFrame) -> pl.DataFrame:
    """`frame` (a minute's ticks) with the trades `hits` (its rows named by cancels, with
    `at`) taken out, or replaced by their correction in `fixes` (`matches` rows)."""
    hits = hits.select("at", *_WHERE).join(
        fixes.select(*_WHERE, "new_id", "new_price", "new_size"), on=_WHERE, how="inner"
    )
    fixed = hits.filter(pl.col("new_id").is_not_null())
    if fixed.height:
        at = fixed.get_column("at")
        frame = frame.with_columns(
            frame.get_column(name).scatter(at, fixed.get_column(f"new_{name}"))
            for name in ("price", "size", "id")
        ).with_columns(_KEY)  # (of the new ids)
    gone = hits.filter(pl.col("new_id").is_null()).get_column("at")
    if gone.len():
        drop = pl.Series([False] * frame.height).scatter(gone, True)
        frame = frame.filter(~drop)
    return frame
