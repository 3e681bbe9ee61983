"""The values that flow through market-monitor: ticks, bars, rejections and alerts.

Ticks and bars travel in *batches*, as polars frames with the schemas below, because the engine
works on the whole universe at once. `Tick` and `Bar` structs exist for the edges (one decoded wire
message, a test case); `ticks_frame` / `bars_frame` turn lists of them into batches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec
import polars as pl

Timeframe = Literal["1m", "1d", "1w"]
TIMEFRAMES: tuple[Timeframe, ...] = ("1m", "1d", "1w")
UTC = dt.UTC

TS = pl.Datetime("us", "UTC")

# Prices and sizes at or above these are no market's: no US stock trades at a billion dollars,
# nor a quadrillion shares a day, and 1e308 makes a bar (two of them an infinite volume) no
# rule can read. Feeds reject them as `bad_price` / `bad_size`, the engine and the file
# readers too (a tick file, a replay feed's bars).
MAX_PRICE = 1e9
MAX_SIZE = 1e15

TICK_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,
    "price": pl.Float64(),
    "size": pl.Float64(),
    "id": pl.String(),
}

# Minute bars: `start` is the bar's first instant (UTC).
MINUTE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "start": TS,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}

# Trades taken back by their feed (`FeedBatch.cancels`): `id` is the trade's, as its tick's
# (`symbol` + `id` find it); `ts` when the feed said so. A cancel (or error) has no `new_*`; a
# correction names the trade that replaces it (its id, price and size, at the same time).
CANCEL_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,
    "id": pl.String(),
    "new_id": pl.String(),
    "new_price": pl.Float64(),
    "new_size": pl.Float64(),
}

# Trades a feed saw and kept out of bars (`FeedBatch.excluded`: Alpaca's, by their sale
# conditions): a correction that makes one a trade bars take finds its time here (a
# correction's own time is its message's, not the trade's).
EXCLUDED_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "ts": TS, "id": pl.String()}

# Session (daily) bars belong to their exchange session date.
DAILY_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "session": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}


class Tick(msgspec.Struct, frozen=True):
    """One trade: `ts` is timezone-aware UTC, `size` in shares, `id` the provider's trade id."""

    symbol: str
    ts: dt.datetime
    price: float
    size: float = 0.0
    id: str | None = None


class Bar(msgspec.Struct, frozen=True):
    """One OHLCV bar. Minute bars carry `start`; daily bars carry `session`."""

    symbol: str
    timeframe: Timeframe
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    start: dt.datetime | None = None
    session: dt.date | None = None


class Rejection(msgspec.Struct, frozen=True):
    """Bad input as a value: counted by `reason`, logged, and the stream goes on."""

    reason: str
    symbol: str | None = None
    raw: str = ""


def ticks_frame(ticks: Iterable[Tick]) -> pl.DataFrame:
    """Build a tick batch from `Tick` values (column lists, never a list of dicts)."""
    cols: dict[str, list[object]] = {name: [] for name in TICK_SCHEMA}
    for t in ticks:
        cols["symbol"].append(t.symbol)
        cols["ts"].append(t.ts)
        cols["price"].append(t.price)
        cols["size"].append(t.size)
        cols["id"].append(t.id)
    return pl.DataFrame(cols, schema=TICK_SCHEMA)


_EMPTY: dict[tuple[tuple[str, pl.DataType], ...], pl.DataFrame] = {}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame of the given schema (a clone of a cached one: building a frame from a
    schema costs about half a millisecond, a clone about a microsecond)."""
    key = tuple(schema.items())
    cached = _EMPTY.get(key)
    if cached is None:
        cached = _EMPTY[key] = pl.DataFrame(schema=schema)
    return cached.clone()


def bars_frame(bars: Sequence[Bar], timeframe: Literal["1m", "1d"]) -> pl.DataFrame:
    """Build a minute or daily bar batch from `Bar` values of that timeframe."""
    key = "start" if timeframe == "1m" else "session"
    schema = MINUTE_SCHEMA if timeframe == "1m" else DAILY_SCHEMA
    cols: dict[str, list[object]] = {name: [] for name in schema}
    for b in bars:
        cols["symbol"].append(b.symbol)
        cols[key].append(b.start if timeframe == "1m" else b.session)
        for name in ("open", "high", "low", "close", "volume"):
            cols[name].append(getattr(b, name))
    return pl.DataFrame(cols, schema=schema)


class HorizonStats(msgspec.Struct, frozen=True, gc=False):
    """Forward returns over `periods` after each earlier firing that has that much history."""

    periods: int
    count: int
    mean: float | None
    median: float | None
    share_positive: float | None
    min: float | None
    max: float | None


class History(msgspec.Struct, frozen=True, gc=False):
    """What happened after earlier episodes of the same rule on the same symbol."""

    prior_occurrences: int
    prior_dates: list[str]
    forward: list[HorizonStats]
    summary: str = ""


Severity = Literal["info", "notice", "warning", "critical"]
ALERT_SCHEMA = "market-monitor.alert/1"
ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # an alert's `ts` (and other instants in it), as strftime writes it
MetricValue = float | int | str | bool | None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """The alert payload, `market-monitor.alert/1`; documented in docs/alerts.md."""

    schema: str = ALERT_SCHEMA
    id: str
    rule: str
    kind: str
    symbol: str
    timeframe: str
    session: str
    ts: str
    severity: Severity
    title: str
    text: str
    metrics: dict[str, MetricValue]
    history: History | None


_alert_encoder = msgspec.json.Encoder()
_alert_decoder = msgspec.json.Decoder(Alert)


def encode_alert(alert: Alert) -> bytes:
    """The alert as compact JSON bytes."""
    return _alert_encoder.encode(alert)


def decode_alert(raw: bytes | str) -> Alert:
    """Parse an alert payload; raises msgspec.ValidationError / DecodeError on bad input (a
    payload nested too deep for the decoder too: its RecursionError would otherwise reach every
    caller, and a stream entry of it crash each notifier that claims it)."""
    try:
        return _alert_decoder.decode(raw)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply: not an alert") from None


class FeedBatch(msgspec.Struct):
    """What one decoded wire message (or a micro-batch of them) carries into the engine.

    Frames follow TICK_SCHEMA, MINUTE_SCHEMA and DAILY_SCHEMA; any of them may be empty.
    `feed` names the feed it came from (for counters, lag and the stale-feed watchdog);
    `rejections_logged`, that the feed has logged its rejections (the daemon counts them
    again, as every rejection, without a second log line). `cancels` (CANCEL_SCHEMA): trades
    the feed took back or corrected since (Alpaca's "x" and "c"), applied after the ticks.
    `excluded` (EXCLUDED_SCHEMA): trades the feed kept out by their sale conditions (each
    also a rejection), whose time a later correction of them may need.
    """

    feed: str
    ticks: pl.DataFrame
    minute_bars: pl.DataFrame
    daily_bars: pl.DataFrame
    rejections: list[Rejection]
    rejections_logged: bool = False
    cancels: pl.DataFrame = msgspec.field(default_factory=lambda: empty(CANCEL_SCHEMA))
    excluded: pl.DataFrame = msgspec.field(default_factory=lambda: empty(EXCLUDED_SCHEMA))

    @classmethod
    def empty(cls, feed: str) -> FeedBatch:
        """A batch with nothing in it."""
        return cls(feed, empty(TICK_SCHEMA), empty(MINUTE_SCHEMA), empty(DAILY_SCHEMA), [])

    def size(self) -> int:
        """Rows of market data carried, cancels too (rejections not included)."""
        bars = self.minute_bars.height + self.daily_bars.height
        return self.ticks.height + bars + self.cancels.height

    def data_end(self, by: dt.datetime | None = None) -> dt.datetime | None:
        """Where its ticks and minute bars end: its last tick, or its last minute bar's end,
        whichever is later (None: it has neither). `by`: of the rows that end by then only
        (a row from the future says nothing of how far its feed has got)."""
        ends: list[dt.datetime] = []
        for frame, column, span in (
            (self.ticks, "ts", dt.timedelta(0)),
            (self.minute_bars, "start", dt.timedelta(minutes=1)),
        ):
            if frame.height:
                value = frame.get_column(column).max()
                if by is not None and isinstance(value, dt.datetime) and value > by - span:
                    value = frame.filter(pl.col(column) <= by - span).get_column(column).max()
                if isinstance(value, dt.datetime):
                    ends.append(value + span)
        return max(ends, default=None)
