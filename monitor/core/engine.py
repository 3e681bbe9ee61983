"""The engine: ingest(batch) / advance(now) -> alerts. The same object runs live and in replay.

It keeps closed session (daily) bars for the universe, derives trading weeks from them, builds
minute and session bars from ticks (through a BarBook), and on each `advance` evaluates every rule
over the whole universe at once, emitting the firings in periods that closed since the last call.
An alert id it has emitted is never emitted again (`fired`), so corrections do not repeat alerts.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from monitor.core import firing, metrics
from monitor.core.model import DAILY_SCHEMA, MINUTE_SCHEMA, Alert, FeedBatch, Rejection, empty
from monitor.core.payload import LINE_SCHEMA, LineChunks, alert_lines, decode_lines
from monitor.core.progress import Progress
from monitor.core.rules.context import RuleContext
from monitor.core.rules.spec import Rule, RulesFile
from monitor.core.sessions import NEW_YORK, Sessions, minute_date

if TYPE_CHECKING:
    from monitor.core.bar_state import BookState
    from monitor.core.bars import BarBook

PRICE_COLS = ("open", "high", "low", "close")
KEY = ["symbol", "session"]  # of daily bars
NEW_YORK_ZONE = ZoneInfo(NEW_YORK)
PIECE_ROWS = 1_000_000  # bars per piece of a universe for per-symbol rules (see `_pieces`)


class Step:
    """What one `advance` produced. `lines` holds the new alerts as payload lines (LINE_SCHEMA,
    in order); `alerts` decodes them into Alert structs on first use.

    From `advance(now, deferred=True)` the payloads are not built yet: `line_chunks()` builds
    and yields them in order, a chunk of about `LineChunks.ROWS` at a time (or `lines` builds
    them all at once), and either does so once only.

    `firings` holds each rule's firing frame (`monitor.core.firing.firings`: a row per firing
    in time order, with its metrics and history), what the lines are made of. Its rows are the
    alerts before their ids are checked against those already emitted, which only drops an
    alert of a step that re-evaluates periods seen before (a correction, a restored engine):
    in a replay, the same as the alerts."""

    def __init__(
        self,
        lines: pl.DataFrame | LineChunks,
        minute_bars: pl.DataFrame,
        daily_bars: pl.DataFrame,
        rejections: list[Rejection],
        firings: list[tuple[Rule, pl.DataFrame]] | None = None,
    ) -> None:
        self._lines = lines
        self.minute_bars = minute_bars
        self.daily_bars = daily_bars
        self.rejections = rejections
        self.firings = firings or []

    @functools.cached_property
    def lines(self) -> pl.DataFrame:
        """All the new alerts' lines, in order."""
        if isinstance(self._lines, pl.DataFrame):
            return self._lines
        chunks = list(self._lines)
        return pl.concat(chunks) if chunks else empty(LINE_SCHEMA)

    def line_chunks(self) -> Iterator[pl.DataFrame]:
        """The new alerts' lines in order, in chunks (one when they were built eagerly)."""
        if isinstance(self._lines, pl.DataFrame):
            if self._lines.height:
                yield self._lines
            return
        yield from self._lines

    @functools.cached_property
    def alerts(self) -> list[Alert]:
        """The new alerts, in order (a list the caller may extend)."""
        return decode_lines(self.lines)


class EngineState(msgspec.Struct):
    """What must survive a restart: emitted alert ids and how far evaluation got."""

    fired: list[str]
    watermarks: dict[str, dt.datetime]


class Engine:
    """Pure and synchronous: time comes in through `advance(now)`."""

    def __init__(
        self,
        rules: RulesFile,
        sessions: Sessions,
        *,
        short_interest: pl.DataFrame | None = None,
        emit_after: dt.datetime | None = None,
        bar_options: dict[str, Any] | None = None,
        minute_history: int = 780,
        universe: frozenset[str] | None = None,
        max_jump: float | None = None,
        rule_threads: int = 1,
    ) -> None:
        self.rules = rules.enabled
        self.sessions = sessions
        self.ctx = RuleContext(names=dict(rules.names), short_interest=short_interest)
        self.daily: pl.DataFrame = empty(DAILY_SCHEMA)
        self.minutes: pl.DataFrame = empty(MINUTE_SCHEMA)
        self._pending_daily: pl.DataFrame = empty(DAILY_SCHEMA)
        self._fired: set[str] = set()
        self._pending_ids: list[pl.Series] = []  # emitted, not yet in `_fired` (see `fired`)
        self.watermarks: dict[str, dt.datetime] = {}  # alerts are emitted for periods after
        self._evaluated: dict[str, dt.datetime] = {}  # the last period evaluated, by timeframe
        if emit_after is not None:
            self.watermarks = {tf: emit_after for tf in ("1m", "1d", "1w")}
        self.counts: Counter[str] = Counter()
        self._bar_options = bar_options or {}
        self._book: BarBook | None = None
        self._minute_history = minute_history
        self.universe = universe or None
        self.max_jump = max_jump
        self._last_price: pl.DataFrame | None = None
        self.halted: set[str] = set()
        self._last_closed_seen: dt.date | None = None
        self.track_progress = False
        # rule id -> `firing.every_period` rows of each evaluation, when asked for (replay's
        # summary: what followed any period, beside what followed the alerts)
        self.baseline: dict[str, list[pl.DataFrame]] | None = None
        self.progress: dict[str, list[Progress]] = {}
        self.now: dt.datetime | None = None
        self.rule_threads = rule_threads
        self._minute_rules = any(r.timeframe == "1m" for r in self.rules)

    # ----------------------------------------------------------------- ingest
    def ingest(self, batch: FeedBatch) -> list[Rejection]:
        """Take a batch of ticks and bars; bad rows come back as rejections (also counted)."""
        rejections = list(batch.rejections)
        if batch.ticks.height:
            ticks = self._screen(batch.ticks, "price", "ts", rejections)
            rejections += self.book.ingest_ticks(ticks)
        if batch.minute_bars.height:
            bars = self._screen(batch.minute_bars, "close", "start", rejections)
            rejections += self.book.ingest_minute_bars(bars)
        if batch.daily_bars.height:
            daily = self._screen(batch.daily_bars, "close", "session", rejections)
            rejections += self.ingest_daily(daily)
        for r in rejections:
            self.counts[r.reason] += 1
        return rejections

    def _screen(
        self, frame: pl.DataFrame, price: str, order: str, rejections: list[Rejection]
    ) -> pl.DataFrame:
        """Reject symbols outside the configured universe (`unknown_symbol`), prints of halted
        symbols (`halted`: a halted name cannot rally in the feed) and bad prints: a price more
        than `max_jump` times (or less than 1/`max_jump` of) the last accepted price of its
        symbol (`bad_print`)."""
        if self.halted:
            stopped = pl.col("symbol").is_in(list(self.halted))
            rejections += [
                Rejection(reason="halted", symbol=s, raw=f"{s} {p}")
                for s, p in frame.filter(stopped).select("symbol", price).iter_rows()
            ]
            frame = frame.filter(~stopped)
        if self.universe is not None:
            unknown = ~pl.col("symbol").is_in(list(self.universe))
            rejections += [
                Rejection(reason="unknown_symbol", symbol=s, raw=f"{s} {p}")
                for s, p in frame.filter(unknown).select("symbol", price).iter_rows()
            ]
            frame = frame.filter(~unknown)
        if self.max_jump is None or frame.is_empty():
            return frame
        if self._last_price is None:
            self._last_price = self.daily.group_by("symbol").agg(
                pl.col("close").sort_by("session").last().alias("ref")
            )
        # Eager calls: on a batch this size a lazy plan costs more to optimise than to run.
        joined = frame.join(self._last_price, on="symbol", how="left", maintain_order="left")
        ratio = pl.col(price) / pl.col("ref")
        flags = joined.select(
            ((ratio > self.max_jump) | (ratio < 1.0 / self.max_jump)).fill_null(False)
        ).to_series()
        good = frame
        if flags.any():
            rejections += [
                Rejection(reason="bad_print", symbol=s, raw=f"{s} {p} (last {r})")
                for s, p, r in joined.filter(flags).select("symbol", price, "ref").iter_rows()
            ]
            good = joined.filter(~flags).drop("ref")
        latest = (
            good.filter(pl.col(price) > 0)
            .group_by("symbol")
            .agg(pl.col(price).sort_by(order).last().alias("ref"))
        )
        if latest.height:  # the latest good price of a symbol replaces its reference
            both = pl.concat([self._last_price, latest], how="vertical_relaxed")
            self._last_price = both.unique("symbol", keep="last")
        return good

    def set_halted(self, symbol: str, halted: bool) -> None:
        """A trading halt (or its end) reported by a feed."""
        if halted:
            self.halted.add(symbol)
        else:
            self.halted.discard(symbol)

    def ingest_daily(self, bars: pl.DataFrame) -> list[Rejection]:
        """Upsert session bars by (symbol, session); they count once their session has closed."""
        bars = bars.select(list(DAILY_SCHEMA)).cast(DAILY_SCHEMA)  # type: ignore[arg-type]
        bad = _bad_bar(bars)
        off = ~pl.col("session").is_in(self.sessions.frame.get_column("session").implode())
        # One select: polars checks the bars and their order side by side.
        flags = bars.select(bad.alias("bad"), off.alias("off"), _in_order(KEY).alias("in_order"))
        wrong = flags.get_column("bad") | flags.get_column("off")
        in_order = bool(flags.get_column("in_order").slice(1).all())
        rejections: list[Rejection] = []
        good = bars
        if wrong.any():  # (no copy of a whole universe's history when every bar is fine)
            why = flags.select(
                pl.when("bad").then(pl.lit("bad_bar")).otherwise(pl.lit("not_a_session"))
            ).to_series()
            rejected = bars.with_columns(why.alias("why")).filter(wrong)
            rejections = [
                Rejection(reason=reason, symbol=sym, raw=f"{sym} {session}")
                for sym, session, reason in rejected.select("symbol", "session", "why").iter_rows()
            ]
            good = bars.filter(~wrong)  # (a subsequence of rows in order is in order)
        self._pending_daily = _upsert(self._pending_daily, good, KEY, in_order)
        return rejections

    @property
    def book(self) -> BarBook:
        """The tick-to-bar builder, created on first use."""
        if self._book is None:
            from monitor.core.bars import BarBook

            self._book = BarBook(self.sessions, **self._bar_options)
        return self._book

    def book_counts(self) -> dict[str, int]:
        """What the bar builder counted: rejections by reason, "late_tick_corrected",
        "bar_replaced", "dedup_keys_dropped_early" (empty before the first tick or bar)."""
        return dict(self._book.counts) if self._book is not None else {}

    # ---------------------------------------------------------------- advance
    def advance(self, now: dt.datetime, *, deferred: bool = False) -> Step:
        """Close what `now` closes, evaluate rules on newly closed periods, return the alerts.
        `deferred`: build the alert payloads only as the Step's `line_chunks` are read (replay
        writes a chunk while the next is built, and never holds all of them)."""
        self.now = now
        self._last_closed_seen = self.sessions.last_closed(now)
        minute_bars, built_daily = empty(MINUTE_SCHEMA), empty(DAILY_SCHEMA)
        if self._book is not None:
            closed = self._book.advance(now)
            minute_bars, built_daily = closed.minute, closed.daily
            if built_daily.height:
                self._pending_daily = _upsert(self._pending_daily, built_daily, KEY)
        new_daily = self._close_daily(now)
        if minute_bars.height:
            self.minutes = _add_minutes(self.minutes, minute_bars, self._minute_history)
        late = self._late_periods(minute_bars, new_daily)
        parts: list[tuple[Rule, pl.DataFrame]] = []
        if minute_bars.height:
            parts += self._evaluate("1m", now, "1m" in late)
        if new_daily.height:
            parts += self._evaluate("1d", now, "1d" in late)
            if any(r.timeframe == "1w" for r in self.rules):
                parts += self._evaluate("1w", now, "1w" in late)
        if deferred:
            lines: pl.DataFrame | LineChunks = LineChunks(parts, self.ctx, self._new)
        else:
            lines = self._new([alert_lines(fired, rule, self.ctx) for rule, fired in parts])
        return Step(lines, minute_bars, new_daily, [], parts)

    def _late_periods(self, minute_bars: pl.DataFrame, daily: pl.DataFrame) -> set[str]:
        """The timeframes whose last evaluated period got bars in this step: bars of one period
        come in several batches (a feed's daily bars symbol by symbol, a second or a minute
        apart), and the firings the late ones make are as new as the first ones'. Those
        periods are evaluated again (an alert emitted already is not emitted twice). Bars of
        earlier periods are corrections: stored, they fire nothing."""
        late: set[str] = set()
        minute = self._evaluated.get("1m")
        if minute is not None and minute_bars.height:
            ends = minute_bars.get_column("start") + dt.timedelta(minutes=1)
            if (ends == minute).any():
                late.add("1m")
        day, week = self._evaluated.get("1d"), self._evaluated.get("1w")
        if not daily.height or (day is None and week is None):
            return late
        sessions = daily.get_column("session")  # (a session closes on its own date)
        if day is not None and (sessions == day.astimezone(NEW_YORK_ZONE).date()).any():
            late.add("1d")
        if week is not None:  # (bars of its days, or of a later day: see `weekly`)
            label = week.astimezone(NEW_YORK_ZONE).date()
            weeks = self.sessions.frame.filter(pl.col("session").is_in(sessions.unique().implode()))
            if (weeks.get_column("week") >= label).any():
                late.add("1w")
        return late

    def evaluates(self, now: dt.datetime, batch: FeedBatch | None = None) -> bool:
        """Whether `advance(now)` after ingesting `batch` may evaluate rules over the history:
        daily bars arrive or wait to close, a session closed since the last step, or, with
        minute rules, a minute bar closes (over a full minute history that takes a few hundred
        ms for 2,000 symbols)."""
        if batch is not None and batch.daily_bars.height:
            return True
        if self._minute_rules:
            if batch is not None and batch.minute_bars.height:
                return True
            if self._book is not None and self._book.closes_by(now):
                return True
        if self._pending_daily.height:
            return True
        closed = self.sessions.last_closed(now)
        return closed != self._last_closed_seen

    def warm(self, now: dt.datetime) -> int:
        """Advance without emitting: load history so that only later periods can fire.
        Returns how many historical firings were recorded as already seen."""
        step = self.advance(now)
        return step.lines.height

    def _close_daily(self, now: dt.datetime) -> pl.DataFrame:
        if self._pending_daily.is_empty():
            return empty(DAILY_SCHEMA)
        last = self.sessions.last_closed(now)
        if last is None:
            return empty(DAILY_SCHEMA)
        pending = self._pending_daily
        if pending.get_column("session").max() <= last:  # type: ignore[operator]
            done, self._pending_daily = pending, empty(DAILY_SCHEMA)
        else:
            done = pending.filter(pl.col("session") <= last)
            self._pending_daily = pending.filter(pl.col("session") > last)
        if done.height:  # (pending bars are kept sorted and unique: `done` is too)
            self.daily = _upsert(self.daily, done, KEY, in_order=True)
        return done

    # -------------------------------------------------------------- evaluate
    def _evaluate(
        self, timeframe: str, now: dt.datetime, late: bool = False
    ) -> list[tuple[Rule, pl.DataFrame]]:
        """The firings of every rule of `timeframe` in the periods closed since the last call
        (and, when `late`, in the last period evaluated: see `_late_periods`), with the rule."""
        rules = [r for r in self.rules if r.timeframe == timeframe]
        if not rules:  # e.g. minute bars closing while every rule is daily
            return []
        base = self._base(timeframe, now)
        if base.is_empty():
            return []
        after = self.watermarks.get(timeframe)
        if late and after is not None:  # (bar closes are whole seconds: this takes in `after`)
            after -= dt.timedelta(microseconds=1)
        # A universe's history is evaluated a piece of symbols at a time by the rules whose
        # firings on a symbol depend on its bars alone: the derived columns and every rule's
        # intermediates are then held for a piece, not for 8 million bars (a third fewer fresh
        # pages; with pieces shared out, both cores stay busy to the end). Every other rule
        # sees the whole frame, as does every rule of a frame too small to cut.
        pieces = _pieces(base, PIECE_ROWS)
        local = [r for r in rules if firing.per_symbol(r)] if len(pieces) > 1 else []
        whole = [r for r in rules if r not in local]
        # A task: rules, and the bars they run over (a piece still to derive, or all derived).
        tasks: list[tuple[list[Rule], pl.DataFrame, bool]] = []
        if local:
            tasks += [(local, piece, True) for piece in pieces]
        if whole:
            everything = self._derived(base, timeframe)
            tasks += [([rule], everything, False) for rule in whole]

        def evaluate(task: tuple[list[Rule], pl.DataFrame, bool]) -> list[_Evaluated]:
            mine, bars, piece = task
            if piece:
                bars = self._derived(bars, timeframe)
            done = []
            for rule in mine:
                tracked: list[Progress] | None = [] if self.track_progress else None
                base: list[pl.DataFrame] | None = [] if self.baseline is not None else None
                fired = firing.firings(bars, rule, self.ctx, after, tracked, base)
                latest: dt.datetime = bars.get_column("ts").max()  # type: ignore[assignment]
                done.append(_Evaluated(rule, fired, tracked, base, latest))
            return done

        if self.rule_threads > 1 and len(tasks) > 1:
            # Tasks are independent and polars releases the GIL: two at a time keep both cores
            # busy through each one's single-threaded stretches (replay: about 10% sooner on
            # the universe). Off in the daemon, whose event loop needs the GIL between steps.
            workers = min(self.rule_threads, len(tasks))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rules") as pool:
                results = [e for done in pool.map(evaluate, tasks) for e in done]
        else:
            results = [e for task in tasks for e in evaluate(task)]
        out: list[tuple[Rule, pl.DataFrame]] = []
        for rule in rules:
            mine = [e for e in results if e.rule is rule]  # (in piece order)
            if self.baseline is not None:
                self.baseline.setdefault(rule.id, []).extend(
                    b for e in mine for b in e.baseline or []
                )
            if self.track_progress:
                tracked = [p for e in mine for p in e.progress or []]
                self.progress[rule.id] = sorted(tracked, key=lambda p: (p.symbol, p.variant))
            out.append((rule, _joined([e.fired for e in mine])))
        latest = self._evaluated[timeframe] = max(e.latest for e in results)
        # Never back: `emit_after` (replay's --from) may lie past a first batch's last bar.
        self.watermarks[timeframe] = max(latest, self.watermarks.get(timeframe, latest))
        return out

    def _new(self, lines: list[pl.DataFrame]) -> pl.DataFrame:
        """The lines whose alert ids were never emitted, sorted by ts, rule, symbol and id; their
        ids join `fired`."""
        lines = [part for part in lines if part.height]
        if not lines:
            return empty(LINE_SCHEMA)
        both = pl.concat(lines) if len(lines) > 1 else lines[0]
        ids = both.get_column("id")
        # A replay's chunks are checked by polars, without a loop over their ids; past a few
        # pending columns (many small steps, as the daemon makes) the set takes over.
        if not self._fired and len(self._pending_ids) < 16:
            keep = ids.is_first_distinct()
            if self._pending_ids:
                keep = keep & ~ids.is_in(pl.concat(self._pending_ids).implode())
            self._pending_ids.append(ids.filter(keep))
        else:
            fired, new = self.fired, []
            for alert_id in ids.to_list():
                new.append(alert_id not in fired)
                fired.add(alert_id)
            keep = pl.Series(new, dtype=pl.Boolean)
        if not keep.all():
            both = both.filter(keep)
        return both.sort("ts", "rule", "symbol", "id")

    @property
    def fired(self) -> set[str]:
        """The ids of every alert emitted (or restored). Until something asks, ids emitted into
        an empty set stay polars columns: a replay's hundreds of thousands never become Python
        strings."""
        for ids in self._pending_ids:
            self._fired.update(ids.to_list())
        self._pending_ids.clear()
        return self._fired

    def frame(self, timeframe: str, now: dt.datetime | None = None) -> pl.DataFrame:
        """Closed bars of a timeframe for rule evaluation: symbol, session, ts (bar close), OHLCV,
        `idx` (period number within the symbol) and `ret1` (period return)."""
        return self._derived(self._base(timeframe, now), timeframe)

    def _base(self, timeframe: str, now: dt.datetime | None) -> pl.DataFrame:
        """The closed bars of a timeframe, sorted by symbol and time, before `_derived`."""
        if timeframe == "1d":
            return self.daily
        if timeframe == "1w":
            return self.weekly(now).sort("symbol", "ts")
        return self.minutes

    def _derived(self, bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
        """`frame` of `_base`'s bars, or of a piece of them cut between symbols."""
        row = pl.int_range(pl.len(), dtype=pl.Int64)
        first = (pl.col("symbol") != pl.col("symbol").shift()).fill_null(True)
        # Rows are sorted by symbol: idx is the row number less that of the symbol's first row.
        idx = (row - pl.when(first).then(row).forward_fill()).alias("idx")
        if timeframe == "1d":
            # Every stored session is a session of the calendar (`ingest_daily` sees to it).
            # (One `with_columns` for both: polars computes them side by side.)
            close = self.sessions.close_of_expr(pl.col("session"))
            frame = bars.with_columns(close, idx)
        elif timeframe == "1w":
            frame = bars.with_columns(idx)
        else:
            frame = bars.with_columns(
                minute_date(pl.col("start")).alias("session"),
                (pl.col("start") + pl.duration(minutes=1)).alias("ts"),
                idx,
            ).drop("start")
        weekly = ["short_week"] if timeframe == "1w" else []
        return frame.with_columns(metrics.period_return().alias("ret1")).select(
            "symbol", "session", "ts", *PRICE_COLS, "volume", "idx", "ret1", *weekly
        )

    def weekly(self, now: dt.datetime | None = None) -> pl.DataFrame:
        """Closed trading weeks: labelled by the week's last session (`session`), `ts` its close,
        `short_week` when the week had fewer than five sessions. A symbol's week is closed once
        it has a bar of the week's last session, or bars of a later session have come (of any
        symbol): bars that come symbol by symbol would otherwise close a week early, at the
        close of a day before the last, for the symbols whose last bar was still to come."""
        weeks = self.sessions.frame.select("session", "week", "short_week")
        closes = self.sessions.frame.select(
            pl.col("session").alias("week"), pl.col("close_ts").alias("ts")
        )
        last = self.daily.get_column("session").max() if self.daily.height else None
        frame = (
            self.daily.join(weeks, on="session")
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

    # ------------------------------------------------------------------ state
    def state(self) -> EngineState:
        """A snapshot of what must survive a restart."""
        return EngineState(fired=sorted(self.fired), watermarks=dict(self.watermarks))

    def restore(self, state: EngineState) -> None:
        """Continue from a snapshot: already-emitted alerts are not emitted again."""
        self.fired.update(state.fired)
        for tf, ts in state.watermarks.items():
            if tf not in self.watermarks or ts > self.watermarks[tf]:
                self.watermarks[tf] = ts

    def bar_state(self) -> BookState | None:
        """The bar builder's sessions, for a restart to continue them (None before any tick or
        bar was taken in)."""
        return self._book.state() if self._book is not None else None

    def restore_bars(self, state: BookState, now: dt.datetime) -> bool:
        """Continue the bar builder from `state` unless it is stale at `now` (see
        `BarBook.restore`); its closed minute bars rejoin `minutes`. Whether it did."""
        if not self.book.restore(state, now):
            return False
        closed = self.book.closed_minutes()
        if closed.height:
            self.minutes = _add_minutes(self.minutes, closed, self._minute_history)
        return True


class _Evaluated(NamedTuple):
    """One rule's firings over one frame (or piece), what it tracked, and the frame's last ts."""

    rule: Rule
    fired: pl.DataFrame
    progress: list[Progress] | None
    baseline: list[pl.DataFrame] | None
    latest: dt.datetime


def _pieces(bars: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    """`bars` (sorted by symbol) cut between symbols into pieces of about `rows` rows (views,
    not copies): a per-symbol rule over a universe's history, a piece at a time, holds a
    piece's intermediate columns at once, not the whole history's."""
    if bars.height < 2 * rows:
        return [bars]
    symbols = bars.get_column("symbol")
    cuts = [0]
    for row in range(rows, bars.height, rows):
        end = int(symbols.search_sorted(symbols[row], "right"))  # (past that symbol's rows)
        if cuts[-1] < end < bars.height:
            cuts.append(end)
    cuts.append(bars.height)
    return [bars.slice(a, b - a) for a, b in itertools.pairwise(cuts)]


def _joined(fired: list[pl.DataFrame]) -> pl.DataFrame:
    """One rule's firings from its pieces, in time order (within an instant, by piece)."""
    some = [frame for frame in fired if frame.height]
    if len(some) < 2:
        return some[0] if some else fired[0]
    return pl.concat(some, how="vertical_relaxed").sort("ts", maintain_order=True)


def _bad_bar(bars: pl.DataFrame) -> pl.Expr:
    prices = [pl.col(c) for c in PRICE_COLS]
    # Finite and positive. (NaN sorts above every number in polars: `> 0` alone would let it
    # through, `< inf` does not; one comparison cheaper than `is_finite`.)
    good = pl.all_horizontal([(p > 0) & (p < math.inf) for p in prices]).fill_null(False)
    bad = ~good
    bad = bad | (pl.col("high") < pl.col("low")) | pl.col("symbol").is_null()
    bad = bad | pl.col("session").is_null() | (pl.col("volume") < 0).fill_null(False)
    return bad


def _upsert(
    old: pl.DataFrame, new: pl.DataFrame, key: list[str], in_order: bool | None = None
) -> pl.DataFrame:
    """Rows of `new` replace rows of `old` with the same key; the result is sorted by key.
    `in_order`: whether `new` is known to be strictly increasing in `key` (None: find out)."""
    if old.is_empty():
        if in_order if in_order is not None else _sorted_unique(new, key):
            return new
        return new.unique(subset=key, keep="last", maintain_order=True).sort(key)
    both = pl.concat([old, new.select(old.columns)], how="vertical_relaxed")
    return both.unique(subset=key, keep="last", maintain_order=True).sort(key)


def _add_minutes(old: pl.DataFrame, new: pl.DataFrame, history: int) -> pl.DataFrame:
    """Upsert closed minute bars into `old` (sorted by symbol and start) and keep the last
    `history` of each symbol. Bars of a minute after every stored one (the usual close) are
    merged in one linear pass: a full upsert re-sorts every row (0.5 s for two sessions of 2,000
    symbols, every minute)."""
    key = ["symbol", "start"]
    later = old.height and new["start"].min() > old["start"].max()  # type: ignore[operator]
    if later and _sorted_unique(new, key):
        merged = old.merge_sorted(new, "symbol")  # per symbol, the old bars first
    else:
        merged = _upsert(old, new, key)
    symbol, row = pl.col("symbol"), pl.int_range(pl.len(), dtype=pl.Int64)
    last_of_symbol = pl.when((symbol != symbol.shift(-1)).fill_null(True)).then(row)
    return merged.filter(last_of_symbol.backward_fill() - row < history)


def _sorted_unique(frame: pl.DataFrame, key: list[str]) -> bool:
    """True when `frame` is strictly increasing in `key` (so already sorted and unique): one
    vectorised comparison of each row with the previous, much cheaper than unique + sort."""
    if frame.height < 2:
        return True
    return bool(frame.select(_in_order(key).slice(1).all()).item())


def _in_order(key: list[str]) -> pl.Expr:
    """Per row, whether it is greater in `key` than the row before (lexicographically; the
    first row's value is meaningless)."""
    increasing = pl.lit(False)
    for k in reversed(key):  # lexicographic: (k0, k1, ...) > previous row's
        col = pl.col(k)
        increasing = (col > col.shift(1)) | ((col == col.shift(1)) & increasing)
    return increasing
