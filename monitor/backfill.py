"""`market-monitor backfill`: daily history into the daemon's store, before it runs.

Daily files go in as `replay` reads them, screened by the daemon's engine (a day that is no
session is refused), over the stored bars (a file of closes only keeps stored full bars).
Minute and tick files go in as the session bars the daemon's engine builds of them, day by
day as `replay` feeds them (`monitor.replay_days`), of sessions already closed; a daily
file's bar of a session outranks one built.

Why apart from `monitor.cli`: the command line parses and dispatches; this is what one
command does with files, a store and an engine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TextIO

import polars as pl

from monitor.errors import EX_DATAERR, EX_TEMPFAIL
from monitor.intraday_read import read_intraday
from monitor.replay_command import rejected_lines

if TYPE_CHECKING:
    from monitor.core.model import Rejection
    from monitor.datafiles import LoadedBars
    from monitor.intraday_read import IntradayRead
    from monitor.store import Store


def _sessions_only(bars: pl.DataFrame) -> tuple[pl.DataFrame, list[Rejection]]:
    """The bars the daemon's engine takes, and its rejections of the others (`not_a_session`
    for a weekend or a holiday): its own screen, so the store holds nothing it would refuse."""
    if bars.is_empty():
        return bars, []
    from monitor.calendar import nyse_sessions
    from monitor.core.engine import Engine
    from monitor.core.model import FeedBatch
    from monitor.core.rules.spec import RulesFile

    days = bars.get_column("session")
    engine = Engine(RulesFile(), nyse_sessions(days.min(), days.max()))  # type: ignore[arg-type]
    batch = FeedBatch.empty("backfill")
    batch.daily_bars = bars
    refused = engine.ingest(batch)
    return (engine.take_accepted().daily_bars if refused else bars), refused


def closed(bars: pl.DataFrame, now: dt.datetime) -> tuple[pl.DataFrame, list[Rejection]]:
    """`bars` less those of a session still under way at `now` (`closed_sessions`): stored,
    such a bar would stand for the whole session."""
    if bars.is_empty():
        return bars, []
    from monitor.calendar import nyse_sessions
    from monitor.replay_days import closed_sessions

    days = bars.get_column("session")
    calendar = nyse_sessions(days.min(), days.max())  # type: ignore[arg-type]
    return closed_sessions(bars, calendar, now)


class _Built(NamedTuple):
    bars: pl.DataFrame
    rejections: list[Rejection]
    counts: Counter[str]  # (the engine's: as `replay` counts them, rows or symbols by reason)


def _built_sessions(read: IntradayRead) -> _Built:
    """The session bars the daemon's engine builds of minute bars and ticks (regular hours,
    a day at a time as `replay` feeds them: `monitor.replay_days.build_sessions`), of
    sessions closed by now (one still under way is `session_not_closed`, a day that is no
    session `not_a_session`). With the engine's rejections (outside the session, repeated,
    ...)."""
    from monitor.calendar import nyse_sessions
    from monitor.core.engine import Engine
    from monitor.core.model import DAILY_SCHEMA, empty
    from monitor.core.rules.spec import RulesFile
    from monitor.replay_days import IntradayData, build_sessions

    data = IntradayData(read.minutes, read.ticks)
    if data.is_empty():
        return _Built(empty(DAILY_SCHEMA), [], Counter())
    engine = Engine(RulesFile(), nyse_sessions(data.first_day(), data.last_day()))
    refused: list[Rejection] = []
    build_sessions(engine, data, rejected=refused, now=dt.datetime.now(dt.UTC))
    return _Built(engine.daily, refused, engine.counts)


def _close_only_of(bars: pl.DataFrame, loaded: LoadedBars) -> pl.Series:
    """`loaded.close_only` for the rows of `bars`: `loaded.bars` itself, or the part of it
    `_sessions_only` kept (in an order of its own)."""
    if bars is loaded.bars:
        return loaded.close_only
    keys = ["symbol", "session"]
    flags = loaded.bars.select(keys).with_columns(loaded.close_only.alias("close_only"))
    found = bars.select(keys).join(flags, on=keys, how="left", maintain_order="left")
    return found.get_column("close_only").fill_null(False)


def _count(n: int, word: str) -> str:
    """`1 bar`, `16,159 bars`."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _what_changed(written: int, added: int, changed: int) -> str:
    """What the bars backfilled did to the store: ` (1 new, 1 changed, 3 as stored already)`,
    ` (none new or changed: each as stored already)` for a backfill run again; nothing for
    none."""
    if not written:
        return ""
    if not added + changed:
        return " (none new or changed: each as stored already)"
    parts = [(added, "new"), (changed, "changed"), (written - added - changed, "as stored already")]
    return f" ({', '.join(f'{n:,} {what}' for n, what in parts if n)})"


def _kept_line(kept: int, different: int, over: str = "", whose: str = "") -> str:
    """What backfill says of the stored bars it kept over bars of a file of closes only (or
    `over` others); `whose`, what the kept bars are."""
    bars = "bar" if kept == 1 else "bars"
    over = over or "the closes of a file of closes only"
    line = f"kept {kept:,} stored {bars} with open, high, low and volume{whose} over {over}"
    if different:
        them = "it" if kept == 1 else f"{different:,} of them"
        line += f" ({them} closed differently: the stored bar is kept)"
    return line


def backfill(args: argparse.Namespace, lock_of: Callable[[Store], TextIO | None]) -> int:
    """`market-monitor backfill`: the files' session bars into the store, under its lock
    (`lock_of`: the lock, or None having said who holds it)."""
    from monitor import config as cfg
    from monitor.datafiles import parse_data_arg, read_many
    from monitor.store import Store

    config = cfg.load(args.config)
    store = Store(cfg.resolve(config, config.store.path))
    lock = lock_of(store)
    if lock is None:
        return EX_TEMPFAIL
    with lock:
        specs = [parse_data_arg(a) for a in args.data]
        daily_specs, intraday = read_intraday(specs, end=args.end)
        loaded = read_many(daily_specs, adjusted=args.adjusted, end=args.end)
        for note in loaded.notes:
            print(f"market-monitor: {note}", file=sys.stderr)
        bars, off = _sessions_only(loaded.bars)
        bars, under_way = closed(bars, dt.datetime.now(dt.UTC))
        off += under_way
        close_only = _close_only_of(bars, loaded)
        built, made = None, None
        if intraday is not None:
            from monitor.replay_days import merged_sessions

            made = _built_sessions(intraday)
            merged, kind = merged_sessions(bars, close_only, made.bars)
            built = merged.filter(kind == "built")
            bars, close_only = (
                merged.filter(kind != "built"),
                kind.filter(kind != "built") == "close",
            )
        upsert = store.upsert_bars(bars, close_only=close_only)
        # A session built of minutes or ticks does not replace a stored bar with more than a
        # close (a provider's, with its official close), unless a backfill built that one too.
        over = None
        if built is not None and built.height:
            over = store.upsert_bars(built, built=True)
    merged, written = (over or upsert).bars, upsert.written
    added, changed = upsert.added, upsert.changed
    if over is not None:
        written = pl.concat([written, over.written])
        added, changed = added + over.added, changed + over.changed
    symbols = written.get_column("symbol").n_unique() if written.height else 0
    print(
        f"backfilled {_count(written.height, 'bar')} of {_count(symbols, 'symbol')} into"
        f" {store.path}{_what_changed(written.height, added, changed)}; the store now holds"
        f" {_count(merged.height, 'bar')}"
    )
    counts = Counter(loaded.counts) + Counter(r.reason for r in off)
    if intraday is not None and made is not None:
        counts += Counter(intraday.counts) + made.counts
        off += made.rejections
    listed = [*loaded.rejections, *(intraday.rejections if intraday else []), *off]
    listed = [r for r in listed if r.reason != "outside_session"]  # (counted: by the hundred)
    for line in rejected_lines(counts, listed, intraday.unlisted if intraday else 0):
        print(f"market-monitor: {line}", file=sys.stderr)
    if upsert.kept:
        print(f"market-monitor: {_kept_line(upsert.kept, upsert.kept_different)}", file=sys.stderr)
    if over is not None and over.kept:
        whose = (
            ", a daily file's or the daemon's (a bar backfill built of minutes is replaced by"
            " one built again),"
        )
        what = "sessions built of minutes or ticks"
        line = _kept_line(over.kept, over.kept_different, what, whose)
        print(f"market-monitor: {line}", file=sys.stderr)
    if merged.height:  # (the history the daemon will run on: holes it should know of)
        from monitor.calendar import nyse_sessions
        from monitor.replay import gaps, gaps_line

        days = merged.get_column("session")
        found = gaps(merged, nyse_sessions(days.min(), days.max()))  # type: ignore[arg-type]
        if found:
            print(f"market-monitor: the store: {gaps_line(found)}", file=sys.stderr)
    if bars.is_empty() and (built is None or built.is_empty()):  # (none of them taken)
        why = (
            "every row of the files was rejected or refused (above)"
            if sum(counts.values())
            else f"the files have none up to --to {args.end}"
            if args.end is not None
            else "the files have none"
        )
        print(f"market-monitor: no bars to backfill: {why}", file=sys.stderr)
        return EX_DATAERR
    return 0
