"""The engine: ingest(batch) / advance(now) -> alerts. The same object runs live and in replay.

It keeps closed session (daily) bars for the universe, derives trading weeks from them, builds
minute and session bars from ticks (through a BarBook), and on each `advance` evaluates every rule
over the whole universe at once, emitting the firings in periods that closed since the last call.
An alert id it has emitted is never emitted again (`fired`), so corrections do not repeat alerts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import polars as pl

from monitor.core import bar_history, bar_state, evaluation
from monitor.core.bar_history import PRICE_COLS as PRICE_COLS  # (re-exported)
from monitor.core.bar_history import not_held
from monitor.core.clock_queue import FUTURE_SKEW
from monitor.core.closed_minutes import refusals, still_held
from monitor.core.duplicate_keys import TRADE_KEY
from monitor.core.emitted import Emitted
from monitor.core.model import (
    DAILY_SCHEMA,
    MINUTE_SCHEMA,
    TICK_SCHEMA,
    FeedBatch,
    Rejection,
    empty,
)
from monitor.core.official_bars import OfficialBars
from monitor.core.payload import LineChunks, alert_lines
from monitor.core.price_check import PriceCheck, Reset
from monitor.core.progress import Progress, records
from monitor.core.rules.context import RuleContext
from monitor.core.rules.spec import Rule, RulesFile
from monitor.core.screen import Screen
from monitor.core.sessions import Sessions
from monitor.core.step import EngineState as EngineState  # (re-exported)
from monitor.core.step import Step as Step  # (re-exported)
from monitor.core.step_periods import MINUTES_APART, exchange_date, late_periods, minute_batches

if TYPE_CHECKING:
    from monitor.core.bar_state import BookState
    from monitor.core.bars import BarBook
    from monitor.core.book_frames import PrintCheck

KEY = bar_history.DAILY_KEY
# bars per piece of a universe for per-symbol rules (see `monitor.core.evaluation.pieces`)
PIECE_ROWS = 1_000_000


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
        max_jump_confirm: int = 5,
        rule_threads: int = 1,
        minute_by_minute: bool = False,
        hold_cut_short: bool = False,
    ) -> None:
        self.rules = rules.enabled
        self.sessions = sessions
        self.ctx = RuleContext(names=dict(rules.names), short_interest=short_interest)
        self.daily: pl.DataFrame = empty(DAILY_SCHEMA)
        self.minutes: pl.DataFrame = empty(MINUTE_SCHEMA)
        self._pending_daily: pl.DataFrame = empty(DAILY_SCHEMA)
        self.emitted = Emitted()  # the ids of the alerts emitted: each passes once
        self.watermarks: dict[str, dt.datetime] = {}  # alerts are emitted for periods after
        self._evaluated: dict[str, dt.datetime] = {}  # the last period evaluated, by timeframe
        if emit_after is not None:
            self.watermarks = {tf: emit_after for tf in ("1m", "1d", "1w")}
        self.counts: Counter[str] = Counter()
        # What was taken in since `take_accepted` (the daemon journals it: `monitor.journal`).
        self.accepted = FeedBatch.empty("accepted")
        self._bar_options = bar_options or {}
        self._book: BarBook | None = None
        self._minute_history = minute_history
        # the universe and the halts: what of a feed's rows is refused (`monitor.core.screen`)
        self.screen = Screen(sessions, universe or None)
        self.max_jump = max_jump
        self.max_jump_confirm = max_jump_confirm  # out-of-band prints in a row: a new level
        self._prices: PriceCheck | None = None
        self._last_closed_seen: dt.date | None = None
        self._corrected = 0  # session bars of periods already evaluated (see `book_counts`)
        self._official = OfficialBars(sessions)  # a provider's session bars outrank built ones
        self.track_progress = False
        # rule id -> `firing.every_period` rows of each evaluation, when asked for (replay's
        # summary: what followed any period, beside what followed the alerts)
        self.baseline: dict[str, list[pl.DataFrame]] | None = None
        self.progress: dict[str, list[Progress]] = {}
        self.now: dt.datetime | None = None
        self.rule_threads = rule_threads
        self._minute_rules = any(r.timeframe == "1m" for r in self.rules)
        # Minute rules evaluated a minute at a time, however minutes come (`_add_minutes`):
        # the daemon's; replay steps a day at a time, for speed (see README).
        self.minute_by_minute = minute_by_minute
        self.minutes_apart = MINUTES_APART  # (at most, a step's: see `minute_batches`)
        # Session bars of minutes cut short held back at the close: the daemon's (replay
        # refuses them from the whole data; see `monitor.core.closed_minutes`).
        self.hold_cut_short = hold_cut_short

    # ----------------------------------------------------------------- ingest
    def ingest(
        self, batch: FeedBatch, *, taken: bool = False, now: dt.datetime | None = None
    ) -> list[Rejection]:
        """Take a batch of ticks and bars, then its cancels (`BarBook.take_back`; a
        correction of a trade refused when it came, a bad print or one its feed's `excluded`
        names, is put in as a tick at that trade's time: `corrections_of_rejected`); bad rows
        come back as rejections (also counted), the rows taken in join `accepted` (see
        `take_accepted`; the cancels applied too, not the trades a correction put in).
        `taken`: rows this engine took in before (a journal's, after a restart), not
        screened again: the universe and halts may have changed since, and the bad-print
        reference that passed them is not kept; and none of them waits for the clock
        (provider minute bars among them are closed at once), as they were taken then (the
        restored clock is the last save's, before them).
        `now`: the clock the step that takes the batch advances to (the daemon's): a session
        bar of a session not opened by then is refused (`future_bar`; replay, whose bars come
        ahead of its clock, gives none)."""
        rejections = list(batch.rejections)
        accepted = self.accepted
        # Bad prints are screened by the bar builder after its own checks: a print it refuses
        # (outside the session, a duplicate) is no reference and confirms no new level. Session
        # bars are not screened (see `monitor.core.price_check`); their closes are noted.
        check = None if taken else self._price_check()
        if batch.ticks.height:
            ticks = batch.ticks if taken else self.screen.apply(batch.ticks, "price", rejections)
            rejections += self.book.ingest_ticks(ticks, check, taken=taken)
            new = self.book.accepted.select(list(TICK_SCHEMA))
            accepted.ticks = _then(accepted.ticks, new)
            self._note_prices(new, "price", "ts")
        if batch.minute_bars.height:
            bars = batch.minute_bars
            bars = bars if taken else self.screen.apply(bars, "close", rejections)
            rejections += self.book.ingest_minute_bars(bars, check, taken=taken)
            self._took_minutes(self.book.accepted)
        if batch.daily_bars.height:
            daily = batch.daily_bars
            if taken:  # (a journal's: the history may hold them already, filtered out below,
                # and they still outrank a bar built from trades after the restart)
                self._official.note(daily, self.now)
            # (a journal's bars that the history holds as they are were stored before the
            # stop: taken in again, they would count as corrections of evaluated sessions)
            daily = (
                not_held(daily, self.daily)
                if taken
                else self._not_ahead(self.screen.apply(daily, "close", rejections), now, rejections)
            )
            refused, good = self._ingest_daily(daily)
            if not taken:
                self._official.note(good, self.now)
            rejections += refused
            accepted.daily_bars = _then(accepted.daily_bars, good)
        if batch.excluded.height and not taken:  # (trades its conditions kept out: their time)
            self.book.note_excluded(self.screen.known(batch.excluded))
        if batch.cancels.height:  # (after the ticks: a trade and its cancel in one batch)
            cancels = batch.cancels
            if not taken:  # (a correction of a trade refused when it came: placed as a tick)
                fixed, cancels = self.book.corrections_of_rejected(cancels)
                if fixed.height:
                    fixed = self.screen.apply(fixed, "price", rejections)
                    rejections += self.book.ingest_ticks(fixed, check)
                    new = self.book.accepted.select(list(TICK_SCHEMA))
                    accepted.ticks = _then(accepted.ticks, new)
                    self._note_prices(new, "price", "ts")
            rejections += self.book.take_back(cancels)
            accepted.cancels = _then(accepted.cancels, self.book.taken_back)
            self._retake_prices(batch.cancels, self.book.taken_back)
        for r in rejections:
            self.counts[r.reason] += 1
        return rejections

    def _not_ahead(
        self, bars: pl.DataFrame, now: dt.datetime | None, rejections: list[Rejection]
    ) -> pl.DataFrame:
        """`bars` less those of a session that has not opened by `now` (more than FUTURE_SKEW
        ahead; None: no check), rejected as `future_bar` into `rejections`: taken, such a bar
        would wait as the session's official bar and its close become the reference prints
        are held to."""
        if now is None or bars.is_empty():
            return bars
        latest = now + FUTURE_SKEW
        days = bars.get_column("session").drop_nulls().unique().to_list()
        # (a day that is no session is `not_a_session`'s, of `bar_history.checked_daily`)
        ahead = [
            d for d in days if self.sessions.is_session(d) and self.sessions.open_of(d) > latest
        ]
        if not ahead:
            return bars
        future = pl.col("session").is_in(ahead)
        rejections += [
            Rejection("future_bar", symbol, f"{symbol} {session}: its session has not opened")
            for symbol, session in bars.filter(future).select("symbol", "session").iter_rows()
        ]
        return bars.filter(~future)

    def _took_minutes(self, bars: pl.DataFrame) -> None:
        """Provider minute bars the book took: in `accepted`, their closes noted."""
        new = bars.select(list(MINUTE_SCHEMA))
        self.accepted.minute_bars = _then(self.accepted.minute_bars, new)
        self._note_prices(new, "close", "start")

    def take_accepted(self) -> FeedBatch:
        """The rows taken in since the last call (by `ingest`, and provider bars that waited
        for the clock, by `advance`): what the daemon journals after a step."""
        accepted, self.accepted = self.accepted, FeedBatch.empty("accepted")
        return accepted

    def _price_check(self) -> PrintCheck | None:
        """The bad-print screen the bar builder runs (`bad_print`, see
        `monitor.core.price_check`), None without `max_jump`."""
        if self.max_jump is None:
            return None
        wanted = (self.max_jump, self.max_jump_confirm)
        if self._prices is None or (self._prices.max_jump, self._prices.confirm) != wanted:
            self._prices = PriceCheck(*wanted, lambda: self.daily)
        return self._prices.screen

    def _note_prices(self, accepted: pl.DataFrame, price: str, order: str) -> None:
        if self._prices is not None:
            self._prices.note(accepted, price, order)

    def _retake_prices(self, cancels: pl.DataFrame, taken_back: pl.DataFrame) -> None:
        """After `cancels` (`taken_back`: those applied), the prints they name no longer count
        toward a new level (a busted print rejected, then cancelled), and the bad-print
        reference of the symbols of those applied is their latest trade still standing: a
        busted print that had become it would otherwise get the next good prints rejected as
        bad prints (see `PriceCheck.drop_prints` and `retake`)."""
        if self._prices is None:
            return
        self._prices.drop_prints(cancels.select("symbol", TRADE_KEY.alias("key")))
        if taken_back.height:
            symbols = taken_back.get_column("symbol").unique().to_list()
            self._prices.retake(symbols, self.book.latest_prices(symbols))

    def take_price_resets(self) -> list[Reset]:
        """Reference prices replaced since the last call (see `monitor.core.price_check`)."""
        return self._prices.take_resets() if self._prices is not None else []

    def set_halted(self, symbol: str, halted: bool, at: dt.datetime | None = None) -> None:
        """A trading halt (or its end), `at` when (None: now; see `monitor.core.screen`)."""
        self.screen.set_halted(symbol, halted, at or self.now)

    def ingest_daily(self, bars: pl.DataFrame) -> list[Rejection]:
        """Upsert session bars by (symbol, session); they count once their session has closed."""
        return self._ingest_daily(bars)[0]

    def _ingest_daily(self, bars: pl.DataFrame) -> tuple[list[Rejection], pl.DataFrame]:
        """`ingest_daily`, with the bars taken in."""
        rejections, good, in_order = bar_history.checked_daily(bars, self.sessions)
        self._pending_daily = bar_history.upsert(self._pending_daily, good, KEY, in_order)
        self._note_prices(good, "close", "session")
        return rejections, good

    @property
    def book(self) -> BarBook:
        """The tick-to-bar builder, created on first use."""
        if self._book is None:
            from monitor.core.bars import BarBook

            self._book = BarBook(
                self.sessions,
                hold_cut_short=self.hold_cut_short,
                exempt=self.screen.halted,  # (the same set: `set_halted` changes it in place)
                **self._bar_options,
            )
            if self.now is not None:  # (ticks and bars ahead of the clock wait: see BarBook)
                self._book.start_clock(self.now)
        return self._book

    def book_counts(self) -> dict[str, int]:
        """What the bar builder counted: rejections by reason, "late_tick_corrected",
        "bar_replaced", "dedup_keys_dropped_early", the cancels' "trade_cancelled",
        "trade_corrected", "cancel_minute_corrected", "cancel_bar_removed",
        "rejected_trade_corrected" and "cancel_ticks_dropped_early" (empty before the first
        tick or bar); and
        "daily_bar_corrected": session bars of a period before the last one evaluated, stored
        as corrections (they fire nothing); "provider_session_bar_kept": session bars built
        from trades left out for a provider's (monitor.core.official_bars)."""
        counts = dict(self._book.counts) if self._book is not None else {}
        if self._corrected:
            counts["daily_bar_corrected"] = self._corrected
        if self._official.kept:
            counts["provider_session_bar_kept"] = self._official.kept
        return counts

    def held(self) -> dict[dt.date, dict[str, str]]:
        """The session bars held back as cut short (`hold_cut_short`): session -> symbol ->
        why; but of a symbol with a bar of that session all the same (a provider's)."""
        return still_held(self._book.held(), self.daily) if self._book is not None else {}

    # ---------------------------------------------------------------- advance
    def advance(
        self, now: dt.datetime, *, deferred: bool = False, close_at: dt.datetime | None = None
    ) -> Step:
        """Close what `now` closes, evaluate rules on newly closed periods, return the alerts
        (and, in `rejections`, ticks and provider bars found to be from the future).
        `deferred`: build the alert payloads only as the Step's `line_chunks` are read (replay
        writes a chunk while the next is built, and never holds all of them).
        `close_at`: minutes and sessions close by it when it is earlier than `now` (the
        daemon's close clock while a feed catches up on a backlog: see `BarBook.advance`);
        `now` is still the clock for everything else."""
        self.now = now
        closing = self._closing(now, close_at)
        minute_bars, built_daily = empty(MINUTE_SCHEMA), empty(DAILY_SCHEMA)
        rejected: list[Rejection] = []  # (ticks and provider bars from the future: `BarBook`)
        if self._book is not None:
            closed = self._book.advance(now, close_at)
            closing = self._book.closes_at or closing
            minute_bars, built_daily, rejected = closed.minute, closed.daily, closed.rejected
            if closed.removed.height:  # (every trade cancelled: rules no longer see them)
                self.minutes = self.minutes.join(closed.removed, on=["symbol", "start"], how="anti")
            rejected = [*rejected, *refusals(closed.cut_short, self.daily)]
            self.counts.update(r.reason for r in rejected)
            if closed.taken.height:
                self._took_minutes(closed.taken)
            if closed.taken_ticks.height:
                new = closed.taken_ticks.select(list(TICK_SCHEMA))
                self.accepted.ticks = _then(self.accepted.ticks, new)
                self._note_prices(new, "price", "ts")
            built_daily = self._official.without_official(built_daily, self._book.oldest_kept(now))
            if built_daily.height:
                self._pending_daily = bar_history.upsert(self._pending_daily, built_daily, KEY)
        self._last_closed_seen = self.sessions.last_closed(closing)
        new_daily = self._close_daily(closing)
        day = self._evaluated.get("1d")
        if new_daily.height and day is not None:
            evaluated = exchange_date(day)
            self._corrected += int((new_daily.get_column("session") < evaluated).sum())
        late = late_periods(self._evaluated, minute_bars, new_daily, self.sessions)
        parts: list[tuple[Rule, pl.DataFrame]] = []
        if minute_bars.height:
            parts += self._add_minutes(minute_bars, closing, "1m" in late)
        if new_daily.height:
            parts += self._evaluate("1d", closing, "1d" in late)
            if any(r.timeframe == "1w" for r in self.rules):
                parts += self._evaluate("1w", closing, "1w" in late)
        self.emitted.step()
        if deferred:
            lines: pl.DataFrame | LineChunks = LineChunks(parts, self.ctx, self.emitted.new)
        else:
            lines = self.emitted.new([alert_lines(f, rule, self.ctx) for rule, f in parts])
        return Step(lines, minute_bars, new_daily, rejected, parts)

    def _add_minutes(
        self, bars: pl.DataFrame, now: dt.datetime, late: bool
    ) -> list[tuple[Rule, pl.DataFrame]]:
        """Store closed minute bars and evaluate the minute rules on them (`late`: see
        `late_periods`). With `minute_by_minute`, a minute at a time (`minute_batches`), so a
        minute rule's memory (a running high, largest since, earlier alerts, a cooldown) is
        that of steps a minute apart however minutes were batched (a backlog, a journal taken
        up). Of a minute after the first only the symbols with a bar in it can fire: the
        per-symbol rules run over theirs; progress is tracked at the last minute (each
        evaluation replaces it)."""
        batches = [bars]
        if self.minute_by_minute and self._minute_rules:
            evaluated, watermark = self._evaluated.get("1m"), self.watermarks.get("1m")
            held, most = self.minutes.height + bars.height, self.minutes_apart  # (at most)
            batches = minute_batches(bars, evaluated, watermark, most, held)
        parts: list[tuple[Rule, pl.DataFrame]] = []
        for i, batch in enumerate(batches):
            self.minutes = bar_history.add_minutes(self.minutes, batch, self._minute_history)
            last = i == len(batches) - 1
            active = None if i == 0 or (last and self.track_progress) else batch["symbol"]
            parts += self._evaluate("1m", now, late and i == 0, active=active, progress=last)
        return parts

    def evaluates(
        self,
        now: dt.datetime,
        batch: FeedBatch | None = None,
        close_at: dt.datetime | None = None,
    ) -> bool:
        """Whether `advance(now, close_at=close_at)` after ingesting `batch` may evaluate
        rules over the history: daily bars arrive or wait to close, a session closed since the
        last step, or, with minute rules, a minute bar closes (over a full minute history that
        takes a few hundred ms for 2,000 symbols)."""
        if batch is not None and batch.daily_bars.height:
            return True
        if self._minute_rules:
            if batch is not None and batch.minute_bars.height:
                return True
            if self._book is not None and self._book.closes_by(now, close_at):
                return True
        if self._pending_daily.height:
            return True
        closed = self.sessions.last_closed(self._closing(now, close_at))
        return closed != self._last_closed_seen

    def _closing(self, now: dt.datetime, close_at: dt.datetime | None) -> dt.datetime:
        """The instant `advance(now, close_at=close_at)` closes periods by (the book's close
        clock never goes back)."""
        if self._book is not None:
            return self._book.closing(now, close_at)
        return now if close_at is None else min(now, close_at)

    @property
    def closes_at(self) -> dt.datetime | None:
        """The close clock: periods closed by it are (None: never advanced; see `advance`)."""
        held = self._book.closes_at if self._book is not None else None
        return held or self.now

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
            self.daily = bar_history.upsert(self.daily, done, KEY, in_order=True)
        return done

    # -------------------------------------------------------------- evaluate
    def _evaluate(
        self,
        timeframe: str,
        now: dt.datetime,
        late: bool = False,
        rules: list[Rule] | None = None,
        *,
        active: pl.Series | None = None,
        progress: bool = True,
    ) -> list[tuple[Rule, pl.DataFrame]]:
        """The firings of every rule of `timeframe` (of `rules`, when given) in the periods
        closed since the last call (and, when `late`, in the last period evaluated: see
        `late_periods`), with the rule. `active`: see `evaluation.evaluate_rules`;
        `progress`: whether to track it (when `track_progress`)."""
        rules = [r for r in (self.rules if rules is None else rules) if r.timeframe == timeframe]
        if not rules:  # e.g. minute bars closing while every rule is daily
            return []
        base = self._base(timeframe, now)
        if base.is_empty():
            return []
        after = self.watermarks.get(timeframe)
        if late and after is not None:  # (bar closes are whole seconds: this takes in `after`)
            after -= dt.timedelta(microseconds=1)
        # (per-symbol rules over a universe a piece of symbols at a time: see `evaluation`)
        results = evaluation.evaluate_rules(
            rules,
            base,
            timeframe,
            self.sessions,
            self.ctx,
            after,
            piece_rows=PIECE_ROWS,
            track_progress=self.track_progress and progress,
            baseline=self.baseline is not None,
            threads=self.rule_threads,
            active=active,
        )
        out: list[tuple[Rule, pl.DataFrame]] = []
        for rule in rules:
            mine = [e for e in results if e.rule is rule]  # (in piece order)
            if self.baseline is not None:
                self.baseline.setdefault(rule.id, []).extend(
                    b for e in mine for b in e.baseline or []
                )
            if self.track_progress and progress:
                self.progress[rule.id] = records([f for e in mine for f in e.progress or []])
            out.append((rule, evaluation.joined([e.fired for e in mine])))
        latest = self._evaluated[timeframe] = max(e.latest for e in results)
        # Never back: `emit_after` (replay's --from) may lie past a first batch's last bar.
        self.watermarks[timeframe] = max(latest, self.watermarks.get(timeframe, latest))
        return out

    @property
    def fired(self) -> set[str]:
        """The ids of every alert emitted (or restored): see `Emitted.ids`."""
        return self.emitted.ids

    def frame(self, timeframe: str, now: dt.datetime | None = None) -> pl.DataFrame:
        """Closed bars of a timeframe for rule evaluation: symbol, session, ts (bar close), OHLCV,
        `idx` (row number within the symbol), `num` (the period's number: see
        `bar_history.derived`) and `ret1` (period return)."""
        return bar_history.derived(self._base(timeframe, now), timeframe, self.sessions)

    def _base(self, timeframe: str, now: dt.datetime | None) -> pl.DataFrame:
        """The closed bars of a timeframe, sorted by symbol and time, before `derived`."""
        if timeframe == "1d":
            return self.daily
        if timeframe == "1w":
            return self.weekly(now).sort("symbol", "ts")
        return self.minutes

    def weekly(self, now: dt.datetime | None = None) -> pl.DataFrame:
        """Closed trading weeks of the daily bars, those closed by `now` when given (see
        `monitor.core.bar_history.weekly`: a symbol's week closes with its last session's bar)."""
        return bar_history.weekly(self.daily, self.sessions, now)

    # ------------------------------------------------------------------ rules
    def replace_rules(self, rules: RulesFile, ctx: RuleContext) -> int:
        """Evaluate `rules` (with `ctx`, made for them) from now on. A rule that is new, or whose
        parameters changed, fires from the next period on, as if it had run all along: its
        firings in the periods already evaluated (all of them, for a timeframe with no rule
        yet) are recorded as emitted, as `warm` records the history's at start. Returns how
        many; what rules left takes nothing with it but their progress."""
        before = {r.id: r for r in self.rules}
        self.rules, self.ctx = rules.enabled, ctx
        self._minute_rules = any(r.timeframe == "1m" for r in self.rules)
        ids = {r.id for r in self.rules}
        self.progress = {k: v for k, v in self.progress.items() if k in ids}
        changed = [r for r in self.rules if before.get(r.id) != r]
        if self.now is None or not changed:  # (nothing evaluated yet: `warm` will be)
            return 0
        parts: list[tuple[Rule, pl.DataFrame]] = []
        closing = self.closes_at or self.now  # (as `advance` evaluates: by the close clock)
        for timeframe in sorted({r.timeframe for r in changed}):
            # The last period evaluated again (`late`), or every period of a new timeframe.
            parts += self._evaluate(timeframe, closing, late=True, rules=changed)
        self.emitted.step()
        return self.emitted.new([alert_lines(f, rule, self.ctx) for rule, f in parts]).height

    # ------------------------------------------------------------------ state
    def state(self) -> EngineState:
        """A snapshot of what must survive a restart."""
        return EngineState(fired=sorted(self.fired), watermarks=dict(self.watermarks))

    def restore(self, state: EngineState) -> None:
        """Continue from a snapshot: already-emitted alerts are not emitted again. The minute
        evaluated last is the minute watermark's (`warm` finds the days' and weeks' from the
        history; minutes come back later): bars of that minute that come after the start are
        late bars of it, as before the stop (`late_periods`), not corrections."""
        self.fired.update(state.fired)
        for tf, ts in state.watermarks.items():
            if tf not in self.watermarks or ts > self.watermarks[tf]:
                self.watermarks[tf] = ts
        minute = self.watermarks.get("1m")
        if minute is not None and self._evaluated.get("1m", minute) <= minute:
            self._evaluated["1m"] = minute

    def bar_state(self) -> BookState | None:
        """The bar builder's sessions and the session bars waiting for their session's close
        (a provider's bars of the session under way), for a restart to continue them (None
        before any tick or bar was taken in)."""
        if self._book is None and self._pending_daily.is_empty():
            return None
        return msgspec.structs.replace(
            self.book.state(), daily=self._pending_daily, official=self._official.keys
        )

    def restore_bars(self, state: BookState, now: dt.datetime) -> bool:
        """Continue the bar builder from `state` unless it is stale at `now` (see
        `BarBook.restore`); its closed minute bars rejoin `minutes`. Whether it did."""
        if not self.book.restore(state, now):
            return False
        self._official.restore(state.official)
        closed = self.book.closed_minutes()
        if closed.height:
            self.minutes = bar_history.add_minutes(self.minutes, closed, self._minute_history)
            if self._minute_rules and "1m" not in self.watermarks:
                # Minute rules new since the state was saved (none evaluated minutes then):
                # the minutes closed before this start fire nothing, as `warm` has it for days.
                last: dt.datetime = closed.get_column("start").max()  # type: ignore[assignment]
                self.watermarks["1m"] = last + dt.timedelta(minutes=1)
        return True

    def restore_waiting(self, state: BookState, now: dt.datetime) -> int:
        """Take in again the session bars of `state` that waited for their session's close,
        unless it was saved later than `now` (a replay started over): a session since closed
        evaluates them, one evaluated already stores them as corrections. How many."""
        if state.daily.is_empty() or bar_state.from_later(state, now):
            return 0
        self.ingest_daily(state.daily)
        return state.daily.height


def _then(kept: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """`kept`'s rows, then `new`'s (`new` itself when there are none before it)."""
    return pl.concat([kept, new]) if kept.height else new
