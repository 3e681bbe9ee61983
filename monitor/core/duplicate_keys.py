"""A `BarBook`'s memory of the ticks it took, so that a copy of one is rejected as "duplicate".

A tick's duplicate key (`TICK_KEY`) is a 64-bit hash of (symbol, id), or of (symbol, ts, price,
size) when id is null. The keys of accepted ticks are held bucketed by `ts` (`TICK_BUCKET`, of
DEDUP_BUCKET) and kept for buckets up to `dedup_window_s` (an hour) before the book's cutoff
(its latest closed minute). A tick older than that when it comes (a late correction, a
redelivery after a long outage) is filed under the bucket of its arrival, and its copies are
looked for in those buckets too; at a start, the keys taken up that the window would drop are
filed so under the start's bucket (`BarBook.hold_keys`). A copy is recognised when it comes
within `dedup_window_s` of its trade's time, of the first copy's arrival, or of the start that
took the first copy up. At most `dedup_max_keys` keys are held: past that the oldest buckets go
early (the book counts them as "dedup_keys_dropped_early"), so memory stays bounded however
fast ticks come. The hashes are polars' own: a saved state's keys are taken up only by the
polars version that hashed them (`monitor.core.bar_state`).

Why apart from `monitor.core.bars`: the book asks this memory three things (which keys of a
batch it holds, to hold the keys it took, to forget old ones) and never looks into its buckets;
how it files, looks up and bounds them reads better alone than between the book's bars. The
`DuplicateKeys` here is owned by the book (its `_seen`), and is saved and restored with it by
`monitor.core.bar_state`, which reads and sets its fields.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from monitor.core.book_frames import ts_lit
from monitor.core.model import TS

DEDUP_WINDOW_S = 3600.0
DEDUP_BUCKET = "10s"
DEDUP_MAX_KEYS = 8_000_000  # 64 MB of keys: 300 s at ~27k ticks/s; past it the window shrinks


class DuplicateKeys:
    """The duplicate keys of a book's accepted ticks, by bucket (see the module).

    `cutoff`, given to the methods, is the book's: minutes starting at or before it are closed.
    """

    def __init__(self, *, window: dt.timedelta, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self.buckets: dict[dt.datetime, pl.Series] = {}
        self.size = 0  # keys in `buckets`
        self.arrivals: set[dt.datetime] = set()  # buckets with keys filed on arrival

    def has_old(self, buckets: pl.Series, cutoff: dt.datetime | None) -> bool:
        """Whether some of a batch's `buckets` (distinct) are older than the window at `cutoff`
        (None: the book has no clock yet, and nothing is old): their keys are filed on arrival."""
        oldest: dt.datetime | None = buckets.min()  # type: ignore[assignment]
        if cutoff is None or oldest is None:  # (no clock, or an empty batch)
            return False
        return oldest < cutoff - self.window

    def copies(self, keys: pl.Series, buckets: pl.Series, old: bool) -> pl.Series | None:
        """The keys among `keys` held already, looked for in the batch's `buckets` (distinct),
        and in those filed on arrival when the batch `has_old` ones; None when none is held."""
        looked = set(buckets.to_list())
        if old:
            looked |= self.arrivals
        seen = [self.buckets[b] for b in looked if b in self.buckets]
        if not seen:
            return None
        memory = pl.concat(seen)
        hits = memory.filter(memory.is_in(keys.implode()))
        return hits if hits.len() else None

    def file_on_arrival(self, good: pl.DataFrame, cutoff: dt.datetime) -> pl.DataFrame:
        """`good` (accepted ticks of a batch that `has_old` buckets) with the bucket of those
        older than the window at `cutoff` moved to the bucket of their arrival (`cutoff`'s)."""
        horizon = cutoff - self.window
        arrival = pl.Series([cutoff], dtype=TS).dt.truncate(DEDUP_BUCKET)[0]
        filed = pl.when(pl.col("bucket") < ts_lit(horizon)).then(ts_lit(arrival))
        good = good.with_columns(bucket=pl.coalesce(filed, "bucket"))
        self.arrivals.add(arrival)
        return good

    def remember(self, good: pl.DataFrame) -> int:
        """Add accepted ticks' keys to their buckets; how many were dropped early (past
        `max_keys`: the oldest buckets go, the newest stays whatever its size)."""
        buckets = good["bucket"].unique()
        if buckets.len() == 1:  # the usual case: skip partitioning
            parts = {(buckets[0],): good}
        else:
            parts = good.partition_by("bucket", as_dict=True)
        for (bucket,), part in parts.items():
            memory = self.buckets.get(bucket)
            if memory is None:
                self.buckets[bucket] = part["key"]
            else:
                memory.append(part["key"])
        self.size += good.height
        dropped = 0
        if self.size > self.max_keys:
            for bucket in sorted(self.buckets)[:-1]:  # the newest bucket stays, whatever its size
                if self.size - dropped <= self.max_keys:
                    break
                dropped += self.buckets.pop(bucket).len()
            self.size -= dropped
        return dropped

    def hold(self, cutoff: dt.datetime) -> None:
        """At a start whose cutoff is `cutoff`, after the saved state and the journal are taken
        up: the keys of ticks taken before it that `cutoff` would forget (their trades older
        than `window`) are filed under the start's bucket, as a late tick's under its arrival,
        and kept for `window` from now. The broker delivers again, whatever their age, the
        messages the crash left unacknowledged (on disk in the journal): after a long outage
        those trades would otherwise be taken twice."""
        horizon = cutoff - self.window
        old = [b for b in self.buckets if b < horizon]
        if not old:
            return
        start = pl.Series([cutoff], dtype=TS).dt.truncate(DEDUP_BUCKET)
        arrival: dt.datetime = start[0]
        kept = [self.buckets.pop(b) for b in old]
        if arrival in self.buckets:
            kept.append(self.buckets[arrival])
        self.buckets[arrival] = pl.concat(kept)
        self.arrivals.add(arrival)

    def forget(self, cutoff: dt.datetime) -> None:
        """Drop the keys of buckets older than the window at `cutoff`."""
        horizon = cutoff - self.window
        self.arrivals = {b for b in self.arrivals if b >= horizon}
        for bucket in [b for b in self.buckets if b < horizon]:
            self.size -= self.buckets.pop(bucket).len()


def _tick_key() -> pl.Expr:
    return (
        pl.when(pl.col("id").is_not_null())
        .then(TRADE_KEY)
        .otherwise(pl.struct("symbol", "ts", "price", "size").hash(2))
    )


# Expressions are built once: building them costs more than running them on a small batch.
TRADE_KEY = pl.struct("symbol", "id").hash(1)  # the key of a tick with an id (a cancel's too)
TICK_KEY = _tick_key()  # a tick's duplicate key
TICK_BUCKET = pl.col("ts").dt.truncate(DEDUP_BUCKET)  # the bucket its key is held in
