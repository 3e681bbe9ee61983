"""Every rule of a timeframe run over its closed bars, the work cut into tasks and shared out.

A universe's history is evaluated a piece of symbols at a time by the rules whose firings on a
symbol depend on its bars alone (`pieces`); every other rule sees the whole frame. The tasks run
one after another or on a few threads, and a rule's firings from its pieces are put back into
one frame in time order (`joined`).

Why apart from `monitor.core.engine`: the engine decides which periods to evaluate and keeps
what comes of it (watermarks, progress, baselines); how the work is cut and shared out needs
none of its state, and is the engine's one use of threads.
"""

from __future__ import annotations

import datetime as dt
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import polars as pl

from monitor.core import firing
from monitor.core.bar_history import derived
from monitor.core.rules.context import RuleContext
from monitor.core.rules.spec import Rule
from monitor.core.sessions import Sessions


class Evaluated(NamedTuple):
    """One rule's firings over one frame (or piece), what it tracked, and the frame's last ts."""

    rule: Rule
    fired: pl.DataFrame
    progress: list[pl.DataFrame] | None  # (`progress.measured`)
    baseline: list[pl.DataFrame] | None
    latest: dt.datetime


def evaluate_rules(
    rules: list[Rule],
    base: pl.DataFrame,
    timeframe: str,
    sessions: Sessions,
    ctx: RuleContext,
    after: dt.datetime | None,
    *,
    piece_rows: int,
    track_progress: bool,
    baseline: bool,
    threads: int,
    active: pl.Series | None = None,
) -> list[Evaluated]:
    """The firings of each of `rules` over `base` (the closed bars of `timeframe`, sorted by
    symbol and time, before `derived`) in periods after `after`, each rule's in piece order.
    `piece_rows`: about how many bars a piece holds; `track_progress` and `baseline`: whether
    `firing.firings` collects progress and `firing.every_period` rows; `threads`: at most how
    many tasks run at once. `active`: the only symbols with bars after `after`, when known:
    the rules whose firings on a symbol depend on its bars alone run over theirs only (a
    minute of a backlog: see `Engine._add_minutes`)."""
    # A universe's history is evaluated a piece of symbols at a time by the rules whose
    # firings on a symbol depend on its bars alone: the derived columns and every rule's
    # intermediates are then held for a piece, not for 8 million bars (a third fewer fresh
    # pages; with pieces shared out, both cores stay busy to the end). Every other rule
    # sees the whole frame, as does every rule of a frame too small to cut.
    mine = base if active is None else base.filter(pl.col("symbol").is_in(active.implode()))
    cut = pieces(mine, piece_rows)
    apart = len(cut) > 1 or (active is not None and mine.height > 0)
    local = [r for r in rules if firing.per_symbol(r)] if apart else []
    whole = [r for r in rules if r not in local]
    # A task: rules, and the bars they run over (a piece still to derive, or all derived).
    tasks: list[tuple[list[Rule], pl.DataFrame, bool]] = []
    if local:
        tasks += [(local, piece, True) for piece in cut]
    if whole:
        everything = derived(base, timeframe, sessions)
        tasks += [([rule], everything, False) for rule in whole]

    def evaluate(task: tuple[list[Rule], pl.DataFrame, bool]) -> list[Evaluated]:
        mine, bars, piece = task
        if piece:
            bars = derived(bars, timeframe, sessions)
        done = []
        for rule in mine:
            tracked: list[pl.DataFrame] | None = [] if track_progress else None
            base: list[pl.DataFrame] | None = [] if baseline else None
            fired = firing.firings(bars, rule, ctx, after, tracked, base)
            latest: dt.datetime = bars.get_column("ts").max()  # type: ignore[assignment]
            done.append(Evaluated(rule, fired, tracked, base, latest))
        return done

    if threads > 1 and len(tasks) > 1:
        # Tasks are independent and polars releases the GIL: two at a time keep both cores
        # busy through each one's single-threaded stretches (replay: about 10% sooner on
        # the universe). Off in the daemon, whose event loop needs the GIL between steps.
        workers = min(threads, len(tasks))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rules") as pool:
            return [e for done in pool.map(evaluate, tasks) for e in done]
    return [e for task in tasks for e in evaluate(task)]


def pieces(bars: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
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


def joined(fired: list[pl.DataFrame]) -> pl.DataFrame:
    """One rule's firings from its pieces, in time order (within an instant, by piece)."""
    some = [frame for frame in fired if frame.height]
    if len(some) < 2:
        return some[0] if some else fired[0]
    return pl.concat(some, how="vertical_relaxed").sort("ts", maintain_order=True)
