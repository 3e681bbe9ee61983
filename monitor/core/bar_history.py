"""The engine's bar history: what is done to its stored bars, as functions of rows and calendar.

Stored bars: a check of incoming daily bars (`checked_daily`, `bad_bar`, `in_order`; and
`not_held`, a journal's bars the history does not hold already), upserts that keep a frame
sorted and unique by key (`upsert`, `sorted_unique`), and the minute history merged and trimmed
(`add_minutes`). Frames for the rules: closed bars with their period number and return
(`derived`), and closed trading weeks made of the daily bars (`weekly`).

Why apart from `monitor.core.engine`: the engine decides when bars are stored, closed and
evaluated, and holds them; none of this needs its state (only rows, keys and `Sessions`), and
the engine reads better as what happens when, without the frame arithmetic. (The bar builder's
own frames, of ticks and open minute bars, are `monitor.core.book_frames`.)
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from monitor.core import metrics
from monitor.core.model import DAILY_SCHEMA, MAX_PRICE, MAX_SIZE, Rejection
from monitor.core.sessions import Sessions, minute_date

PRICE_COLS = ("open", "high", "low", "close")
DAILY_KEY = ["symbol", "session"]  # of daily bars


# ------------------------------------------------------------------ stored bars
def checked_daily(
    bars: pl.DataFrame, sessions: Sessions
) -> tuple[list[Rejection], pl.DataFrame, bool]:
    """Incoming session bars checked (`Engine.ingest_daily`): the rejections (`bad_bar`, and
    `not_a_session` for a date that is no session of `sessions`), the good bars (DAILY_SCHEMA)
    and whether they are strictly in order by DAILY_KEY."""
    bars = bars.select(list(DAILY_SCHEMA)).cast(DAILY_SCHEMA)  # type: ignore[arg-type]
    bad = bad_bar(bars)
    off = ~pl.col("session").is_in(sessions.frame.get_column("session").implode())
    # One select: polars checks the bars and their order side by side.
    symbol, session = pl.col("symbol"), pl.col("session")
    flags = bars.select(
        bad.alias("bad"),
        off.alias("off"),
        (symbol == symbol.shift()).alias("same"),
        (session > session.shift()).alias("later"),
    )
    wrong = flags.get_column("bad") | flags.get_column("off")
    ordered = _by_symbol_and_session(bars, flags.get_column("same"), flags.get_column("later"))
    if not wrong.any():  # (no copy of a whole universe's history when every bar is fine)
        return [], bars, ordered
    why = flags.select(
        pl.when("bad").then(pl.lit("bad_bar")).otherwise(pl.lit("not_a_session"))
    ).to_series()
    rejected = bars.with_columns(why.alias("why")).filter(wrong)
    rejections = [
        Rejection(reason=reason, symbol=sym, raw=f"{sym} {session}")
        for sym, session, reason in rejected.select("symbol", "session", "why").iter_rows()
    ]
    return rejections, bars.filter(~wrong), ordered  # (a subsequence in order is in order)


def _by_symbol_and_session(bars: pl.DataFrame, same: pl.Series, later: pl.Series) -> bool:
    """Whether `bars` are strictly in order by DAILY_KEY, without a null in it: each row's
    session later than the row before's where both are of one symbol (`same` and `later`: the
    comparisons with the row before), and each symbol greater than the one before it. Only
    symbols where they change are compared as text (`in_order` would compare every row's:
    twice the time over a universe's 8 million bars)."""
    symbols = bars.get_column("symbol")
    if symbols.null_count() or later.slice(1).null_count():
        return False
    if not (~same.fill_null(False) | later).slice(1).all():
        return False
    runs = symbols.filter(~same.fill_null(False))
    return bool((runs > runs.shift()).slice(1).all())


def not_held(bars: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """The session bars of `bars` that `history` does not hold as they are."""
    if history.is_empty():
        return bars
    columns = list(DAILY_SCHEMA)
    bars = bars.select(columns).cast(DAILY_SCHEMA)  # type: ignore[arg-type]
    # (the history's bars of these symbols and sessions only: not years of a universe)
    held = history.select(columns).join(bars.select(DAILY_KEY).unique(), on=DAILY_KEY, how="semi")
    return bars.join(held, on=columns, how="anti", nulls_equal=True)


def bad_bar(bars: pl.DataFrame) -> pl.Expr:
    """A session bar no rule can use, as a feed's minute bars are checked (`_bar_problem` of
    monitor.core.book_frames): a price not finite and positive, open or close outside [low,
    high], a volume not finite or negative (no volume is no volume: a close-only file's), no
    symbol or session. A data file's bars come here consistent (`reject_bad_bars` of
    monitor.datafiles widens high and low over open and close within a tolerance)."""
    prices = [pl.col(c) for c in PRICE_COLS]
    low, high, volume = pl.col("low"), pl.col("high"), pl.col("volume")
    # Positive and below MAX_PRICE. (NaN sorts above every number in polars: `> 0` alone would
    # let it through, `< MAX_PRICE` does not; one comparison cheaper than `is_finite`.)
    good = pl.all_horizontal([(p > 0) & (p < MAX_PRICE) for p in prices]).fill_null(False)
    inside = pl.all_horizontal((p >= low) & (p <= high) for p in (pl.col("open"), pl.col("close")))
    good = good & inside.fill_null(False) & ((volume >= 0) & (volume < MAX_SIZE)).fill_null(True)
    return ~good | pl.col("symbol").is_null() | pl.col("session").is_null()


def upsert(
    old: pl.DataFrame, new: pl.DataFrame, key: list[str], in_order: bool | None = None
) -> pl.DataFrame:
    """Rows of `new` replace rows of `old` with the same key; the result is sorted by key.
    `in_order`: whether `new` is known to be strictly increasing in `key` (None: find out)."""
    if old.is_empty():
        if in_order if in_order is not None else sorted_unique(new, key):
            return new
        return new.unique(subset=key, keep="last", maintain_order=True).sort(key)
    both = pl.concat([old, new.select(old.columns)], how="vertical_relaxed")
    return both.unique(subset=key, keep="last", maintain_order=True).sort(key)


def add_minutes(old: pl.DataFrame, new: pl.DataFrame, history: int) -> pl.DataFrame:
    """Upsert closed minute bars into `old` (sorted by symbol and start) and keep the last
    `history` of each symbol. Bars of a minute after every stored one (the usual close) are
    merged in one linear pass: a full upsert re-sorts every row (0.5 s for two sessions of 2,000
    symbols, every minute)."""
    key = ["symbol", "start"]
    later = old.height and new["start"].min() > old["start"].max()  # type: ignore[operator]
    if later and sorted_unique(new, key):
        merged = old.merge_sorted(new, "symbol")  # per symbol, the old bars first
    else:
        merged = upsert(old, new, key)
    symbol, row = pl.col("symbol"), pl.int_range(pl.len(), dtype=pl.Int64)
    last_of_symbol = pl.when((symbol != symbol.shift(-1)).fill_null(True)).then(row)
    return merged.filter(last_of_symbol.backward_fill() - row < history)


def sorted_unique(frame: pl.DataFrame, key: list[str]) -> bool:
    """True when `frame` is strictly increasing in `key` (so already sorted and unique): one
    vectorised comparison of each row with the previous, much cheaper than unique + sort."""
    if frame.height < 2:
        return True
    return bool(frame.select(in_order(key).slice(1).all()).item())


def in_order(key: list[str]) -> pl.Expr:
    """Per row, whether it is greater in `key` than the row before (lexicographically; the
    first row's value is meaningless)."""
    increasing = pl.lit(False)
    for k in reversed(key):  # lexicographic: (k0, k1, ...) > previous row's
        col = pl.col(k)
        increasing = (col > col.shift(1)) | ((col == col.shift(1)) & increasing)
    return increasing


# ------------------------------------------------------------ frames for rules
def derived(bars: pl.DataFrame, timeframe: str, sessions: Sessions) -> pl.DataFrame:
    """`Engine.frame` of the engine's closed bars of a timeframe (sorted by symbol and time), or
    of a piece of them cut between symbols."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    first = (pl.col("symbol") != pl.col("symbol").shift()).fill_null(True)
    # Rows are sorted by symbol: idx is the row number less that of the symbol's first row.
    idx = (row - pl.when(first).then(row).forward_fill()).alias("idx")
    if timeframe in ("1d", "1w"):
        # Every stored session is a session of the calendar (`Engine.ingest_daily` sees to it),
        # and a week is labelled by one. `num` is the period's number in the calendar (the
        # session's, or the trading week's), so a window reaches back over the symbol's
        # consecutive periods only: over one missing from its history (a gap in the data, a
        # halt of days), "5 sessions" would be more, and a streak would join periods that are
        # not consecutive (`reach`, see metrics.back). What followed an alert is taken `h`
        # periods on by `num` too (monitor.core.firing); `idx` counts rows.
        if timeframe == "1d":
            number = sessions.number_expr(pl.col("session"))
        else:
            number = sessions.week_number_expr(pl.col("session"))
        # `idx` and `reach` by running maxima over numpy arrays: polars' forward fill of a
        # column with nulls took half again as long (a universe's history, 8 million bars).
        flags = bars.select(first.alias("first"), number.alias("num"))
        firsts = flags.get_column("first").to_numpy()
        num = flags.get_column("num")
        known = num.is_not_null().to_numpy()
        value = num.fill_null(0).to_numpy()
        steps = firsts.copy()  # (as `first | (number - number.shift() != 1)`, nulls no step)
        steps[1:] |= (np.diff(value) != 1) & known[1:] & known[:-1]
        columns: list[pl.Series | pl.Expr] = [
            pl.Series("idx", _since_marked(firsts)),
            pl.Series("reach", _since_marked(steps)),
            num.cast(pl.Int64),
        ]
        if timeframe == "1d":  # (a week's bars come with their close)
            columns.append(sessions.close_of_expr(pl.col("session")))
        frame = bars.with_columns(columns)
    else:
        # A minute's window stays in its session: one reaching back over the night would take
        # the opening gap for a move of a few minutes (`reach`, see metrics.back). A minute
        # missing from a symbol's history is a minute without a trade: `num` is the row's.
        day = minute_date(pl.col("start"))
        opens = first | (day != day.shift())
        reach = (row - pl.when(opens).then(row).forward_fill()).alias("reach")
        frame = bars.with_columns(
            day.alias("session"), (pl.col("start") + pl.duration(minutes=1)).alias("ts"), idx, reach
        ).drop("start")
        frame = frame.with_columns(pl.col("idx").alias("num"))
    weekly = ["short_week"] if timeframe == "1w" else []
    return frame.with_columns(metrics.period_return().alias("ret1")).select(
        "symbol", "session", "ts", *PRICE_COLS, "volume", "idx", "reach", "num", "ret1", *weekly
    )


def _since_marked(marked: np.ndarray) -> np.ndarray:
    """Per row, how many rows after the latest marked row (itself included) it is; the first
    row must be marked."""
    rows = np.arange(len(marked), dtype=np.int64)
    latest = np.where(marked, rows, 0)
    np.maximum.accumulate(latest, out=latest)
    return np.subtract(rows, latest, out=latest)


def weekly(daily: pl.DataFrame, sessions: Sessions, now: dt.datetime | None = None) -> pl.DataFrame:
    """Closed trading weeks: labelled by the week's last session (`session`), `ts` its close,
    `short_week` when the week had fewer than five sessions. A symbol's week is closed once
    it has a bar of the week's last session, or bars of a later session have come (of any
    symbol): bars that come symbol by symbol would otherwise close a week early, at the
    close of a day before the last, for the symbols whose last bar was still to come."""
    weeks = sessions.frame.select("session", "week", "short_week")
    closes = sessions.frame.select(pl.col("session").alias("week"), pl.col("close_ts").alias("ts"))
    last = daily.get_column("session").max() if daily.height else None
    frame = (
        daily.join(weeks, on="session")
        .sort("symbol", "session")
        .group_by("symbol", "week", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("short_week").first(),
            pl.col("session").max().alias("last_bar"),
        )
        .join(closes, on="week")
        .rename({"week": "session"})
    )
    if last is not None:
        complete = (pl.col("last_bar") == pl.col("session")) | (pl.col("session") < last)
        frame = frame.filter(complete)
    frame = frame.drop("last_bar")
    if now is not None:
        frame = frame.filter(pl.col("ts") <= now)
    return frame
